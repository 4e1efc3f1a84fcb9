"""The vendor's tool to create signing keys, issue licence files and check release receipts.

It runs on the vendor's machine from a source checkout, not on gateways (a gateway only holds
public keys, and this module is not part of the ``edged`` package)::

    .venv/bin/python -m tools.licensing issue --key vendor.pem --kind capacity ...
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.errors import LicenceError
from edged.licensing import gateway_key, receipt
from edged.licensing import install_code as codes
from edged.licensing.keys import PRODUCTION_PUBLIC_KEYS, TEST_PUBLIC_KEYS
from edged.licensing.licence import (
    KINDS,
    TRIAL_CAPACITY,
    TRIAL_DAYS,
    Licence,
    LicenceKind,
    parse_time,
    sign,
)

DAY = 86400.0
PROG = "python -m tools.licensing"


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise LicenceError(f"cannot read private key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LicenceError(f"{path} is not an Ed25519 private key")
    return key


def key_id_of(key: Ed25519PrivateKey) -> str | None:
    """The built-in key id whose public key matches ``key``, if any."""
    mine = base64.b64encode(gateway_key.raw_public(key.public_key())).decode()
    for kid, pub in {**PRODUCTION_PUBLIC_KEYS, **TEST_PUBLIC_KEYS}.items():
        if pub == mine:
            return kid
    return None


def add_years(ts: float, years: int) -> float:
    """The same calendar moment ``years`` later (29 February becomes 28 February)."""
    dt = datetime.fromtimestamp(ts, UTC)
    try:
        return dt.replace(year=dt.year + years).timestamp()
    except ValueError:
        return dt.replace(year=dt.year + years, day=28).timestamp()


def new_licence_id() -> str:
    """A fresh random licence id."""
    return "L-" + secrets.token_hex(6).upper()


def build(
    key: Ed25519PrivateKey,
    *,
    kind: LicenceKind,
    install_code: str,
    customer: str,
    capacity: int | None = None,
    issued: float | None = None,
    days: float | None = None,
    until: float | None = None,
    years: int | None = None,
    version: str | None = None,
    licence_id: str | None = None,
    key_id: str | None = None,
) -> bytes:
    """A signed licence file; fields left out get the defaults of their kind."""
    kid = key_id or key_id_of(key)
    if kid is None:
        raise LicenceError("the key is not a built-in vendor key; pass --key-id")
    start = time.time() if issued is None else issued
    valid_until = until
    if days is not None:
        valid_until = start + days * DAY
    if years is not None:
        valid_until = add_years(start, years)
    if kind == "trial":
        capacity = TRIAL_CAPACITY if capacity is None else capacity
        valid_until = start + TRIAL_DAYS * DAY if valid_until is None else valid_until
    if kind in ("maintenance", "upgrade"):
        capacity = 0 if capacity is None else capacity
    if capacity is None:
        raise LicenceError(f"a {kind} licence needs --capacity")
    lic = Licence(
        id=licence_id or new_licence_id(),
        kind=kind,
        capacity=capacity,
        install_code=codes.normalise(install_code),
        issued=float(int(start)),
        valid_until=float(int(valid_until)) if valid_until is not None else None,
        term_years=years if kind == "maintenance" else None,
        version=version,
        customer=customer,
        key_id=kid,
    )
    return sign(lic, key)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Create vendor signing keys and issue licence files."
    )
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("issue", help="issue a signed licence file")
    i.add_argument("--key", type=Path, required=True, help="vendor private key (PEM)")
    i.add_argument("--key-id", help="key id (default: the built-in key matching --key)")
    i.add_argument("--kind", choices=KINDS, required=True)
    i.add_argument("--capacity", type=int, help="devices, gateway included")
    i.add_argument("--install-code", required=True)
    i.add_argument("--customer", required=True)
    i.add_argument("--id", dest="licence_id", help="licence id (default: random)")
    i.add_argument("--issued", help="issue time, ISO 8601 (default: now)")
    span = i.add_mutually_exclusive_group()
    span.add_argument("--days", type=float, help="valid for this many days")
    span.add_argument("--until", help="valid until this date/time (ISO 8601, UTC)")
    span.add_argument("--years", type=int, choices=(1, 3), help="maintenance term")
    i.add_argument("--version", help="the feature version an upgrade licence covers")
    i.add_argument("--out", type=Path, required=True, help="where to write the licence file")
    k = sub.add_parser("keygen", help="create a vendor signing key")
    k.add_argument(
        "--out", type=Path, default=Path("vendor-key.pem"), help="private key file to create"
    )
    r = sub.add_parser("verify-receipt", help="check a release receipt from a gateway")
    r.add_argument("file", type=Path)
    return p


def run(argv: list[str]) -> int:
    """Run the tool with ``argv``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "keygen":
            return _keygen(args.out)
        if args.command == "verify-receipt":
            rec = receipt.verify(args.file.read_bytes())
            print(
                f"receipt valid: licence {rec.licence_id} released by {rec.install_code} "
                f"on {rec.released}, gateway key {rec.gateway_fingerprint}"
            )
            return 0
        data = build(
            load_private_key(args.key),
            kind=args.kind,
            install_code=args.install_code,
            customer=args.customer,
            capacity=args.capacity,
            issued=parse_time(args.issued) if args.issued else None,
            days=args.days,
            until=parse_time(args.until) if args.until else None,
            years=args.years,
            version=args.version,
            licence_id=args.licence_id,
            key_id=args.key_id,
        )
        args.out.write_bytes(data)
        print(f"wrote {args.out}")
        return 0
    except (LicenceError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1


def _keygen(out: Path) -> int:
    if out.exists():
        print(f"{PROG}: {out} exists; refusing to overwrite a key", file=sys.stderr)
        return 1
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    gateway_key.write_atomic(out, pem, 0o600)
    pub = base64.b64encode(gateway_key.raw_public(key.public_key())).decode()
    print(f"wrote {out} (keep it secret)")
    print(f"public key (add to edged/licensing/keys.py): {pub}")
    return 0


def main() -> None:
    """Entry point of ``python -m tools.licensing``."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
