"""Licences signed with the TEST vendor key, for tests and ``make demo`` in a source checkout.

The TEST key's private half is committed with the tests (``tests/licensing/keys/``) and is not
part of the ``edged`` package; only code hands the trust in the test key to a licence store
(``keys=with_test_keys()``, or the launcher ``python -m tools.licensing.trusting``), never an
environment variable (see ``edged/licensing/keys.py``).
"""

from __future__ import annotations

from pathlib import Path

from edged.licensing.keys import TEST_KEY_ID, with_test_keys
from edged.licensing.licence import Licence
from edged.licensing.store import LicenceStore
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


def activate_demo_trial(directory: Path, key_file: Path = TEST_KEY) -> Licence | None:
    """Issue and activate the demo trial in ``directory``; None when a trial is installed.

    The store here trusts the test key explicitly; the daemon then needs the launcher
    (``python -m tools.licensing.trusting run …``) to count it.
    """
    store = LicenceStore(directory, keys=with_test_keys())
    if any(e.licence and e.licence.kind == "trial" for e in store.evaluate().entries):
        return None
    return store.activate(issue_demo_trial(store.install_code, key_file))
