"""Shared fixtures: a real mosquitto broker on a free loopback port, and helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edged import payload
from edged.licensing.keys import trust_in_this_process, with_test_keys
from edged.model import Record

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# Daemons and CLIs run inside the test process trust the TEST licence key, handed over in
# code (no environment variable can do this; see edged/licensing/keys.py). Tests of the
# production rule build their stores with keys=production_keys().
trust_in_this_process(with_test_keys())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on the port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port}")


@dataclass
class Broker:
    """A mosquitto process the test controls (stop/start keep the port)."""

    port: int
    workdir: Path
    extra_conf: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.workdir / "mosquitto.log"

    def start(self) -> None:
        """Start (or restart) the broker on the same port."""
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"max_inflight_messages 0\nmax_queued_messages 0\n{self.extra_conf}"
        )
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        wait_port(self.port)

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on a free loopback port."""
    if not os.path.exists(MOSQUITTO):
        pytest.fail("mosquitto is missing: `make test` installs it, or apt-get install mosquitto")
    b = Broker(free_port(), tmp_path)
    b.start()
    yield b
    b.stop()


@dataclass
class Collector:
    """Messages received on a topic filter, in arrival order."""

    messages: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def json(self, suffix: str = "") -> list[dict[str, Any]]:
        """Decoded JSON payloads of the messages whose topic ends with suffix."""
        return [json.loads(p) for t, p, _ in self.messages if t.endswith(suffix) and p[:1] == b"{"]

    def records(self, device: str | None = None) -> list[Record]:
        """Records of every record message, read with ``edged.payload.decode``, in order."""
        out = []
        for topic, data, _ in self.messages:
            if payload.is_record_message(topic, data):
                out.extend(r for r in payload.decode(data) if device in (None, r.device_id))
        return out

    async def wait_for(self, predicate: Any, timeout: float = 15.0) -> None:
        """Wait until predicate(self) is true."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out; got {len(self.messages)} messages")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def subscribe(port: int, topic: str = "#") -> AsyncIterator[Collector]:
    """Subscribe to a topic on the broker and collect what arrives, in the background."""
    col = Collector()
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"test-{os.getpid()}-{id(col)}") as c:
        await c.subscribe(topic, qos=1)

        async def pump() -> None:
            async for msg in c.messages:
                payload = (
                    msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                )
                col.messages.append((str(msg.topic), payload, bool(msg.retain)))

        task = asyncio.create_task(pump())
        try:
            yield col
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
