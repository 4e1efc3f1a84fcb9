"""Guarding OCPP-J frames before the ``ocpp`` package sees them.

The package silently drops invalid JSON and its connection handler dies on deeply
nested JSON, huge integers or a non-string action. Every frame goes through
``parse`` first: it either returns a well-formed frame or raises ``FrameRejected``
carrying the CALLERROR the spec asks for. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

CALL, CALL_RESULT, CALL_ERROR = 2, 3, 4
MAX_DEPTH = 12
"""OCPP payloads nest at most 7 levels deep (TransactionEvent > meterValue > sampledValue...)."""
MAX_INT_DIGITS = 20
MAX_ID_LENGTH = 36
MAX_ACTION_LENGTH = 64

# Error codes valid in each version; the ``ocpp`` package mixes the two spellings.
_CODES_16 = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
    "RpcFrameworkError": "FormationViolation",
    "MessageTypeNotSupported": "NotSupported",
}
_CODES_201 = {
    "FormationViolation": "FormatViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}


@dataclass(frozen=True)
class Frame:
    """A structurally valid OCPP-J message."""

    type_id: int
    unique_id: str
    action: str | None
    payload: dict[str, Any]
    error: tuple[str, str] | None = None
    """Code and description of a CALLERROR."""


class FrameRejected(Exception):
    """The frame is malformed; ``reply`` says whether a CALLERROR should go back."""

    def __init__(self, unique_id: str, code: str, description: str, reply: bool = True):
        super().__init__(description)
        self.unique_id = unique_id
        self.code = code
        self.description = description
        self.reply = reply


def error_code(code: str, version: str) -> str:
    """The spelling of an error code that is valid in the given OCPP version."""
    table = _CODES_16 if version == "1.6" else _CODES_201
    return table.get(code, code)


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError("integer too large")
    return int(text)


def _finite_float(text: str) -> float:
    if len(text) > 64:
        raise ValueError("number too long")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _no_constants(text: str) -> float:
    raise ValueError(f"{text} is not allowed")


def _depth_ok(value: Any) -> bool:
    # Iterative, so a hostile frame cannot exhaust the stack here either.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > MAX_DEPTH:
                return False
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            if depth > MAX_DEPTH:
                return False
            stack.extend((v, depth + 1) for v in item)
    return True


def parse(raw: str | bytes, version: str) -> Frame:
    """Parse and check one frame; raise FrameRejected with the CALLERROR to send."""
    bad = error_code("RpcFrameworkError", version)
    if isinstance(raw, bytes):
        raise FrameRejected("-1", bad, "OCPP-J frames are text, got a binary frame")
    try:
        msg = json.loads(
            raw,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            parse_constant=_no_constants,
        )
    except RecursionError:
        raise FrameRejected("-1", bad, "message nests too deeply") from None
    except ValueError as e:  # JSONDecodeError is a ValueError, so are the bounds above
        raise FrameRejected("-1", bad, f"message is not valid JSON: {e}") from None
    if not isinstance(msg, list) or not msg:
        raise FrameRejected("-1", bad, "message is not a JSON array")
    type_id = msg[0]
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None
    if uid is not None and not 0 < len(uid) <= MAX_ID_LENGTH:
        uid = None
    reply_id = uid or "-1"
    if not _depth_ok(msg):
        raise FrameRejected(reply_id, bad, "message nests too deeply")
    if isinstance(type_id, bool) or type_id not in (CALL, CALL_RESULT, CALL_ERROR):
        code = error_code("MessageTypeNotSupported", version)
        raise FrameRejected(reply_id, code, f"unknown message type {str(type_id)[:20]}")
    # Results and errors are never answered with a CALLERROR: the spec only replies to calls.
    reply = type_id == CALL
    if uid is None:
        raise FrameRejected("-1", bad, "message id is missing or not a string of 1-36", reply)
    if type_id == CALL:
        if len(msg) != 4:
            raise FrameRejected(uid, bad, "a CALL has exactly 4 elements")
        action, payload = msg[2], msg[3]
        if not isinstance(action, str) or not 0 < len(action) <= MAX_ACTION_LENGTH:
            raise FrameRejected(uid, bad, "action is not a string")
        if not isinstance(payload, dict):
            raise FrameRejected(
                uid, error_code("FormatViolation", version), "payload is not an object"
            )
        return Frame(CALL, uid, action, payload)
    if type_id == CALL_RESULT:
        if len(msg) != 3 or not isinstance(msg[2], dict):
            raise FrameRejected(uid, bad, "a CALLRESULT is [3, id, {payload}]", reply=False)
        return Frame(CALL_RESULT, uid, None, msg[2])
    if (
        len(msg) != 5
        or not isinstance(msg[2], str)
        or not isinstance(msg[3], str)
        or not isinstance(msg[4], dict)
    ):
        raise FrameRejected(uid, bad, "a CALLERROR is [4, id, code, text, {details}]", reply=False)
    return Frame(CALL_ERROR, uid, None, msg[4], error=(msg[2], msg[3]))


def call_error(unique_id: str, code: str, description: str) -> str:
    """The JSON text of a CALLERROR."""
    return json.dumps([CALL_ERROR, unique_id, code, description[:255], {}], separators=(",", ":"))
