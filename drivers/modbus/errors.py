"""Errors of the Modbus driver, classified by what the poller should do."""

from __future__ import annotations

from edged.errors import PointError, TransientError

# Exception codes that mean "this address/function is not served here": the point is bad.
POINT_CODES = frozenset({0x01, 0x02, 0x03})


class ExceptionResponse(PointError):
    """The device answered a read with an exception code that rejects the registers."""

    def __init__(self, code: int, message: str = "") -> None:
        self.code = code
        super().__init__(message or f"exception response code {code}")


class DeviceRefused(TransientError):
    """The device (or a gateway in front of it) answered busy/failed: try again later."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exception response code {code}")


def from_exception_code(code: int) -> ExceptionResponse | DeviceRefused:
    """The error an exception response code stands for."""
    return ExceptionResponse(code) if code in POINT_CODES else DeviceRefused(code)
