"""Passwords stored as salted scrypt hashes (OCPP charger passwords, the web console)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading

_N, _R, _P, _DKLEN = 2**14, 8, 1, 32

# scrypt costs ~50 ms of CPU by design; a fleet reconnecting after an outage would pay
# that per charger. Remember the last password that matched each stored hash (as a
# keyed digest, never in clear) so a reconnect costs one HMAC.
_verified: dict[str, bytes] = {}
_lock = threading.Lock()
_CACHE_KEY = os.urandom(32)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def hash_password(password: str) -> str:
    """A salted scrypt hash of the password: ``scrypt$N$r$p$salt$hash`` (base64 fields)."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def is_password_hash(value: str) -> bool:
    """True when the value has the shape ``hash_password`` produces."""
    try:
        _parse(value)
    except ValueError:
        return False
    return True


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not an scrypt$N$r$p$salt$hash string")
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if n < 2 or n & (n - 1) or n > 2**20 or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError("scrypt parameters out of range")
    salt = base64.b64decode(parts[4], validate=True)
    digest = base64.b64decode(parts[5], validate=True)
    if not salt or len(digest) < 16:
        raise ValueError("salt or hash too short")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    """True when the password matches the stored hash (blocking: call it off the event loop)."""
    try:
        n, r, p, salt, digest = _parse(stored)
    except ValueError:
        return False
    tag = hmac.new(_CACHE_KEY, stored.encode() + b"\0" + password.encode(), "sha256").digest()
    with _lock:
        known = _verified.get(stored)
    if known is not None and hmac.compare_digest(known, tag):
        return True
    candidate = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=2**27
    )
    if not hmac.compare_digest(candidate, digest):
        return False
    with _lock:
        _verified[stored] = tag
    return True
