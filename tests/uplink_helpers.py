"""Helpers for the uplink tests: config, records, and a subscriber that survives broker restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from edged.config import MqttConfig, TlsConfig
from edged.model import Reading, Record
from edged.payload import decode, is_record_message


def mqtt_config(
    port: int,
    *,
    protocol: str = "3.1.1",
    tls: TlsConfig | None = None,
    client_id: str = "edged-gw1",
    max_inflight: int = 16,
    backoff_initial: float = 0.05,
    backoff_max: float = 0.5,
) -> MqttConfig:
    """An MQTT config for a loopback broker with fast reconnects."""
    return MqttConfig(
        host="127.0.0.1" if tls is None else "localhost",
        port=port,
        protocol=protocol,
        client_id=client_id,
        topic_prefix="edged",
        username=None,
        password=None,
        keepalive=10,
        tls=tls,
        max_inflight=max_inflight,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
    )


def record(device: str, value: float) -> Record:
    """A one-quantity record."""
    return Record(
        device, 1_700_000_000.0, 60.0, {"energy_import": Reading(last=value, ts=1_700_000_000.0)}
    )


@dataclass
class Received:
    """Data messages seen by a subscriber, as (device, seq) in arrival order."""

    items: list[tuple[str, int]] = field(default_factory=list)
    other: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def add(self, topic: str, payload: bytes, retain: bool) -> None:
        if is_record_message(topic, payload):
            self.items.extend((r.device_id, r.seq) for r in decode(payload))
        else:
            self.other.append((topic, payload, retain))

    def unique(self) -> dict[str, list[int]]:
        """Per device, sequence numbers in first-arrival order after de-duplication."""
        seen: set[tuple[str, int]] = set()
        out: dict[str, list[int]] = {}
        for dev, seq in self.items:
            if (dev, seq) not in seen:
                seen.add((dev, seq))
                out.setdefault(dev, []).append(seq)
        return out

    def count_unique(self) -> int:
        return len(set(self.items))


@contextlib.asynccontextmanager
async def durable_subscriber(
    port: int, topic: str = "edged/#", name: str = "durable-sub"
) -> AsyncIterator[Received]:
    """A QoS 1 subscriber with a persistent session that reconnects after broker restarts."""
    got = Received()
    subscribed = asyncio.Event()

    async def loop() -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", port, identifier=name, clean_session=False
                ) as c:
                    await c.subscribe(topic, qos=1)
                    subscribed.set()
                    async for msg in c.messages:
                        payload = msg.payload if isinstance(msg.payload, bytes) else b""
                        got.add(str(msg.topic), payload, bool(msg.retain))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    task = asyncio.create_task(loop())
    try:
        await asyncio.wait_for(subscribed.wait(), 10)
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(predicate: object, seconds: float, what: str) -> None:
    """Poll a condition (a callable) until it holds."""
    assert callable(predicate)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def persistent_broker_conf(workdir: Path) -> str:
    """mosquitto lines that keep sessions across a restart (saved on SIGTERM)."""
    store = workdir / "mosq-store"
    store.mkdir(exist_ok=True)
    return f"persistence true\npersistence_location {store}/\n{KEEP_USER}"


KEEP_USER = "user root\n"
"""Run as root, mosquitto drops to its own user and cannot read pytest's private tmp dirs;
this keeps the invoking user (it has no effect when the tests do not run as root)."""
