"""Licences for end-to-end tests: signed with the TEST key, bound to this machine.

A daemon started as a child process trusts them when it runs through the checkout's launcher
(``tests.daemon.edged`` / ``python -m tools.licensing.trusting``); no environment variable
makes edged trust the test key.
"""

from __future__ import annotations

import time
from pathlib import Path

from edged.licensing.licence import Licence
from tests.licensing.issuing import install_test_licence
from tests.licensing.licence_helpers import TEST_KEY

DAY = 86400.0


def grant_capacity(directory: Path, capacity: int, licence_id: str | None = None) -> Licence:
    """Activate a permanent capacity licence of ``capacity`` devices (gateway included)."""
    return install_test_licence(
        directory, TEST_KEY, "capacity", capacity=capacity, licence_id=licence_id
    )


def grant_trial(directory: Path, expires_in: float) -> Licence:
    """Activate the trial (5 devices), ending ``expires_in`` seconds from now."""
    # Issued in the past so that the (at most one month long) period ends when asked.
    now = time.time()
    return install_test_licence(
        directory, TEST_KEY, "trial", issued=now + expires_in - 30 * DAY, days=30
    )
