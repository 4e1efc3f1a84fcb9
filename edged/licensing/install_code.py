"""The install code: a human-readable fingerprint of this machine that licences bind to.

It is derived from the hardware's identity, never from the OS image, edged's data or its
config, so a reset or a re-image keeps the same code and the same licences. Sources, in
order (the first one that gives a usable value wins):

1. the DMI product UUID (``/sys/class/dmi/id/product_uuid``; x86 and most servers),
2. the DMI product serial (``/sys/class/dmi/id/product_serial``),
3. the device-tree serial number (ARM boards: ``/sys/firmware/devicetree/base/serial-number``),
4. the permanent MAC address of the first physical network interface,
5. only as the last resort, with a warning: ``/etc/machine-id`` (or
   ``/var/lib/dbus/machine-id``), which a re-image rewrites,
6. else an id generated once into the licence directory.

Replacing the board (the mainboard, or the NIC when it was the source) is a new gateway:
its licences move by release and re-issue, as for any transfer.
"""

from __future__ import annotations

import array
import fcntl
import hashlib
import logging
import re
import secrets
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edged.errors import LicenceError
from edged.licensing.gateway_key import write_atomic

log = logging.getLogger(__name__)

# Crockford base32: no I, L, O, U, so codes survive being read aloud or retyped.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
MACHINE_ID_FILES: tuple[Path, ...] = (
    Path("/etc/machine-id"),
    Path("/var/lib/dbus/machine-id"),
)
GENERATED_ID_FILE = "machine.id"
# Values firmware ships when nobody filled the field in: not an identity.
_PLACEHOLDERS = frozenset(
    {
        "",
        "none",
        "default string",
        "not specified",
        "not applicable",
        "to be filled by o.e.m.",
        "system serial number",
        "0123456789",
        "03000200-0400-0500-0006-000700080009",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    }
)
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


@dataclass(frozen=True)
class IdentitySource:
    """One place a machine identity can come from; ``read`` returns None when it has none.

    ``last_resort`` sources are used with a warning (they change with the OS image).
    """

    name: str
    read: Callable[[], str | None]
    last_resort: bool = False


def _usable(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().strip("\0").strip()
    low = value.lower()
    if low in _PLACEHOLDERS or set(low) <= {"0", "-", ":", "f"} or set(low) <= {"0"}:
        return None
    return value


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("ascii", "replace")
    except OSError:
        return None


def file_source(name: str, *paths: Path, last_resort: bool = False) -> IdentitySource:
    """The first usable value among ``paths``."""

    def read() -> str | None:
        for path in paths:
            value = _usable(_read_text(path))
            if value is not None:
                return value
        return None

    return IdentitySource(name, read, last_resort)


def _permanent_mac(iface: str) -> str | None:
    # ETHTOOL_GPERMADDR: the address burnt into the NIC, even when another one is set.
    size = 32
    buf = array.array("B", struct.pack("II", 0x20, size) + bytes(size))
    ifreq = struct.pack("16sP", iface.encode()[:15], buf.buffer_info()[0])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), 0x8946, ifreq)  # SIOCETHTOOL
    except OSError:
        return None
    length = struct.unpack_from("I", buf, 4)[0]
    mac = bytes(buf[8 : 8 + min(length, size)])
    if len(mac) != 6 or not any(mac):
        return None
    return ":".join(f"{b:02x}" for b in mac)


def mac_source(
    net_dir: Path = Path("/sys/class/net"),
    permanent: Callable[[str], str | None] = _permanent_mac,
) -> IdentitySource:
    """The permanent MAC of the first physical interface (by name; virtual ones skipped)."""

    def read() -> str | None:
        try:
            names = sorted(p.name for p in net_dir.iterdir())
        except OSError:
            return None
        for name in names:
            iface = net_dir / name
            if not (iface / "device").exists():
                continue  # lo, bridges, bonds, VLANs, tunnels, containers' veths
            mac = permanent(name)
            if mac is None and (_read_text(iface / "addr_assign_type") or "").strip() == "0":
                mac = _read_text(iface / "address")  # set by the hardware, not by software
            value = _usable(mac)
            if value is not None:
                return f"mac:{value.lower()}"
        return None

    return IdentitySource("permanent MAC of the first physical network interface", read)


DMI = Path("/sys/class/dmi/id")
DEFAULT_SOURCES: tuple[IdentitySource, ...] = (
    file_source("DMI product UUID", DMI / "product_uuid"),
    file_source("DMI product serial", DMI / "product_serial"),
    file_source(
        "device-tree serial number",
        Path("/sys/firmware/devicetree/base/serial-number"),
        Path("/proc/device-tree/serial-number"),
    ),
    mac_source(),
    file_source("machine id", *MACHINE_ID_FILES, last_resort=True),
)


def _as_source(item: Path | IdentitySource) -> IdentitySource:
    return item if isinstance(item, IdentitySource) else file_source(str(item), item)


def machine_identity(
    directory: Path, sources: Sequence[Path | IdentitySource] = DEFAULT_SOURCES
) -> str:
    """The machine's stable identity: the first source with a value, else one generated once."""
    for item in sources:
        source = _as_source(item)
        value = _usable(source.read())
        if value is None:
            continue
        if source.last_resort:
            log.warning(
                "install code from the %s: no hardware identity found (DMI, device tree, "
                "network interface); a re-image changes this code",
                source.name,
            )
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
    log.warning("no machine identity found; generated one path=%s", generated)
    return value


def install_code(
    directory: Path, sources: Sequence[Path | IdentitySource] = DEFAULT_SOURCES
) -> str:
    """This machine's install code."""
    return from_identity(machine_identity(directory, sources))
