"""Run the ``edged`` CLI trusting the TEST key, from a source checkout only.

    .venv/bin/python -m tools.licensing.trusting run -c config/demo/edged.toml

The end-to-end tests and ``make demo`` start the daemon this way: the trust is handed to the
licence store in code (``edged.licensing.keys.trust_in_this_process``). This module is not
part of the ``edged`` package, so an installed gateway has no way to trust the TEST key:
no environment variable or configuration enables it.
"""

from __future__ import annotations

import sys

from edged.licensing.keys import trust_in_this_process, with_test_keys


def main(argv: list[str] | None = None) -> int:
    """``edged`` with the test key trusted in this process; returns the exit status."""
    trust_in_this_process(with_test_keys())
    from edged.cli import main as edged_main

    return edged_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
