"""Import setup for the M-Bus tests.

``tests/`` is on sys.path (its conftest has no package), so ``tests/drivers`` would
shadow the real ``drivers`` package as a namespace package; the repository root goes first.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[3])
if sys.path[:1] != [_ROOT]:
    sys.path.insert(0, _ROOT)
