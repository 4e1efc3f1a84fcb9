"""Fixtures for licensing tests: a settable clock, an install code and a store in a tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.licensing.store import LicenceStore
from tests.licensing.issuing import fake_install_code, store_trusting_test_key
from tests.licensing.licence_helpers import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def code() -> str:
    return fake_install_code("gateway-a")


@pytest.fixture
def store(tmp_path: Path, code: str, clock: Clock) -> LicenceStore:
    return store_trusting_test_key(tmp_path / "licences", code, clock)
