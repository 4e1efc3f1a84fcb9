"""Licences signed with the TEST vendor key, for tests and ``make demo`` in a source checkout.

The TEST key's private half is committed with the tests (``tests/licensing/keys/``) and is not
part of the ``edged`` package; a gateway trusts licences signed with it only when it runs from
a source checkout with ``EDGED_TRUST_TEST_KEYS=1`` (see ``edged/licensing/keys.py``).
"""

from __future__ import annotations

from pathlib import Path

from edged.licensing.keys import TEST_KEY_ID
from tools.licensing.issue import build, load_private_key

# The private half of the test/demo key (key id ``edged-test-2026``).
TEST_KEY = Path(__file__).resolve().parents[2] / "tests/licensing/keys/TEST-ONLY-vendor-key.pem"


def issue_demo_trial(install_code: str, key_file: Path = TEST_KEY) -> bytes:
    """A trial licence (the trial's default capacity and term) for ``install_code``."""
    return build(
        load_private_key(key_file),
        kind="trial",
        install_code=install_code,
        customer="TEST-CUSTOMER",
        key_id=TEST_KEY_ID,
    )
