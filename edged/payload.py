"""The cloud contract in one place: record messages, topics and event bodies.

What a record looks like on the wire, where it is published and how gateway events
read is what the cloud side parses; README "Payload" and docs/uplink.md document it
(record format version 2). Sequence numbers are assigned durably by the outbox (they
must survive a crash) and carried in the record; this module only writes them.

A record is encoded once, when the outbox takes it, into two parts that are stored
as they are: its *shape* (quantity names, and window length and start, shared by many
records) and its *fragment* (device, seq, read time within the window, values in the
shape's order, and extras only when there is something to say). The uplink joins
stored parts into one message (``message``) without decoding or encoding a record again.

Topics: ``<prefix>/<gateway>/<device>`` (a message holding one device's records),
``<prefix>/<gateway>/records`` (a message holding several devices' records),
``<prefix>/<gateway>/status`` (retained ``online``/``offline``),
``<prefix>/<gateway>/events`` (events).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from edged.errors import EdgedError
from edged.model import Reading, Record, is_counter

VERSION = 2
ONLINE = b"online"
OFFLINE = b"offline"
BATCH_TOPIC = "records"
"""Last topic level of a message that holds records of more than one device."""

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


class PayloadError(EdgedError):
    """A record message that is not valid version 1 or 2 JSON."""


def shape(record: Record) -> str:
    """The record's shape: its quantity names in value order and its window, as two lines
    of JSON: ``["energy_import",…]`` and ``[length s, start s]``."""
    return _shape(tuple(sorted(record.values)), record.window_length, record.window_start)


# A fleet shares a few shapes per window: build each text once.
@functools.lru_cache(maxsize=1024)
def _shape(names: tuple[str, ...], length: float, start: float) -> str:
    return f"{_dumps(list(names))}\n{_dumps([_number(length), _number(start)])}"


def fragment(record: Record, seq: int | None = None) -> bytes:
    """The record without its shape: ``"device",seq,t,[values](,{extras})`` (no brackets).

    ``t`` is the read time of the values in ms after the window's start (the latest if
    they were read at different times; extras ``o`` then holds per-value offsets). Statistics go
    to extras only when a value's window held more than one sample. ``seq`` overrides
    the record's own (the outbox assigns it). Non-finite values are refused (ValueError).
    """
    values = record.values
    readings = [values[n] for n in sorted(values)]
    start = round(record.window_start * 1000)
    floor = math.floor
    stamps = [floor(r.ts * 1000) - start for r in readings]
    t = max(stamps) if stamps else 0
    extras: dict[str, Any] = {}
    if stamps.count(t) != len(stamps):
        extras["o"] = [s - t for s in stamps]
    if any(r.count > 1 for r in readings):
        _statistics(readings, extras)
    flags = _flags(record)
    if flags:
        extras["f"] = flags
    body: list[Any] = [
        record.device_id,
        record.seq if seq is None else seq,
        t,
        [_num(r.last) for r in readings],
    ]
    if extras:
        body.append(extras)
    return _dumps(body)[1:-1].encode()


def _statistics(readings: list[Reading], extras: dict[str, Any]) -> None:
    """Extras ``n``, and per gauge either its other sample (``p``, two samples: mean, min
    and max follow from it and the last) or mean/min/max (``a``, ``l``, ``h``)."""
    counts = [r.count for r in readings]
    extras["n"] = counts[0] if all(c == counts[0] for c in counts) else counts
    pairs = [r.count == 2 and r.mean is not None for r in readings]
    many = [r.count > 2 and r.mean is not None for r in readings]
    if any(pairs):
        extras["p"] = [
            _num(_other(r)) if pair else None for r, pair in zip(readings, pairs, strict=True)
        ]
    if any(many):
        extras["a"] = [_mean(r.mean) if m else None for r, m in zip(readings, many, strict=True)]
        extras["l"] = [_num(r.min) if m else None for r, m in zip(readings, many, strict=True)]
        extras["h"] = [_num(r.max) if m else None for r, m in zip(readings, many, strict=True)]


def _other(r: Reading) -> float | None:
    """The sample of a two-sample window that is not the last one."""
    return r.min if r.last == r.max else r.max


def _flags(record: Record) -> list[str]:
    """Flags of a record (extras ``f``): ``stale`` for a virtual meter with a stale source."""
    return ["stale"] if getattr(record, "stale", False) else []


def message(parts: Sequence[tuple[str, bytes]]) -> bytes:
    """One MQTT payload from stored (shape, fragment) pairs, in the order given."""
    keys: dict[str, int] = {}
    windows: dict[str, int] = {}
    # Consecutive records with the same names and window form a run: [k, w, rec, rec, …].
    runs: list[list[bytes]] = []
    current = (-1, -1)
    for sh, frag in parts:
        k, _, w = sh.partition("\n")
        group = (keys.setdefault(k, len(keys)), windows.setdefault(w, len(windows)))
        if group != current:
            current = group
            runs.append([b"%d,%d" % group])
        runs[-1].append(b"[%b]" % frag)
    return b'{"v":2,"k":[%b],"w":[%b],"r":[%b]}' % (
        ",".join(keys).encode(),
        ",".join(windows).encode(),
        b",".join(b"[%b]" % b",".join(run) for run in runs),
    )


def encode(record: Record) -> bytes:
    """The MQTT payload of one record alone (non-finite values are refused)."""
    return message([(shape(record), fragment(record))])


def decode(data: bytes | str) -> list[Record]:
    """The records of one message (version 2, or a version 1 body), in message order.

    The reader the contract documents: gauges whose window held one sample get
    mean = min = max = the value, as the gateway computed them.
    """
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise PayloadError(f"record message is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PayloadError("record message is not a JSON object")
    try:
        if "v" not in doc:
            return [_decode_v1(doc)]
        if doc["v"] != VERSION:
            raise PayloadError(f"record format version {doc['v']!r} is not supported")
        keys = [list(k) for k in doc["k"]]
        windows = [(float(w[0]), float(w[1])) for w in doc["w"]]
        return [_decode_v2(keys[run[0]], windows[run[1]], r) for run in doc["r"] for r in run[2:]]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise PayloadError(f"malformed record message: {exc!r}") from exc


def _decode_v2(names: list[str], window: tuple[float, float], r: list[Any]) -> Record:
    length, start = window
    device, seq, t, values = r[0], r[1], r[2], r[3]
    ex: Mapping[str, Any] = r[4] if len(r) > 4 else {}
    offsets = ex.get("o") or [0] * len(names)
    n = ex.get("n", 1)
    counts = n if isinstance(n, list) else [n] * len(names)
    pairs = ex.get("p") or [None] * len(names)
    many = ex.get("a") or [None] * len(names)
    readings: dict[str, Reading] = {}
    for i, name in enumerate(names):
        ts = start + (t + offsets[i]) / 1000
        last = float(values[i])
        if many[i] is not None:
            low, high = float(ex["l"][i]), float(ex["h"][i])
            readings[name] = Reading(last, ts, float(many[i]), low, high, counts[i])
        elif pairs[i] is not None:
            other = float(pairs[i])
            low, high = min(other, last), max(other, last)
            mean = min(max((other + last) / 2, low), high)
            readings[name] = Reading(last, ts, mean, low, high, 2)
        elif is_counter(name):
            readings[name] = Reading(last, ts, count=counts[i])
        else:
            readings[name] = Reading(last, ts, last, last, last, 1)
    record = Record(str(device), start, length, MappingProxyType(readings), int(seq))
    if "stale" in ex.get("f", ()) and hasattr(record, "stale"):
        flags: dict[str, Any] = {"stale": True}
        record = dataclasses.replace(record, **flags)
    return record


def _decode_v1(doc: Mapping[str, Any]) -> Record:
    from datetime import datetime

    def epoch(s: str) -> float:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    readings = {}
    for name, v in doc["values"].items():
        if "mean" in v:
            readings[name] = Reading(
                v["value"], epoch(v["ts"]), v["mean"], v["min"], v["max"], v["n"]
            )
        else:
            readings[name] = Reading(v["value"], epoch(v["ts"]))
    return Record(
        doc["device"],
        epoch(doc["ts"]),
        float(doc["window"]),
        MappingProxyType(readings),
        doc["seq"],
    )


def _num(x: float | None) -> float | int | None:
    """Whole numbers as JSON integers (1523340, not 1523340.0)."""
    if x is None or isinstance(x, int):
        return x
    return int(x) if x.is_integer() and -(2**53) < x < 2**53 else x


def _mean(x: float | None) -> float | int | None:
    """A window mean to 7 significant digits (float32 precision), integer digits kept."""
    if x is None or x == 0 or not math.isfinite(x):
        return _num(x)
    return _num(round(x, max(0, 6 - math.floor(math.log10(abs(x))))))


def _number(x: float) -> float | int:
    """Whole numbers as integers in JSON (a window of 900 s, not 900.0)."""
    return int(x) if x.is_integer() else x


def data_topic(prefix: str, gateway_id: str, device_id: str) -> str:
    """The data topic of a metering point: <prefix>/<gateway-id>/<device-id>."""
    return f"{prefix}/{gateway_id}/{device_id}"


def batch_topic(prefix: str, gateway_id: str) -> str:
    """The topic of a message holding several devices' records."""
    return f"{prefix}/{gateway_id}/{BATCH_TOPIC}"


def status_topic(prefix: str, gateway_id: str) -> str:
    """Retained online/offline status of a gateway."""
    return f"{prefix}/{gateway_id}/status"


def events_topic(prefix: str, gateway_id: str) -> str:
    """Gateway events (licence warnings, outbox drops, ...)."""
    return f"{prefix}/{gateway_id}/events"


def info_topic(prefix: str, gateway_id: str, device_id: str) -> str:
    """Retained description of a metering point: <prefix>/<gateway-id>/<device-id>/info."""
    return f"{prefix}/{gateway_id}/{device_id}/info"


def device_info(
    device_id: str,
    *,
    driver: str,
    medium: str,
    cloud_licence: str,
    labels: Mapping[str, str],
) -> bytes:
    """The retained info body of a metering point (README "Payload", device info).

    Labels travel here, once per change, rather than in every record: a record names its
    device, and the cloud joins the two. Published when the session starts and whenever the
    configuration changes it; an empty retained message clears it when the point goes.
    """
    return _dumps(
        {
            "v": 1,
            "device": device_id,
            "driver": driver,
            "medium": medium,
            "cloud_licence": cloud_licence,
            "labels": dict(sorted(labels.items())),
        }
    ).encode()


def event(kind: str, fields: dict[str, object], ts: float | None = None) -> bytes:
    """An event body: ``{"kind": …, "ts": <epoch s>, …fields}``."""
    return json.dumps(
        {"kind": kind, "ts": time.time() if ts is None else ts, **fields},
        separators=(",", ":"),
        default=str,
    ).encode()


def is_record_message(topic: str, data: bytes) -> bool:
    """Whether a message on the gateway's topics carries records (not status or events)."""
    return data[:1] == b"{" and not topic.endswith(("/events", "/status", "/info"))


__all__ = [
    "VERSION",
    "PayloadError",
    "decode",
    "encode",
    "fragment",
    "message",
    "shape",
]
