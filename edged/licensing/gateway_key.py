"""The gateway's own Ed25519 key: signs release receipts and the licence state file.

It is generated once into the licence directory (private key 0600, public key beside it)
and, like the licences, survives a reset of edged's data and config.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from edged.errors import LicenceError

PRIVATE_FILE = "gateway-key.pem"
PUBLIC_FILE = "gateway-key.pub"


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write a file so that a crash leaves either the old or the new content."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey) -> str:
    """A short human-comparable fingerprint of a public key."""
    digest = hashlib.sha256(raw_public(key)).hexdigest()[:16]
    return ":".join(digest[i : i + 4] for i in range(0, 16, 4))


def public_key(directory: Path) -> Ed25519PublicKey | None:
    """The gateway's public key, or None before it was generated."""
    try:
        raw = base64.b64decode((directory / PUBLIC_FILE).read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LicenceError(f"cannot read {directory / PUBLIC_FILE}: {exc}") from None
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise LicenceError(f"{directory / PUBLIC_FILE} is not an Ed25519 public key") from None


def private_key(directory: Path) -> Ed25519PrivateKey:
    """The gateway's private key, generated on first use."""
    path = directory / PRIVATE_FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        new = Ed25519PrivateKey.generate()
        pem = new.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(path, pem, 0o600)
        pub = base64.b64encode(raw_public(new.public_key())) + b"\n"
        write_atomic(directory / PUBLIC_FILE, pub, 0o644)
        return new
    except (OSError, ValueError) as exc:
        raise LicenceError(f"cannot read the gateway key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise LicenceError(f"{path} is not an Ed25519 private key")
    return key


def verify(key: Ed25519PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` was made by ``key``."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
