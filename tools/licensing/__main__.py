"""``python -m tools.licensing issue | keygen | verify-receipt`` from a source checkout."""

from tools.licensing.issue import main

main()
