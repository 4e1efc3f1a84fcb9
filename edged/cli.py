"""The ``edged`` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edged`` command."""
    del argv
    return 0


if __name__ == "__main__":
    sys.exit(main())
