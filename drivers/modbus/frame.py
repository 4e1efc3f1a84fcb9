"""Modbus frame helpers shared by the simulator's servers: PDUs, MBAP headers and RTU CRC.

Only what a meter needs to serve: register reads (3, 4), coil reads (1), the writes a
gateway sends (5, 6, 15, 16) and exception replies.
"""

from __future__ import annotations

import struct

ILLEGAL_FUNCTION = 0x01
ILLEGAL_DATA_ADDRESS = 0x02
ILLEGAL_DATA_VALUE = 0x03
SERVER_DEVICE_FAILURE = 0x04
GATEWAY_TARGET_FAILED = 0x0B

READ_COILS = 0x01
READ_HOLDING = 0x03
READ_INPUT = 0x04
WRITE_COIL = 0x05
WRITE_REGISTER = 0x06
WRITE_COILS = 0x0F
WRITE_REGISTERS = 0x10
MAX_READ = 125
MAX_READ_COILS = 2000
MAX_WRITE = 123
MAX_WRITE_COILS = 1968
COIL_ON = 0xFF00
MBAP = struct.Struct(">HHHB")


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (polynomial 0xA001, initial 0xFFFF)."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """An RTU frame with its CRC appended (low byte first)."""
    return frame + crc16(frame).to_bytes(2, "little")


def read_reply(function: int, registers: list[int]) -> bytes:
    """PDU answering a register read."""
    return struct.pack(f">BB{len(registers)}H", function, 2 * len(registers), *registers)


def coils_reply(states: list[bool]) -> bytes:
    """PDU answering a coil read (LSB of the first byte is the first coil)."""
    packed = bytearray((len(states) + 7) // 8)
    for i, on in enumerate(states):
        if on:
            packed[i // 8] |= 1 << (i % 8)
    return bytes((READ_COILS, len(packed))) + bytes(packed)


def exception_reply(function: int, code: int) -> bytes:
    """PDU of an exception response."""
    return bytes((function | 0x80, code))


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    """A Modbus TCP frame: MBAP header and PDU."""
    return MBAP.pack(tid, 0, len(pdu) + 1, unit) + pdu
