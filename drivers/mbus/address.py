"""M-Bus addresses: primary (0..250) and secondary (id, manufacturer, version, medium).

A secondary address is written as 16 hex digits: the 8-digit identification
number, the manufacturer code as 4 hex digits, the version and the medium as 2
each (the notation libmbus and most tools print). ``F`` nibbles of the id and
``FF`` bytes of the other fields are wildcards in a select.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

PRIMARY_MAX = 250
_SECONDARY = re.compile(r"^[0-9Ff]{8}[0-9A-Fa-f]{8}$")


@dataclass(frozen=True)
class SecondaryAddress:
    """A secondary address or a select mask (``F`` id nibbles / ``FF`` bytes match anything)."""

    id: str  # 8 characters, each a decimal digit or F
    manufacturer: int = 0xFFFF
    version: int = 0xFF
    medium: int = 0xFF

    @classmethod
    def parse(cls, text: str) -> SecondaryAddress:
        """Parse 16 hex digits; ValueError when malformed."""
        text = text.strip()
        if not _SECONDARY.match(text):
            raise ValueError(
                f"secondary address must be 16 hex digits (id 8 digits or F, manufacturer 4,"
                f" version 2, medium 2), got {text!r}"
            )
        return cls(
            id=text[:8].upper(),
            manufacturer=int(text[8:12], 16),
            version=int(text[12:14], 16),
            medium=int(text[14:16], 16),
        )

    @classmethod
    def from_header(cls, header: bytes) -> SecondaryAddress:
        """The address in the first 8 bytes of a variable data header (id BCD LSB first)."""
        if len(header) < 8:
            raise ValueError("a secondary address needs 8 header bytes")
        ident = "".join(f"{b:02X}" for b in reversed(header[0:4]))
        return cls(ident, header[4] | header[5] << 8, header[6], header[7])

    def to_bytes(self) -> bytes:
        """The 8 bytes of a select telegram (CI 0x52) for this address or mask."""
        digits = [int(c, 16) for c in self.id]
        ident = bytes(digits[i] << 4 | digits[i + 1] for i in (6, 4, 2, 0))
        m = self.manufacturer
        return ident + bytes((m & 0xFF, m >> 8, self.version, self.medium))

    def __str__(self) -> str:
        return f"{self.id}{self.manufacturer:04X}{self.version:02X}{self.medium:02X}"

    @property
    def is_wildcard(self) -> bool:
        """True when any part is a wildcard."""
        b = self.to_bytes()
        return "F" in self.id or any(x == 0xFF for x in b[4:])

    def matches(self, other: SecondaryAddress) -> bool:
        """True when ``other`` (a concrete address) is selected by this mask."""
        mask, value = self.to_bytes(), other.to_bytes()
        for i, (mine, theirs) in enumerate(zip(mask, value, strict=True)):
            if i < 4:
                if not _nibbles_match(mine, theirs):
                    return False
            elif mine not in (0xFF, theirs):
                return False
        return True

    def with_digit(self, position: int, digit: int) -> SecondaryAddress:
        """This mask with id digit ``position`` (0 = leftmost) set to ``digit``."""
        ident = self.id[:position] + str(digit) + self.id[position + 1 :]
        return replace(self, id=ident)

    def manufacturer_code(self) -> str:
        """The manufacturer as its three-letter FLAG code (``???`` for a wildcard)."""
        return manufacturer_code(self.manufacturer)


# Wildcards are only nibble-wise in the id bytes; a 0xF nibble in manufacturer, version or
# medium is a real value, so those bytes match only as whole 0xFF bytes.
def _nibbles_match(mine: int, theirs: int) -> bool:
    hi_ok = (mine >> 4) == 0xF or (mine >> 4) == (theirs >> 4)
    lo_ok = (mine & 0xF) == 0xF or (mine & 0xF) == (theirs & 0xF)
    return hi_ok and lo_ok


WILDCARD = SecondaryAddress("FFFFFFFF")


def manufacturer_code(value: int) -> str:
    """Three letters from the 15-bit manufacturer field (EN 62056-21 FLAG id)."""
    if value == 0xFFFF:
        return "???"
    return "".join(chr(((value >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def manufacturer_value(code: str) -> int:
    """The 16-bit manufacturer field of a three-letter code."""
    code = code.upper()
    if len(code) != 3 or not all("A" <= c <= "Z" for c in code):
        raise ValueError(f"manufacturer code must be three letters, got {code!r}")
    return (ord(code[0]) - 64) << 10 | (ord(code[1]) - 64) << 5 | (ord(code[2]) - 64)


Address = int | SecondaryAddress


def parse_address(value: int | str) -> Address:
    """A primary address (int 0..250) or a secondary address (16 hex digits)."""
    if isinstance(value, bool):
        raise ValueError("address must be an integer or a 16-hex-digit string")
    if isinstance(value, int):
        if not 0 <= value <= PRIMARY_MAX:
            raise ValueError(f"primary address must be 0..{PRIMARY_MAX}, got {value}")
        return value
    text = value.strip()
    if text.isdigit() and len(text) <= 3:
        return parse_address(int(text))
    return SecondaryAddress.parse(text)
