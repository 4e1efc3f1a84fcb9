"""Benchmark: 1,000 simulated OCPP chargers connected at once to one central system.

The central system (OcppDriver with a counting DriverContext) and the simulated
fleet run in separate processes; the figure is the server process's CPU and RSS
while every charger sends MeterValues at the configured interval.

    .venv/bin/python bench/ocpp_fleet.py [--chargers 1000] [--interval 10] [--measure 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from procstat import cpu_seconds, free_port, raise_nofile, status_kb

ROOT = Path(__file__).resolve().parents[1]


# -- server role: the driver in a process of its own ----------------------------------------


class _CountingContext:
    def __init__(self) -> None:
        self.samples = 0
        self.online: set[str] = set()

    def sample(self, sample: object) -> None:
        self.samples += 1

    def state(self, device_id: str, state: object, error: str | None = None) -> None:
        if getattr(state, "value", None) == "online":
            self.online.add(device_id)
        else:
            self.online.discard(device_id)

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        pass

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        pass


async def _serve(port: int, chargers: int, prefix: str) -> None:
    from drivers.ocpp.driver import OcppDriver
    from drivers.ocpp.simulator import charger_ids
    from edged.model import ConnectionSpec, DeviceSpec

    conn = ConnectionSpec("bench", "ocpp", {"host": "127.0.0.1", "port": port})
    devices = [
        DeviceSpec(id=cp.lower(), driver="ocpp", connection="bench", address=cp)
        for cp in charger_ids(prefix, chargers)
    ]
    ctx = _CountingContext()
    driver = OcppDriver()
    task = asyncio.create_task(driver.run(driver.configure(conn, devices), ctx))
    while True:
        await asyncio.sleep(1.0)
        if task.done():
            task.result()
        sys.stdout.write(f"online={len(ctx.online)} samples={ctx.samples}\n")
        sys.stdout.flush()


# -- bench role -----------------------------------------------------------------------------


class _Tail:
    """The last status line a child printed."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.last = ""
        assert proc.stdout is not None
        self._stream = proc.stdout
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self._stream:
            self.last = line.strip()

    def values(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for part in self.last.split():
            k, _, v = part.partition("=")
            if v.isdigit():
                out[k] = int(v)
        return out


def main() -> int:
    """Run the benchmark (or, with --serve, the server side of it)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chargers", type=int, default=1000)
    p.add_argument("--interval", type=float, default=10.0, help="seconds between MeterValues")
    p.add_argument("--version", choices=("1.6", "2.0.1"), default="1.6")
    p.add_argument("--measure", type=float, default=60.0, help="measurement window, seconds")
    p.add_argument("--connect-timeout", type=float, default=180.0)
    p.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    raise_nofile()
    prefix = "CP"
    if args.serve:
        asyncio.run(_serve(args.serve, args.chargers, prefix))
        return 0

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--chargers", str(args.chargers)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    sim: subprocess.Popen[bytes] | None = None
    try:
        tail = _Tail(server)
        deadline = time.monotonic() + 30
        while "online=" not in tail.last:
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("server did not start")
            time.sleep(0.1)
        idle_rss = status_kb(server.pid, "VmRSS")
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drivers.ocpp.simulator",
                "--url",
                f"ws://127.0.0.1:{port}",
                "--count",
                str(args.chargers),
                "--interval",
                str(args.interval),
                "--version",
                args.version,
                "--prefix",
                prefix,
                "--quiet",
            ],
            stdout=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
        )
        t0 = time.monotonic()
        cpu0 = cpu_seconds(server.pid)
        deadline = t0 + args.connect_timeout
        while tail.values().get("online", 0) < args.chargers:
            if time.monotonic() > deadline or sim.poll() is not None:
                raise SystemExit(f"only {tail.values().get('online')} chargers connected")
            time.sleep(0.2)
        connect_s = time.monotonic() - t0
        connect_cpu = cpu_seconds(server.pid) - cpu0
        # Let every charger reach its steady meter-value rhythm before measuring.
        time.sleep(args.interval + 2)
        s0, c0, w0 = tail.values().get("samples", 0), cpu_seconds(server.pid), time.monotonic()
        time.sleep(args.measure)
        s1, c1, w1 = tail.values().get("samples", 0), cpu_seconds(server.pid), time.monotonic()
        online = tail.values().get("online", 0)
        rss = status_kb(server.pid, "VmRSS")
        hwm = status_kb(server.pid, "VmHWM")
    finally:
        procs: list[subprocess.Popen[bytes] | subprocess.Popen[str] | None] = [sim, server]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    wall = w1 - w0
    rate = (s1 - s0) / wall
    core = (c1 - c0) / wall
    print("OCPP fleet benchmark")
    print(
        f"  setup: {args.chargers} simulated OCPP {args.version} chargers in one process, "
        f"MeterValues (10 sampled values) every {args.interval:g} s,"
    )
    print(
        "         central system (OcppDriver: inline schema validation, no permessage-deflate)"
        " in its own process,"
    )
    print(
        f"         loopback WebSockets, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs ({platform.machine()}), shared machine"
    )
    print(
        f"  connect: {args.chargers} chargers online in {connect_s:.1f} s, "
        f"server CPU {connect_cpu:.1f} s for all handshakes + boots"
    )
    per_msg = 1000 * core / rate if rate else 0.0
    per_charger = (rss - idle_rss) / max(1, args.chargers)
    print(
        f"  steady state over {wall:.0f} s: {online} online, {rate:.1f} samples/s, "
        f"server CPU {core:.3f} core ({per_msg:.2f} ms per MeterValues)"
    )
    print(
        f"  server RSS: idle {idle_rss / 1024:.1f} MiB, with fleet {rss / 1024:.1f} MiB "
        f"(peak {hwm / 1024:.1f} MiB), {per_charger:.1f} KiB per charger"
    )
    print(f"  target <= 0.2 core: {'met' if core <= 0.2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
