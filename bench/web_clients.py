"""Console bench: what browsers polling the live view cost the daemon.

A 1,000-meter fleet (the setup of ``bench/modbus_fleet.py``: profile ``bench8``, 1 Hz, two
simulator processes, mosquitto) runs under ``edged run`` with the web server on. The CPU
of edged is measured first with no client, then with N browser-like clients that each do
what the dashboard's script does once a second: ``GET /api/status`` and
``GET /api/devices`` (every device with its last values), each with its own session.

    .venv/bin/python bench/web_clients.py --count 1000 --clients 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modbus_fleet import (  # noqa: E402
    SimProcess,
    fleet_simulators,
    install_bench_licence,
    start_broker,
    start_daemon,
    vm_hwm_mb,
    write_config,
)
from procstat import cpu_model, cpu_seconds, free_port, raise_nofile  # noqa: E402


async def client(url: str, stop: asyncio.Event, stats: dict[str, Any]) -> None:
    """One browser tab on the dashboard: both live calls once a second."""
    import aiohttp

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(url, cookie_jar=jar) as http:
        async with http.get("/") as r:  # the page itself, which also opens the session
            await r.read()
        while not stop.is_set():
            started = time.monotonic()
            for path in ("/api/status", "/api/devices"):
                t0 = time.monotonic()
                async with http.get(path) as r:
                    body = await r.read()
                    if r.status != 200:
                        stats["errors"] += 1
                stats["latency"].append(time.monotonic() - t0)
                stats["bytes"] += len(body)
                stats["wire"] += int(r.headers.get("Content-Length", len(body)))
                stats["requests"] += 1
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


async def phase(
    sims: list[SimProcess], pid: int, seconds: float, clients: int, url: str
) -> dict[str, Any]:
    """CPU of edged and polls at the simulators over ``seconds`` with ``clients`` polling."""
    stop = asyncio.Event()
    stats: dict[str, Any] = {"latency": [], "bytes": 0, "wire": 0, "requests": 0, "errors": 0}
    tasks = [asyncio.create_task(client(url, stop, stats)) for _ in range(clients)]
    if clients:
        await asyncio.sleep(3.0)  # sessions opened, first pages served
    stats.update(latency=[], bytes=0, wire=0, requests=0)
    r0 = sum(s.requests() for s in sims)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    r1 = sum(s.requests() for s in sims)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = t1 - t0
    lat = sorted(stats["latency"]) or [0.0]
    return {
        "cores": (c1 - c0) / elapsed,
        "polls": (r1 - r0) / elapsed,
        "requests": stats["requests"] / elapsed,
        "bytes": stats["bytes"] / max(1, stats["requests"]),
        "wire": stats["wire"] / max(1, stats["requests"]),
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "errors": stats["errors"],
        "elapsed": elapsed,
    }


async def run(sims: list[SimProcess], args: argparse.Namespace) -> dict[str, Any]:
    ports = [p for s in sims for p in s.ports]
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="web-clients-") as tmp:
        work = Path(tmp)
        mqtt_port, web_port = free_port(), free_port()
        (work / "mosquitto.conf").write_text(
            f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\n"
        )
        broker = start_broker(mosquitto, work / "mosquitto.conf")
        config = work / "edged.toml"
        write_config(config, ports, mqtt_port, work / "data", work / "licences")
        config.write_text(config.read_text() + f"\n[web]\nenabled = true\nport = {web_port}\n")
        (work / "data").mkdir()
        install_bench_licence(work / "licences", len(ports))
        daemon = None
        try:
            await asyncio.sleep(0.5)
            daemon = start_daemon(args.python, config, work)
            await asyncio.sleep(args.warmup)
            if daemon.poll() is not None:
                log = (work / "edged.log").read_text()[-2000:]
                raise RuntimeError(f"edged run exited with {daemon.returncode}:\n{log}")
            url = f"http://127.0.0.1:{web_port}"
            idle = await phase(sims, daemon.pid, args.duration, 0, url)
            busy = await phase(sims, daemon.pid, args.duration, args.clients, url)
            return {"idle": idle, "busy": busy, "rss": vm_hwm_mb(daemon.pid)}
        finally:
            if daemon is not None and daemon.poll() is None:
                daemon.terminate()
                daemon.wait(15)
            broker.terminate()
            broker.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=1000, help="number of meters")
    ap.add_argument("--clients", type=int, default=20, help="browser-like clients")
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    ap.add_argument(
        "--python",
        default=str(ROOT / ".venv" / "bin" / "python"),
        help="interpreter of the edged under test (default: the checkout's .venv)",
    )
    args = ap.parse_args()
    raise_nofile()
    with fleet_simulators(args.count) as sims:
        r = asyncio.run(run(sims, args))
    idle, busy = r["idle"], r["busy"]
    print("web clients bench: edged run with the console on, browsers polling the live view")
    print(
        f"  setup: N={args.count} Modbus TCP meters (bench8, 8 x f32), poll 1 Hz, professional "
        f"tier, publishing to mosquitto; {args.clients} clients each GET /api/status + "
        "/api/devices once a second (what the dashboard does)"
    )
    print(
        f"  setup: warm-up {args.warmup:.0f} s, {args.duration:.0f} s per phase, python "
        f"{platform.python_version()}, cpu {cpu_model()} x {os.cpu_count()} (shared machine)"
    )
    print(f"  edged CPU without clients: {idle['cores']:.3f} cores")
    print(f"  edged CPU with {args.clients} clients: {busy['cores']:.3f} cores")
    print(f"  cost of the clients: {busy['cores'] - idle['cores']:+.3f} cores")
    print(
        f"  polls per device per second: {idle['polls'] / args.count:.3f} without, "
        f"{busy['polls'] / args.count:.3f} with clients"
    )
    print(
        f"  requests: {busy['requests']:.1f}/s, average answer {busy['bytes'] / 1024:.0f} KiB "
        f"({busy['wire'] / 1024:.0f} KiB gzipped on the wire), "
        f"latency p50 {busy['p50'] * 1000:.0f} ms, p99 {busy['p99'] * 1000:.0f} ms, "
        f"errors {busy['errors']}"
    )
    print(f"  edged peak RSS (VmHWM): {r['rss']:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
