"""The installer's maintenance gate: may this checkout's release be installed here?

    python -m tools.licensing.gate --dir /var/lib/edged-licences --installed FILE [--kind K]
    python -m tools.licensing.gate --release          # "VERSION DATE KIND" of this checkout
    python -m tools.licensing.gate --dir D --installed FILE --this "VERSION DATE KIND"

``make install`` runs it before anything is installed. A *feature* release that replaces
another version needs a maintenance licence whose term covers the release date, or an upgrade
licence for exactly this version; *update* and *platform* releases, a first installation and a
reinstall of the same version need none. ``--kind`` overrides the kind the release declares
(``make install RELEASE_KIND=update`` for a release the vendor's notes call an update).

The Debian package's ``preinst`` embeds this file and runs it, before anything is unpacked,
with the interpreter of the *installed* version and ``--this`` naming the release being
installed (the installed code's own constants describe the old release).

It reads the licence directory without writing to it (it runs as root; the directory belongs
to the service user) and trusts only the production key.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
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


def parse_release(line: str) -> tuple[str, date, str]:
    """``VERSION DATE KIND`` as written by ``--release``; ValueError when malformed."""
    parts = line.split()
    if len(parts) != 3:
        raise ValueError(f"expected 'VERSION DATE KIND', got {line!r}")
    normalise_version(parts[0])
    return parts[0], date.fromisoformat(parts[1]), release_kind(parts[2])


def check(
    directory: Path,
    installed: Path,
    kind_override: str | None,
    this: tuple[str, date, str] | None = None,
) -> tuple[bool, str]:
    """(allowed, reason) for installing a release over what ``installed`` records.

    ``this`` is the release being installed; default: the one this code belongs to.
    """
    version, released, declared = this or (RELEASE_VERSION, RELEASE_DATE, RELEASE_KIND)
    kind = release_kind(kind_override or declared)
    what = f"edged {version} ({kind} release, {released.isoformat()})"
    if kind_override and kind != declared:
        what += f" [declared {declared}, overridden by RELEASE_KIND={kind}]"
    try:
        previous = installed.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return True, f"{what}: first installation, no maintenance licence needed"
    if previous and normalise_version(previous[0]) == normalise_version(version):
        return True, f"{what}: reinstalling the installed version"
    if kind != "feature":
        return True, f"{what}: {kind} release, no maintenance licence needed"
    if not directory.is_dir():
        return False, (
            f"{what} is not covered: no licence directory {directory} (a feature release needs "
            "a maintenance licence or an upgrade licence for this version)"
        )
    store = LicenceStore(directory, keys=production_keys(), read_only=True)
    result = covers(version, released, kind, store.evaluate().genuine())
    return result.covered, f"{what}: {result.reason}"


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 when the installation may go ahead, 1 when it is refused."""
    p = argparse.ArgumentParser(prog="python -m tools.licensing.gate", description=__doc__)
    p.add_argument("--release", action="store_true", help="print VERSION DATE KIND and exit")
    p.add_argument("--dir", type=Path, default=Path("/var/lib/edged-licences"))
    p.add_argument("--installed", type=Path, help="the installed tree's release file")
    p.add_argument("--kind", choices=RELEASE_KINDS, help="override the declared release kind")
    p.add_argument("--this", metavar="'VERSION DATE KIND'", help="the release being installed")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.release:
        sys.stdout.write(release_line() + "\n")
        return 0
    if args.installed is None:
        p.error("--installed is required")
    try:
        this = parse_release(args.this) if args.this else None
    except ValueError as exc:
        p.error(f"--this: {exc}")
    allowed, reason = check(args.dir, args.installed, args.kind, this)
    if allowed:
        sys.stdout.write(f"{PROG}: {reason}\n")
        return 0
    sys.stderr.write(f"{PROG}: REFUSED: {reason}\n")
    if this is None:
        sys.stderr.write(
            f"{PROG}: activate a maintenance or upgrade licence, or, for a release the release "
            "notes call an update or platform release: make install RELEASE_KIND=update "
            "(or RELEASE_KIND=platform)\n"
        )
    else:
        sys.stderr.write(
            f"{PROG}: the installed version stays; activate a maintenance or upgrade licence "
            f"(edged license activate FILE), then install the package again\n"
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
