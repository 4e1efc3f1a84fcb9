"""sd_notify and the watchdog against a real unix datagram socket bound by the test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.systemd import Notifier, Watchdog
from tests.conftest import Broker, free_port
from tests.licences import grant_capacity


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket standing in for systemd's notification socket."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket, without blocking."""
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


async def receive(sock: socket.socket, count: int, timeout: float = 5.0) -> list[str]:
    """Wait (on the loop) until at least ``count`` datagrams have arrived."""
    got: list[str] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < count:
        got.extend(drain(sock))
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"expected {count} datagrams, got {got}")
        await asyncio.sleep(0.01)
    return got


def test_notify_sends_states_in_one_datagram(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    notifier.notify("READY=1", "STATUS=running devices=3")
    assert drain(sock) == ["READY=1\nSTATUS=running devices=3"]
    notifier.close()


def test_reloading_carries_monotonic_timestamp(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.notify("RELOADING=1")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [message] = drain(sock)
    lines = message.split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].split("=", 1)[1]) <= after
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"edged-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        notifier.notify("STOPPING=1")
        assert drain(sock) == ["STOPPING=1"]
        notifier.close()


def test_without_socket_everything_is_a_noop() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    notifier.notify("READY=1")
    assert notifier.watchdog_interval() is None


def test_send_failure_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    notifier.notify("READY=1")
    assert "sd_notify failed" in caplog.text
    notifier.close()


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval() == 15.0
    mine = Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval() == 15.0
    # The watchdog was meant for another process (e.g. we are a child of the service).
    other = Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval() is None
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "garbage"}).watchdog_interval() is None


async def test_watchdog_pings_while_loop_runs(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})
    task = asyncio.create_task(Watchdog(notifier, lambda: True).run())
    try:
        pings = await receive(sock, 3)
        assert set(pings) == {"WATCHDOG=1"}
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    notifier.close()


async def test_blocked_loop_sends_no_pings(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    # 20 ms between pings; the loop is then blocked for 15 intervals.
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})
    task = asyncio.create_task(Watchdog(notifier, lambda: True).run())
    try:
        await receive(sock, 2)

        async def stuck() -> list[str]:
            drain(sock)
            # A blocking call on the loop: exactly what the watchdog must catch.
            time.sleep(0.3)
            return drain(sock)

        assert await asyncio.create_task(stuck()) == []
        # Once the loop turns again the pings come back.
        assert "WATCHDOG=1" in await receive(sock, 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    notifier.close()


async def test_unhealthy_pipeline_withholds_pings(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})
    healthy = False
    ticks = 0

    def check() -> bool:
        nonlocal ticks
        ticks += 1
        return healthy

    task = asyncio.create_task(Watchdog(notifier, check).run())
    try:
        while ticks < 5:  # noqa: ASYNC110 (polls a plain counter the watchdog bumps)
            await asyncio.sleep(0.01)
        assert drain(sock) == []
        healthy = True
        assert "WATCHDOG=1" in await receive(sock, 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    notifier.close()


async def test_watchdog_without_watchdog_usec_returns() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent"})
    await asyncio.wait_for(Watchdog(notifier, lambda: True).run(), timeout=5)


# --- the real daemon under a stand-in service manager ------------------------------------


class FakeManager:
    """Collects sd_notify datagrams like systemd does, on a socket bound by the test."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30.0) -> dict[str, str]:
        """Block until a datagram carrying ``key`` (with ``value``) arrives; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages:
                if key in msg and (value is None or msg[key] == value):
                    self.messages.remove(msg)
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value} from the daemon; got {self.messages}")
            self.sock.settimeout(left)
            try:
                raw = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            self.messages.append(dict(line.split("=", 1) for line in raw.splitlines() if line))


@pytest.mark.slow
def test_daemon_under_systemd_logs_for_journald_and_serves_metrics(
    tmp_path: Path, broker: Broker
) -> None:
    metrics_port = free_port()
    licences = tmp_path / "licences"
    grant_capacity(licences, 10)
    config = tmp_path / "edged.toml"
    config.write_text(
        f'[gateway]\nid = "gw-e2e"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'[control]\nsocket = "{tmp_path / "control.sock"}"\n'
        f'[metrics]\nhost = "127.0.0.1"\nport = {metrics_port}\n'
        f'[licensing]\ndirectory = "{licences}"\n'
    )
    manager = FakeManager(str(tmp_path / "notify.sock"))
    stderr = tmp_path / "stderr"
    err = stderr.open("w")
    st = os.fstat(err.fileno())
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
        "WATCHDOG_USEC": "1000000",
        # What systemd sets when stderr is connected to the journal.
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged.cli", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        assert manager.wait_for("READY", "1")
        manager.wait_for("WATCHDOG", "1")
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=10
            ) as r:
                body = r.read().decode()
            if "edged_uplink_connected 1.0" in body or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "edged_uplink_connected 1.0" in body
        assert "process_resident_memory_bytes" in body
        assert "edged_outbox_depth" in body
        proc.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING", "1")
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
        manager.sock.close()
    lines = stderr.read_text().splitlines()
    assert any(line.startswith("<6>edged") for line in lines), lines[:10]
    unprefixed = [line for line in lines if not re.match(r"<[0-7]>", line)]
    assert unprefixed == []
