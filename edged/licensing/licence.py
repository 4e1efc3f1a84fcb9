"""The licence file: a JSON payload signed by a vendor key (Ed25519).

File layout (UTF-8 JSON)::

    {"format": "edged-licence/1", "payload": {...}, "signature": "<base64 Ed25519>"}

The signature covers the canonical JSON of the payload (keys sorted, no spaces,
UTF-8). Parsing is strict: duplicate keys, unknown fields and wrong types are
refused, so two readers can never disagree about what a signed file says.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.errors import LicenceError
from edged.licensing.keys import KeyRing

FORMAT = "edged-licence/1"
LicenceKind = Literal["capacity", "trial", "maintenance", "upgrade"]
KINDS: tuple[LicenceKind, ...] = ("capacity", "trial", "maintenance", "upgrade")
TRIAL_CAPACITY = 5
TRIAL_DAYS = 30
# A trial lasts at most 30 days (the "1 month" of the rules); anything longer is not a trial.
TRIAL_MAX_SECONDS = TRIAL_DAYS * 86400
MAX_CAPACITY = 100_000

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int,
    "id": str,
    "kind": str,
    "capacity": int,
    "install_code": str,
    "issued": str,
    "valid_until": (str, type(None)),
    "term_years": (int, type(None)),
    "version": (str, type(None)),
    "customer": str,
    "key_id": str,
}


@dataclass(frozen=True)
class Licence:
    """One verified-or-not licence as its payload states it."""

    id: str
    kind: LicenceKind
    capacity: int
    install_code: str
    issued: float
    valid_until: float | None
    term_years: int | None
    version: str | None
    customer: str
    key_id: str

    def expired_at(self, now: float) -> bool:
        """True once the validity has ended (never for licences without an end)."""
        return self.valid_until is not None and now >= self.valid_until

    def payload(self) -> dict[str, Any]:
        """The signed payload for this licence."""
        return {
            "v": 1,
            "id": self.id,
            "kind": self.kind,
            "capacity": self.capacity,
            "install_code": self.install_code,
            "issued": iso_time(self.issued),
            "valid_until": iso_time(self.valid_until) if self.valid_until is not None else None,
            "term_years": self.term_years,
            "version": self.version,
            "customer": self.customer,
            "key_id": self.key_id,
        }


def iso_time(ts: float) -> str:
    """A UTC timestamp as used in licence files (seconds resolution, ``Z`` suffix)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> float:
    """An ISO 8601 time (or date, meaning its 00:00 UTC) as epoch seconds; naive means UTC."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise LicenceError(f"not a date or time: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def canonical(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes a signature covers."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sign(licence: Licence, private_key: Ed25519PrivateKey) -> bytes:
    """A complete licence file for ``licence``, signed with ``private_key``."""
    payload = licence.payload()
    check_rules(licence)
    signature = private_key.sign(canonical(payload))
    doc = {
        "format": FORMAT,
        "payload": payload,
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise LicenceError(f"not a licence file: key {key!r} appears twice")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise LicenceError(f"not a licence file: {name} is not allowed")


@dataclass(frozen=True)
class SignedLicence:
    """A parsed licence file: what it says, and the bytes and signature to check."""

    licence: Licence
    signed_bytes: bytes
    signature: bytes


def parse(data: bytes) -> SignedLicence:
    """Parse a licence file strictly (no signature check yet)."""
    try:
        doc = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_float=lambda s: _reject_constant(f"number {s}"),
        )
    except UnicodeDecodeError:
        raise LicenceError("not a licence file: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise LicenceError(
            f"not a licence file: invalid JSON ({exc.msg}, line {exc.lineno})"
        ) from None
    if not isinstance(doc, dict) or set(doc) != {"format", "payload", "signature"}:
        raise LicenceError("not a licence file: expected format, payload and signature")
    if doc["format"] != FORMAT:
        raise LicenceError(f"unsupported licence format {doc['format']!r} (this edged: {FORMAT})")
    payload, sig = doc["payload"], doc["signature"]
    if not isinstance(payload, dict) or not isinstance(sig, str):
        raise LicenceError("not a licence file: payload must be an object, signature a string")
    try:
        signature = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        raise LicenceError("not a licence file: signature is not base64") from None
    return SignedLicence(_from_payload(payload), canonical(payload), signature)


def _from_payload(p: dict[str, Any]) -> Licence:
    unknown = sorted(set(p) - set(_FIELDS))
    missing = sorted(set(_FIELDS) - set(p))
    if unknown or missing:
        raise LicenceError(f"not a licence file: unknown fields {unknown}, missing {missing}")
    for key, types in _FIELDS.items():
        value = p[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise LicenceError(f"not a licence file: field {key!r} has the wrong type")
    if p["v"] != 1:
        raise LicenceError(f"unsupported licence payload version {p['v']}")
    if p["kind"] not in KINDS:
        raise LicenceError(f"unknown licence kind {p['kind']!r}")
    lic = Licence(
        id=p["id"],
        kind=cast(LicenceKind, p["kind"]),
        capacity=p["capacity"],
        install_code=p["install_code"],
        issued=parse_time(p["issued"]),
        valid_until=parse_time(p["valid_until"]) if p["valid_until"] is not None else None,
        term_years=p["term_years"],
        version=p["version"],
        customer=p["customer"],
        key_id=p["key_id"],
    )
    check_rules(lic)
    return lic


def check_rules(lic: Licence) -> None:
    """Refuse licences whose fields contradict their kind (even if correctly signed)."""
    if not lic.id or len(lic.id) > 64 or not all(c.isalnum() or c in "-_." for c in lic.id):
        raise LicenceError(f"invalid licence id {lic.id!r}")
    if lic.valid_until is not None and lic.valid_until <= lic.issued:
        raise LicenceError(f"licence {lic.id} ends before it was issued")
    if lic.kind in ("capacity", "trial"):
        if not 1 <= lic.capacity <= MAX_CAPACITY:
            raise LicenceError(f"licence {lic.id}: capacity {lic.capacity} out of range")
        if lic.version is not None or lic.term_years is not None:
            raise LicenceError(f"licence {lic.id}: a {lic.kind} licence has no version or term")
    else:
        if lic.capacity != 0:
            raise LicenceError(f"licence {lic.id}: a {lic.kind} licence grants no capacity")
    if lic.kind == "trial":
        if lic.capacity > TRIAL_CAPACITY:
            raise LicenceError(f"licence {lic.id}: a trial grants at most {TRIAL_CAPACITY}")
        if lic.valid_until is None or lic.valid_until - lic.issued > TRIAL_MAX_SECONDS:
            raise LicenceError(
                f"licence {lic.id}: a trial must end within {TRIAL_DAYS} days (one month)"
            )
    if lic.kind == "maintenance":
        if lic.valid_until is None:
            raise LicenceError(f"licence {lic.id}: a maintenance licence needs an end date")
        if lic.term_years not in (None, 1, 3) or lic.version is not None:
            raise LicenceError(f"licence {lic.id}: maintenance terms are 1 or 3 years")
    if lic.kind == "upgrade" and (not lic.version or lic.term_years is not None):
        raise LicenceError(f"licence {lic.id}: an upgrade licence names exactly one version")


def verify(data: bytes, keys: KeyRing, install_code: str) -> Licence:
    """The licence in ``data`` if its signature is trusted and it is bound to this gateway."""
    signed = parse(data)
    lic = signed.licence
    key = keys.key(lic.key_id)
    if key is None:
        if keys.is_test(lic.key_id):
            raise LicenceError(
                f"licence {lic.id} is signed with the test key {lic.key_id!r}, "
                "which this gateway does not trust"
            )
        raise LicenceError(f"licence {lic.id} is signed with an unknown key {lic.key_id!r}")
    try:
        key.verify(signed.signature, signed.signed_bytes)
    except InvalidSignature:
        raise LicenceError(
            f"licence {lic.id}: signature does not match (the file was altered or was not "
            f"signed by vendor key {lic.key_id!r})"
        ) from None
    if lic.install_code != install_code:
        raise LicenceError(
            f"licence {lic.id} is bound to install code {lic.install_code}, "
            f"this gateway's install code is {install_code}"
        )
    return lic
