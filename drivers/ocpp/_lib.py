"""Typed entry points into the ``ocpp`` package, which ships without type information.

Everything else in this driver imports the library through here, so the
``type: ignore`` comments live in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import ocpp.messages  # type: ignore[import-untyped,unused-ignore]
from ocpp.exceptions import OCPPError  # type: ignore[import-untyped,unused-ignore]
from ocpp.messages import Call, CallError, CallResult  # type: ignore[import-untyped,unused-ignore]
from ocpp.routing import after as _after  # type: ignore[import-untyped,unused-ignore]
from ocpp.routing import on as _on  # type: ignore[import-untyped,unused-ignore]
from ocpp.v16 import ChargePoint as ChargePoint16  # type: ignore[import-untyped,unused-ignore]
from ocpp.v16 import call as call16  # type: ignore[import-untyped,unused-ignore]
from ocpp.v16 import call_result as result16  # type: ignore[import-untyped,unused-ignore]
from ocpp.v201 import ChargePoint as ChargePoint201  # type: ignore[import-untyped,unused-ignore]
from ocpp.v201 import call as call201  # type: ignore[import-untyped,unused-ignore]
from ocpp.v201 import call_result as result201  # type: ignore[import-untyped,unused-ignore]

# Schema validation in a thread pool costs ~3 ms CPU per message against ~0.8 ms inline;
# at a thousand chargers that difference is most of the server's CPU.
ocpp.messages.ASYNC_VALIDATION = False

F = TypeVar("F", bound=Callable[..., Any])


def on(action: str, *, skip_schema_validation: bool = False) -> Callable[[F], F]:
    """Mark a method as the handler of an incoming OCPP action."""
    return cast(Callable[[F], F], _on(action, skip_schema_validation=skip_schema_validation))


def after(action: str) -> Callable[[F], F]:
    """Mark a method to run after the reply to an incoming action was sent."""
    return cast(Callable[[F], F], _after(action))


__all__ = [
    "Call",
    "CallError",
    "CallResult",
    "ChargePoint16",
    "ChargePoint201",
    "OCPPError",
    "after",
    "call16",
    "call201",
    "on",
    "result16",
    "result201",
]
