"""What this build of edged is, and which licences cover installing a given release.

Release kinds follow the vendor's release notes: *feature* releases need maintenance (or a
one-time upgrade licence for exactly that version); *update* (bug-fix) and *platform*
releases need no licence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

from edged import __version__
from edged.licensing.licence import Licence, iso_time

ReleaseKind = Literal["feature", "update", "platform"]
RELEASE_KINDS: tuple[ReleaseKind, ...] = ("feature", "update", "platform")

RELEASE_VERSION = __version__
RELEASE_DATE = date(2026, 11, 23)
RELEASE_KIND: ReleaseKind = "feature"


@dataclass(frozen=True)
class Coverage:
    """Whether a release may be installed, and why."""

    covered: bool
    reason: str


def release_kind(text: str) -> ReleaseKind:
    """A release kind from text; ValueError for anything else."""
    if text not in RELEASE_KINDS:
        raise ValueError(f"release kind must be one of {', '.join(RELEASE_KINDS)}, got {text!r}")
    return text


def normalise_version(version: str) -> tuple[int, ...]:
    """A dotted version as integers without trailing zeros ("1.2.0" == "1.2")."""
    try:
        parts = [int(p) for p in version.strip().lstrip("v").split(".")]
    except ValueError:
        raise ValueError(f"not a version: {version!r} (expected e.g. 1.2.0)") from None
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def covers(
    version: str, released: date, kind: ReleaseKind, licences: Iterable[Licence]
) -> Coverage:
    """Whether verified ``licences`` cover installing release ``version`` of ``kind``."""
    if kind != "feature":
        return Coverage(True, f"{kind} release {version}: no maintenance licence needed")
    wanted = normalise_version(version)
    published = datetime(released.year, released.month, released.day, tzinfo=UTC).timestamp()
    maintenance_ends: list[float] = []
    for lic in licences:
        if lic.kind == "upgrade" and lic.version and normalise_version(lic.version) == wanted:
            return Coverage(True, f"feature release {version}: covered by upgrade licence {lic.id}")
        if lic.kind == "maintenance" and lic.valid_until is not None:
            if published < lic.valid_until:
                return Coverage(
                    True,
                    f"feature release {version} ({released.isoformat()}): covered by maintenance "
                    f"licence {lic.id} until {iso_time(lic.valid_until)}",
                )
            maintenance_ends.append(lic.valid_until)
    if maintenance_ends:
        return Coverage(
            False,
            f"feature release {version} was published {released.isoformat()}, after maintenance "
            f"ended {iso_time(max(maintenance_ends))}; renew maintenance or buy an upgrade "
            f"licence for {version}",
        )
    return Coverage(
        False,
        f"feature release {version} needs a maintenance licence or an upgrade licence "
        f"for {version}; none is installed",
    )
