"""Wired M-Bus link layer (EN 13757-2 / IEC 870-5-2 FT1.2): frame encoding and parsing.

Four frame kinds travel on the bus: the single ACK byte, the short frame
(``10 C A CS 16``), the control frame (a long frame with no user data) and the
long frame (``68 L L 68 C A CI data CS 16``). The codec does no I/O: ``scan``
finds the next frame in a receive buffer and tells the caller how many bytes to
drop when the buffer starts with garbage; ``parse`` accepts exactly one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from edged.errors import DecodeError

ACK_BYTE = 0xE5
SHORT_START = 0x10
LONG_START = 0x68
STOP_BYTE = 0x16

# Control field (C) values, master to slave.
SND_NKE = 0x40
SND_UD = 0x53
SND_UD_FCB = 0x73
REQ_UD1 = 0x5A
REQ_UD1_FCB = 0x7A
REQ_UD2 = 0x5B
REQ_UD2_FCB = 0x7B
FCB = 0x20  # frame count bit: toggles between successive REQ_UD2 / SND_UD
FCV = 0x10  # frame count bit valid

# Control field values, slave to master.
RSP_UD = 0x08
ACD = 0x20  # access demand: the slave has class 1 data
DFC = 0x10  # data flow control: the slave cannot accept more data

# Control information (CI) values sent by the master.
CI_APP_RESET = 0x50
CI_DATA_SEND = 0x51
CI_SELECT = 0x52
CI_SYNC = 0x54
CI_BAUD_300 = 0xB8
CI_BAUD_600 = 0xB9
CI_BAUD_1200 = 0xBA
CI_BAUD_2400 = 0xBB
CI_BAUD_4800 = 0xBC
CI_BAUD_9600 = 0xBD
CI_BAUD_19200 = 0xBE
CI_BAUD_38400 = 0xBF

# Control information (CI) values sent by the slave.
CI_ERROR = 0x70
CI_RESPONSE_LONG = 0x72  # variable data structure, long header (mode 1, LSB first)
CI_RESPONSE_FIXED = 0x73  # fixed data structure (mode 1)
CI_RESPONSE_LONG_MSB = 0x76  # variable data structure, long header (mode 2)
CI_RESPONSE_FIXED_MSB = 0x77
CI_RESPONSE_NONE = 0x78  # variable data structure, no header
CI_RESPONSE_NONE_MSB = 0x79
CI_RESPONSE_SHORT = 0x7A  # variable data structure, short header

# Primary addresses with a fixed meaning.
ADDR_UNCONFIGURED = 0x00
ADDR_NETWORK_LAYER = 0xFD  # the slave selected by secondary address
ADDR_BROADCAST_REPLY = 0xFE  # every slave replies (use with one slave only)
ADDR_BROADCAST = 0xFF  # every slave listens, none replies

MAX_DATA = 252  # L is one byte and counts C, A and CI as well


class FrameError(DecodeError):
    """A byte string is not one valid M-Bus link-layer frame."""


@dataclass(frozen=True)
class AckFrame:
    """The single character acknowledgement (0xE5)."""


@dataclass(frozen=True)
class ShortFrame:
    """``10 C A CS 16``: SND_NKE, REQ_UD2 and friends."""

    control: int
    address: int


@dataclass(frozen=True)
class ControlFrame:
    """A long frame without user data (L = 3), e.g. an application reset."""

    control: int
    address: int
    ci: int


@dataclass(frozen=True)
class LongFrame:
    """A long frame carrying user data after the CI field."""

    control: int
    address: int
    ci: int
    data: bytes


Frame = AckFrame | ShortFrame | ControlFrame | LongFrame


@dataclass(frozen=True)
class Complete:
    """A frame was parsed from ``buf[:end]``."""

    frame: Frame
    end: int


@dataclass(frozen=True)
class Incomplete:
    """The buffer starts with what may be a frame; more bytes are needed."""


@dataclass(frozen=True)
class Invalid:
    """The buffer does not start with a valid frame: drop ``buf[:skip]`` and retry."""

    reason: str
    skip: int


ScanResult = Complete | Incomplete | Invalid

_INCOMPLETE = Incomplete()
_ACK = AckFrame()
_START_BYTES = (ACK_BYTE, SHORT_START, LONG_START)


def _checked_byte(name: str, value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} must be a byte (0..255), got {value}")
    return value


def encode(frame: Frame) -> bytes:
    """The bytes of one frame on the wire, with checksum and stop byte."""
    if isinstance(frame, AckFrame):
        return bytes((ACK_BYTE,))
    if isinstance(frame, ShortFrame):
        c = _checked_byte("control", frame.control)
        a = _checked_byte("address", frame.address)
        return bytes((SHORT_START, c, a, (c + a) & 0xFF, STOP_BYTE))
    if isinstance(frame, ControlFrame):
        body = bytes(
            (
                _checked_byte("control", frame.control),
                _checked_byte("address", frame.address),
                _checked_byte("ci", frame.ci),
            )
        )
    elif isinstance(frame, LongFrame):
        if len(frame.data) > MAX_DATA:
            raise ValueError(f"long frame data is {len(frame.data)} bytes, at most {MAX_DATA} fit")
        body = (
            bytes(
                (
                    _checked_byte("control", frame.control),
                    _checked_byte("address", frame.address),
                    _checked_byte("ci", frame.ci),
                )
            )
            + frame.data
        )
    else:  # pragma: no cover - exhaustive over Frame
        raise TypeError(f"not an M-Bus frame: {frame!r}")
    n = len(body)
    return bytes((LONG_START, n, n, LONG_START)) + body + bytes((sum(body) & 0xFF, STOP_BYTE))


def _next_start(buf: bytes, after: int) -> int:
    """Index of the next byte that could start a frame, or len(buf)."""
    best = len(buf)
    for b in _START_BYTES:
        i = buf.find(b, after, best)
        if i != -1:
            best = i
    return best


def _frame_at_start(buf: bytes) -> Frame | Incomplete | str:
    """Parse the frame that ``buf`` starts with: the frame, Incomplete, or why it is invalid.

    Only the prefix up to the frame's own end is looked at; callers judge trailing bytes.
    """
    n = len(buf)
    if n == 0:
        return _INCOMPLETE
    start = buf[0]
    if start == ACK_BYTE:
        return _ACK
    if start == SHORT_START:
        if n < 5:
            return _INCOMPLETE
        c, a, cs, stop = buf[1], buf[2], buf[3], buf[4]
        if (c + a) & 0xFF != cs:
            return f"short frame checksum mismatch: got 0x{cs:02X}, computed 0x{(c + a) & 0xFF:02X}"
        if stop != STOP_BYTE:
            return f"short frame stop byte is 0x{stop:02X}, expected 0x16"
        return ShortFrame(c, a)
    if start == LONG_START:
        if n < 4:
            # Reject a bad header as early as its bytes arrive so resync does not wait.
            if n >= 3 and buf[1] != buf[2]:
                return f"long frame length fields differ: 0x{buf[1]:02X} != 0x{buf[2]:02X}"
            return _INCOMPLETE
        length, length2, start2 = buf[1], buf[2], buf[3]
        if length != length2:
            return f"long frame length fields differ: 0x{length:02X} != 0x{length2:02X}"
        if start2 != LONG_START:
            return f"long frame second start byte is 0x{start2:02X}, expected 0x68"
        if length < 3:
            return f"long frame length {length} is below the minimum of 3 (C, A, CI)"
        end = length + 6
        if n < end:
            return _INCOMPLETE
        body = buf[4 : 4 + length]
        cs = buf[4 + length]
        computed = sum(body) & 0xFF
        if cs != computed:
            return f"long frame checksum mismatch: got 0x{cs:02X}, computed 0x{computed:02X}"
        stop = buf[5 + length]
        if stop != STOP_BYTE:
            return f"long frame stop byte is 0x{stop:02X}, expected 0x16"
        if length == 3:
            return ControlFrame(body[0], body[1], body[2])
        return LongFrame(body[0], body[1], body[2], bytes(body[3:]))
    return f"byte 0x{start:02X} does not start an M-Bus frame"


def _frame_length(frame: Frame) -> int:
    if isinstance(frame, AckFrame):
        return 1
    if isinstance(frame, ShortFrame):
        return 5
    if isinstance(frame, ControlFrame):
        return 9
    return 9 + len(frame.data)


def scan(buf: bytes) -> Complete | Incomplete | Invalid:
    """Find the frame at the start of a receive buffer; on garbage say how much to drop."""
    result = _frame_at_start(buf)
    if isinstance(result, str):
        return Invalid(result, _next_start(buf, 1))
    if isinstance(result, Incomplete):
        return result
    return Complete(result, _frame_length(result))


def parse(buf: bytes) -> Frame:
    """Exactly one whole frame, or FrameError naming what is wrong."""
    data = bytes(buf)
    result = _frame_at_start(data)
    if isinstance(result, str):
        raise FrameError(result)
    if isinstance(result, Incomplete):
        if not data:
            raise FrameError("empty frame")
        raise FrameError(f"truncated frame: {len(data)} bytes do not hold a whole frame")
    size = _frame_length(result)
    if size != len(data):
        raise FrameError(f"{len(data) - size} trailing bytes after a {size}-byte frame")
    return result
