"""Import setup for the Modbus tests.

``tests/`` is on sys.path (its conftest has no package), so ``tests/drivers`` would
shadow the real ``drivers`` package as a namespace package; the repository root goes
first. The helpers module of this directory is importable as ``helpers``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
sys.path.insert(0, str(_HERE.parents[2]))
