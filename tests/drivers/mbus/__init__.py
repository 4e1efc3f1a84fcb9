"""M-Bus driver tests; ``CORPUS`` is the libmbus conformance corpus committed beside them."""

from pathlib import Path

# libmbus regression frames (rSCADA / Raditex, BSD-3-Clause; see corpus/LICENSE and README.md).
CORPUS = Path(__file__).resolve().parent / "corpus"
