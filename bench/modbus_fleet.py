"""Fleet bench: N simulated Modbus TCP meters polled at 1 Hz.

The meters (profile ``bench8``: eight float32 values, one request per poll) are served
by the simulator in two separate processes, one TCP port per meter. They are polled
either by the daemon (``edged run -c <generated config>``, publishing to a mosquitto
started here) or, with ``--inprocess``, by the driver alone inside this process.

Prints achieved polls per device per second (counted at the simulators), CPU of the
polling process in cores (utime+stime from /proc/PID/stat), its peak RSS (VmHWM), and,
for the daemon, records per second received at the broker; with the setup.

    .venv/bin/python bench/modbus_fleet.py --count 1000 --inprocess
    .venv/bin/python bench/modbus_fleet.py --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from procstat import (  # noqa: E402
    cpu_model,
    cpu_seconds,
    free_port,
    raise_nofile,
    status_kb,
)

from drivers.modbus.driver import ModbusDriver  # noqa: E402
from edged.model import ConnectionSpec, DeviceSpec, DeviceState, Sample, Source  # noqa: E402


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of a process, in MB."""
    return status_kb(pid, "VmHWM") / 1024


@dataclass
class SimProcess:
    """One simulator process and the ports it serves."""

    proc: subprocess.Popen[str]
    ports: list[int] = field(default_factory=list)

    def requests(self) -> int:
        """Total requests served so far (asks the process with SIGUSR1)."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        for line in self.proc.stdout:
            if line.startswith("requests "):
                return int(line.split()[1])
        raise RuntimeError("simulator exited")


def start_simulator(count: int) -> SimProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "drivers.modbus.simulator", "--profile", "bench8",
         "--count", str(count), "--port", "0"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT, preexec_fn=raise_nofile,
    )  # fmt: skip
    sim = SimProcess(proc)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("tcp "):
            sim.ports.append(int(line.split()[1].rsplit(":", 1)[1]))
        elif line.strip() == "ready":
            return sim
    raise RuntimeError("simulator did not start")


class CountingContext:
    """DriverContext for in-process runs: counts samples and online devices."""

    def __init__(self) -> None:
        self.samples = 0
        self.online: set[str] = set()

    def sample(self, sample: Sample) -> None:
        self.samples += 1

    def state(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        if state == DeviceState.ONLINE:
            self.online.add(device_id)
        else:
            self.online.discard(device_id)

    def count(self, event: str, device_id: str | None = None, n: int = 1) -> None:
        pass

    def observe(self, event: str, seconds: float, device_id: str | None = None) -> None:
        pass


def write_config(path: Path, ports: list[int], mqtt_port: int, data_dir: Path,
                 licences: Path) -> None:  # fmt: skip
    lines = [
        f'[gateway]\nid = "bench"\ndata_dir = "{data_dir}"\n',
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n',
        "[metrics]\nenabled = false\n",
        f'[licensing]\ndirectory = "{licences}"\n',
    ]
    for i, port in enumerate(ports):
        lines.append(
            f'[connections.m{i:04d}]\ndriver = "modbus"\nhost = "127.0.0.1"\nport = {port}\n'
        )
    for i in range(len(ports)):
        lines.append(
            f'[[devices]]\nid = "m{i:04d}"\nconnection = "m{i:04d}"\naddress = 1\n'
            f'profile = "bench8"\npoll_interval = 1.0\ncloud_licence = "professional"\n'
        )
    path.write_text("\n".join(lines))


def start_broker(mosquitto: str, conf: Path) -> subprocess.Popen[bytes]:
    """A mosquitto process with this config."""
    return subprocess.Popen(
        [mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def install_bench_licence(directory: Path, devices: int) -> None:
    """A capacity licence for the fleet (plus the gateway), signed with the source test key."""
    from tests.licensing.issuing import install_test_licence
    from tests.licensing.licence_helpers import TEST_KEY

    directory.mkdir(parents=True, exist_ok=True)
    install_test_licence(directory, TEST_KEY, "capacity", capacity=devices + 1, days=2)


def start_daemon(python: str, config: Path, work: Path) -> subprocess.Popen[bytes]:
    """``edged run -c config`` with its log in work/edged.log."""
    with (work / "edged.log").open("wb") as log:
        return subprocess.Popen(
            # The bench licence is signed with the test key: the checkout's launcher trusts it.
            [python, "-m", "tools.licensing.trusting", "run", "-c", str(config)],
            cwd=work,
            stderr=log,
            preexec_fn=raise_nofile,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )


async def measure(sims: list[SimProcess], pid: int, warmup: float, duration: float,
                  received: list[int] | None) -> dict[str, Any]:  # fmt: skip
    await asyncio.sleep(warmup)
    r0 = sum(s.requests() for s in sims)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    m0 = received[0] if received is not None else 0
    await asyncio.sleep(duration)
    r1 = sum(s.requests() for s in sims)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    m1 = received[0] if received is not None else 0
    elapsed = t1 - t0
    return {
        "polls": (r1 - r0) / elapsed,
        "cores": (c1 - c0) / elapsed,
        "rss": vm_hwm_mb(pid),
        "records": (m1 - m0) / elapsed if received is not None else None,
        "elapsed": elapsed,
    }


async def run_inprocess(sims: list[SimProcess], args: argparse.Namespace) -> dict[str, Any]:
    ports = [p for s in sims for p in s.ports]
    ctx = CountingContext()
    driver = ModbusDriver()
    tasks = []
    for i, port in enumerate(ports):
        name = f"m{i:04d}"
        conn = ConnectionSpec(
            name, "modbus", MappingProxyType({"host": "127.0.0.1", "port": port}),
            Source(None, f"connections.{name}"),
        )  # fmt: skip
        dev = DeviceSpec(
            id=name,
            driver="modbus",
            connection=name,
            address=1,
            profile="bench8",
            poll_interval=1.0,
            source=Source(None, "devices"),
        )
        tasks.append(asyncio.create_task(driver.run(driver.configure(conn, [dev]), ctx)))
    try:
        result = await measure(sims, os.getpid(), args.warmup, args.duration, None)
        result["online"] = len(ctx.online)
        return result
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_daemon(sims: list[SimProcess], args: argparse.Namespace) -> dict[str, Any]:
    import aiomqtt

    ports = [p for s in sims for p in s.ports]
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="modbus-fleet-") as tmp:
        work = Path(tmp)
        mqtt_port = free_port()
        (work / "mosquitto.conf").write_text(
            f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\n"
        )
        broker = start_broker(mosquitto, work / "mosquitto.conf")
        config = work / "edged.toml"
        write_config(config, ports, mqtt_port, work / "data", work / "licences")
        (work / "data").mkdir()
        install_bench_licence(work / "licences", len(ports))
        daemon = None
        try:
            await asyncio.sleep(0.5)
            received = [0]
            async with aiomqtt.Client("127.0.0.1", mqtt_port, identifier="fleet-bench") as c:
                await c.subscribe("#", qos=1)

                async def pump() -> None:
                    async for msg in c.messages:
                        if isinstance(msg.payload, bytes) and msg.payload[:1] == b"{":
                            received[0] += 1

                pumper = asyncio.create_task(pump())
                daemon = start_daemon(args.python, config, work)
                try:
                    result = await measure(sims, daemon.pid, args.warmup, args.duration,
                                           received)  # fmt: skip
                finally:
                    pumper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pumper
            result["log_tail"] = (work / "edged.log").read_text(errors="replace")[-1500:]
            if daemon.poll() is not None:
                log = (work / "edged.log").read_text()[-2000:]
                raise RuntimeError(f"edged run exited with {daemon.returncode}:\n{log}")
            return result
        finally:
            if daemon is not None and daemon.poll() is None:
                daemon.terminate()
                try:
                    daemon.wait(10)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
            broker.terminate()
            broker.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100, help="number of meters (e.g. 100, 1000)")
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    ap.add_argument(
        "--inprocess",
        action="store_true",
        help="poll with the driver inside this process instead of `edged run`",
    )
    ap.add_argument(
        "--python",
        default=str(ROOT / ".venv" / "bin" / "python"),
        help="interpreter of the edged under test (default: the checkout's .venv)",
    )
    args = ap.parse_args()
    raise_nofile()
    half = args.count // 2
    sims = [start_simulator(half), start_simulator(args.count - half)]
    try:
        runner = run_inprocess if args.inprocess else run_daemon
        r = asyncio.run(runner(sims, args))
    finally:
        for s in sims:
            s.proc.terminate()
        for s in sims:
            s.proc.wait(10)
    mode = "driver in-process" if args.inprocess else "edged run (daemon)"
    print(f"modbus fleet bench: {mode}")
    print(
        f"  setup: N={args.count} meters (bench8, 8 x f32, 1 request/poll), poll 1 Hz, "
        f"2 simulator processes, one TCP port per meter"
    )
    print(
        f"  setup: warm-up {args.warmup:.0f} s, measured {r['elapsed']:.1f} s, "
        f"python {platform.python_version()}, cpu {cpu_model()} x {os.cpu_count()}"
    )
    print(f"  polls per device per second: {r['polls'] / args.count:.3f}")
    print(f"  polling process CPU: {r['cores']:.3f} cores")
    print(f"  polling process peak RSS (VmHWM): {r['rss']:.1f} MB")
    if r.get("records") is not None:
        print(f"  records/s received at the broker: {r['records']:.1f}")
    if r.get("log_tail") and r["polls"] / args.count < 0.9:
        print("  (polling fell short; tail of the daemon's log follows)")
        print(r["log_tail"])
    if "online" in r:
        print(f"  devices online at the end: {r['online']}/{args.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
