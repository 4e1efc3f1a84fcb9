"""Release receipts: the gateway's signed statement that it dropped a licence.

The vendor checks the signature against the gateway key fingerprint shown by
``edged license install-code`` before issuing the licence to another gateway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edged.errors import LicenceError
from edged.licensing import gateway_key
from edged.licensing.licence import Licence, canonical, iso_time

FORMAT = "edged-release-receipt/1"


@dataclass(frozen=True)
class Receipt:
    """A verified release receipt."""

    licence_id: str
    install_code: str
    released: str
    gateway_fingerprint: str
    body: dict[str, Any]


def make(licence: Licence, file_bytes: bytes, released: float, key: Ed25519PrivateKey) -> bytes:
    """A signed receipt saying this gateway released ``licence`` at ``released``."""
    body = {
        "licence_id": licence.id,
        "kind": licence.kind,
        "capacity": licence.capacity,
        "customer": licence.customer,
        "install_code": licence.install_code,
        "released": iso_time(released),
        "licence_sha256": hashlib.sha256(file_bytes).hexdigest(),
        "gateway_key": base64.b64encode(gateway_key.raw_public(key.public_key())).decode(),
    }
    signature = key.sign(canonical(body))
    doc = {"format": FORMAT, "receipt": body, "signature": base64.b64encode(signature).decode()}
    return (json.dumps(doc, indent=2) + "\n").encode()


def verify(data: bytes) -> Receipt:
    """Check a receipt's signature against the gateway key it names."""
    try:
        doc = json.loads(data)
        body = doc["receipt"]
        if doc["format"] != FORMAT or not isinstance(body, dict):
            raise ValueError("wrong format")
        signature = base64.b64decode(doc["signature"], validate=True)
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(body["gateway_key"]))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise LicenceError(f"not a release receipt: {exc}") from None
    if not gateway_key.verify(key, signature, canonical(body)):
        raise LicenceError("release receipt signature does not match")
    return Receipt(
        str(body["licence_id"]),
        str(body["install_code"]),
        str(body["released"]),
        gateway_key.fingerprint(key),
        body,
    )
