"""The installer's maintenance gate: may this checkout's release be installed here?

    python -m tools.licensing.gate --dir /var/lib/edged-licences --installed FILE [--kind K]
    python -m tools.licensing.gate --release          # "VERSION DATE KIND" of this checkout

``make install`` runs it before anything is installed. A *feature* release that replaces
another version needs a maintenance licence whose term covers the release date, or an upgrade
licence for exactly this version; *update* and *platform* releases, a first installation and a
reinstall of the same version need none. ``--kind`` overrides the kind the release declares
(``make install RELEASE_KIND=update`` for a release the vendor's notes call an update).

It reads the licence directory without writing to it (it runs as root; the directory belongs
to the service user) and trusts only the production key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edged.licensing.keys import production_keys
from edged.licensing.release import (
    RELEASE_DATE,
    RELEASE_KIND,
    RELEASE_KINDS,
    RELEASE_VERSION,
    covers,
    normalise_version,
    release_kind,
)
from edged.licensing.store import LicenceStore

PROG = "install gate"


def release_line() -> str:
    """This release as written to the installed tree: ``VERSION DATE KIND``."""
    return f"{RELEASE_VERSION} {RELEASE_DATE.isoformat()} {RELEASE_KIND}"


def check(directory: Path, installed: Path, kind_override: str | None) -> tuple[bool, str]:
    """(allowed, reason) for installing this release over what ``installed`` records."""
    kind = release_kind(kind_override) if kind_override else RELEASE_KIND
    what = f"edged {RELEASE_VERSION} ({kind} release, {RELEASE_DATE.isoformat()})"
    if kind_override and kind != RELEASE_KIND:
        what += f" [declared {RELEASE_KIND}, overridden by RELEASE_KIND={kind}]"
    try:
        previous = installed.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return True, f"{what}: first installation, no maintenance licence needed"
    if previous and normalise_version(previous[0]) == normalise_version(RELEASE_VERSION):
        return True, f"{what}: reinstalling the installed version"
    if kind != "feature":
        return True, f"{what}: {kind} release, no maintenance licence needed"
    if not directory.is_dir():
        return False, (
            f"{what} is not covered: no licence directory {directory} (a feature release needs "
            "a maintenance licence or an upgrade licence for this version)"
        )
    store = LicenceStore(directory, keys=production_keys(), read_only=True)
    result = covers(RELEASE_VERSION, RELEASE_DATE, kind, store.evaluate().genuine())
    return result.covered, f"{what}: {result.reason}"


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 when the installation may go ahead, 1 when it is refused."""
    p = argparse.ArgumentParser(prog="python -m tools.licensing.gate", description=__doc__)
    p.add_argument("--release", action="store_true", help="print VERSION DATE KIND and exit")
    p.add_argument("--dir", type=Path, default=Path("/var/lib/edged-licences"))
    p.add_argument("--installed", type=Path, help="the installed tree's release file")
    p.add_argument("--kind", choices=RELEASE_KINDS, help="override the declared release kind")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.release:
        sys.stdout.write(release_line() + "\n")
        return 0
    if args.installed is None:
        p.error("--installed is required")
    allowed, reason = check(args.dir, args.installed, args.kind)
    if allowed:
        sys.stdout.write(f"{PROG}: {reason}\n")
        return 0
    sys.stderr.write(
        f"{PROG}: REFUSED: {reason}\n"
        f"{PROG}: activate a maintenance or upgrade licence, or, for a release the release "
        "notes call an update or platform release: make install RELEASE_KIND=update "
        "(or RELEASE_KIND=platform)\n"
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
