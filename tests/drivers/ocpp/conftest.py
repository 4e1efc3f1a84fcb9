"""Import setup for the OCPP tests.

``tests/`` is on sys.path, so ``tests/drivers`` would shadow the real ``drivers``
package as a namespace package: the repository root goes first. ``ocpp_helpers``
of this directory is importable by name.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parents[2]))
