"""The cloud contract in one place: record bodies, topics and event bodies.

What a record looks like on the wire, where it is published and how gateway events
read is what the cloud side parses; README "Payload" documents it. Sequence numbers
are assigned durably by the outbox (they must survive a crash) and carried in the
record; this module only writes them into the body.

Topics: ``<prefix>/<gateway>/<device>`` (records), ``<prefix>/<gateway>/status``
(retained ``online``/``offline``), ``<prefix>/<gateway>/events`` (events).
"""

from __future__ import annotations

import json
import time
from typing import Any

from edged.model import Record, iso, unit_of

ONLINE = b"online"
OFFLINE = b"offline"


def body(record: Record) -> dict[str, Any]:
    """The JSON-ready body of a record (see README, "Payload")."""
    values: dict[str, Any] = {}
    for name, r in sorted(record.values.items()):
        v: dict[str, Any] = {"value": r.last, "unit": unit_of(name), "ts": iso(r.ts)}
        if r.mean is not None:
            v.update(mean=r.mean, min=r.min, max=r.max, n=r.count)
        values[name] = v
    return {
        "device": record.device_id,
        "seq": record.seq,
        "ts": iso(record.window_start),
        "window": _number(record.window_length),
        "values": values,
        **({"stale": True} if record.stale else {}),
    }


def encode(record: Record) -> bytes:
    """The MQTT payload bytes of a record (non-finite values are refused)."""
    return json.dumps(body(record), separators=(",", ":"), allow_nan=False).encode()


def _number(x: float) -> float | int:
    """Whole numbers as integers in JSON (a window of 900 s, not 900.0)."""
    return int(x) if x.is_integer() else x


def data_topic(prefix: str, gateway_id: str, device_id: str) -> str:
    """The data topic of a metering point: <prefix>/<gateway-id>/<device-id>."""
    return f"{prefix}/{gateway_id}/{device_id}"


def status_topic(prefix: str, gateway_id: str) -> str:
    """Retained online/offline status of a gateway."""
    return f"{prefix}/{gateway_id}/status"


def events_topic(prefix: str, gateway_id: str) -> str:
    """Gateway events (licence warnings, outbox drops, ...)."""
    return f"{prefix}/{gateway_id}/events"


def event(kind: str, fields: dict[str, object], ts: float | None = None) -> bytes:
    """An event body: ``{"kind": …, "ts": <epoch s>, …fields}``."""
    return json.dumps(
        {"kind": kind, "ts": time.time() if ts is None else ts, **fields},
        separators=(",", ":"),
        default=str,
    ).encode()
