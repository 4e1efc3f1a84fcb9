"""Which releases maintenance and upgrade licences cover."""

from __future__ import annotations

from datetime import date

import pytest

from edged.licensing.licence import Licence, LicenceKind
from edged.licensing.release import RELEASE_KIND, RELEASE_VERSION, covers
from tests.licensing.licence_helpers import DAY, T0

END = T0 + 365 * DAY  # 2027-11-23T12:00Z


def lic(kind: LicenceKind, until: float | None = None, version: str | None = None) -> Licence:
    return Licence(f"L-{kind}", kind, 0, "CODE", T0, until, None, version, "C", "k")


MAINT = lic("maintenance", END)


def test_maintenance_covers_a_feature_release_published_before_its_end() -> None:
    result = covers("0.2.0", date(2027, 11, 1), "feature", [MAINT])
    assert result.covered and "L-maintenance" in result.reason


def test_maintenance_does_not_cover_a_feature_release_published_after_its_end() -> None:
    result = covers("0.3.0", date(2027, 12, 1), "feature", [MAINT])
    assert not result.covered and "after maintenance ended" in result.reason


@pytest.mark.parametrize("kind", ["update", "platform"])
def test_update_and_platform_releases_need_no_licence(kind: str) -> None:
    assert covers("0.1.1", date(2030, 1, 1), kind, []).covered  # type: ignore[arg-type]


def test_feature_release_without_any_licence_is_not_covered() -> None:
    result = covers("0.2.0", date(2026, 12, 1), "feature", [])
    assert not result.covered and "none is installed" in result.reason


def test_upgrade_licence_covers_its_one_version_only() -> None:
    upgrade = lic("upgrade", version="0.2")
    assert covers("0.2.0", date(2030, 1, 1), "feature", [upgrade]).covered
    assert not covers("0.3.0", date(2030, 1, 1), "feature", [upgrade]).covered
    assert not covers("0.2.1", date(2030, 1, 1), "feature", [upgrade]).covered


def test_this_build_declares_what_it_is() -> None:
    assert RELEASE_VERSION == "0.1.0"
    assert RELEASE_KIND in ("feature", "update", "platform")
