"""Helpers for tests (and benchmarks) that need licences signed with the test key.

The test key's private half lives with the tests (``tests/licensing/keys/``; its path is
``tests.licensing.licence_helpers.TEST_KEY``); callers pass its path. Stores built here trust
the test key explicitly in code; a daemon started as a separate process runs through the
checkout's launcher ``python -m tools.licensing.trusting`` (see ``tests.daemon.edged``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from edged.licensing import install_code as codes
from edged.licensing.keys import TEST_KEY_ID, with_test_keys
from edged.licensing.licence import Licence, LicenceKind
from edged.licensing.store import LicenceStore
from tools.licensing.issue import build, load_private_key


def store_trusting_test_key(
    directory: Path,
    install_code: str | None = None,
    clock: Callable[[], float] = time.time,
    tolerance: float = 3600.0,
) -> LicenceStore:
    """A LicenceStore that trusts the production and the test key."""
    return LicenceStore(directory, install_code, clock, keys=with_test_keys(), tolerance=tolerance)


def fake_install_code(name: str) -> str:
    """A well-formed install code for an imaginary machine called ``name``."""
    return codes.from_identity(f"test-machine:{name}")


def issue_test_licence(
    key_file: Path,
    install_code: str,
    kind: LicenceKind = "capacity",
    *,
    capacity: int | None = None,
    issued: float | None = None,
    days: float | None = None,
    years: int | None = None,
    version: str | None = None,
    licence_id: str | None = None,
    customer: str = "TEST-CUSTOMER",
) -> bytes:
    """A licence file signed with the test key at ``key_file``."""
    return build(
        load_private_key(key_file),
        kind=kind,
        install_code=install_code,
        customer=customer,
        capacity=capacity,
        issued=issued,
        days=days,
        years=years,
        version=version,
        licence_id=licence_id,
        key_id=TEST_KEY_ID,
    )


def install_test_licence(
    directory: Path,
    key_file: Path,
    kind: LicenceKind = "capacity",
    *,
    install_code: str | None = None,
    clock: Callable[[], float] = time.time,
    capacity: int | None = None,
    issued: float | None = None,
    days: float | None = None,
    licence_id: str | None = None,
) -> Licence:
    """Issue a test-key licence for this (or the given) install code and activate it."""
    store = store_trusting_test_key(directory, install_code, clock)
    data = issue_test_licence(
        key_file,
        store.install_code,
        kind,
        capacity=capacity,
        issued=clock() if issued is None else issued,
        days=days,
        licence_id=licence_id,
    )
    return store.activate(data)
