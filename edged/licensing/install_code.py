"""The install code: a human-readable fingerprint of this machine that licences bind to.

It is derived from the machine's own identity (``/etc/machine-id``, else the DMI product
UUID, else an id generated once into the licence directory), never from edged's data or
config, so a reset of either keeps the same code and the same licences.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from edged.errors import LicenceError
from edged.licensing.gateway_key import write_atomic

log = logging.getLogger(__name__)

# Crockford base32: no I, L, O, U, so codes survive being read aloud or retyped.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MACHINE_ID_FILES: tuple[Path, ...] = (
    Path("/etc/machine-id"),
    Path("/var/lib/dbus/machine-id"),
    Path("/sys/class/dmi/id/product_uuid"),
)
GENERATED_ID_FILE = "machine.id"
_DOMAIN = b"edged install code v1\0"
_PATTERN = re.compile(r"^[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}$")


def _check_char(body: str) -> str:
    # Weighted sum so that a swapped pair or one wrong character is caught.
    total = sum((i + 1) * ALPHABET.index(c) for i, c in enumerate(body))
    return ALPHABET[total % 31]


def from_identity(identity: str) -> str:
    """The install code for a machine identity string (15 hashed characters + 1 check)."""
    digest = hashlib.sha256(_DOMAIN + identity.strip().lower().encode()).digest()
    value = int.from_bytes(digest[:10], "big")
    body = "".join(ALPHABET[(value >> (5 * i)) & 31] for i in range(15))
    code = body + _check_char(body)
    return "-".join(code[i : i + 4] for i in range(0, 16, 4))


def normalise(text: str) -> str:
    """An install code as typed by a human, checked and in canonical form."""
    raw = text.strip().upper().replace(" ", "").replace("-", "")
    raw = raw.translate(str.maketrans("OIL", "011"))
    code = "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))
    if not _PATTERN.match(code) or any(c not in ALPHABET for c in raw):
        raise LicenceError(f"not an install code: {text!r} (expected XXXX-XXXX-XXXX-XXXX)")
    if _check_char(raw[:15]) != raw[15]:
        raise LicenceError(f"install code {text!r} has a typo (check character does not match)")
    return code


def machine_identity(directory: Path, sources: Sequence[Path] = MACHINE_ID_FILES) -> str:
    """The machine's stable identity: the first readable id file, else one generated once."""
    for path in sources:
        try:
            value = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value and set(value) != {"0"}:
            return value
    generated = directory / GENERATED_ID_FILE
    try:
        value = generated.read_text(encoding="ascii").strip()
        if value:
            return value
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as exc:
        raise LicenceError(f"cannot read {generated}: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(16)
    write_atomic(generated, (value + "\n").encode("ascii"), 0o640)
    log.warning("no machine id found; generated one path=%s", generated)
    return value


def install_code(directory: Path, sources: Sequence[Path] = MACHINE_ID_FILES) -> str:
    """This machine's install code."""
    return from_identity(machine_identity(directory, sources))
