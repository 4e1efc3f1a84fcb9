"""Fleet bench: N simulated Modbus TCP meters polled at 1 Hz.

The meters (profile ``bench8``: eight float32 values, one request per poll) are served
by the simulator in two separate processes, one TCP port per meter. They are polled
either by the daemon (``edged run -c <generated config>``, publishing to a mosquitto
started here) or, with ``--inprocess``, by the driver alone inside this process. With
``--floor`` this process only sends each meter's request once a second and takes the
answer (bare asyncio protocols, no decoding, no timers): the part of the CPU figure that
is the TCP exchange itself, in this interpreter and kernel.

Prints achieved polls per device per second (counted at the simulators), CPU of the
polling process in cores (utime+stime from /proc/PID/stat), its peak RSS (VmHWM), and,
for the daemon, what a subscriber on the broker receives: records per second, the
read-to-broker delay (arrival at the subscriber minus the read time carried in the
record) as p50/p99/max, and bytes per message and per value (MQTT payload, and payload
plus topic and PUBLISH header); with the setup. ``--python`` runs another checkout's
edged (for example the previous release) against the same fleet and subscriber.

    .venv/bin/python bench/modbus_fleet.py --count 1000 --inprocess
    .venv/bin/python bench/modbus_fleet.py --count 1000
    .venv/bin/python bench/modbus_fleet.py --count 1000 --floor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
from edged.payload import decode, is_record_message  # noqa: E402


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


@contextlib.contextmanager
def fleet_simulators(count: int) -> Iterator[list[SimProcess]]:
    """``count`` simulated meters in two simulator processes (one per core), stopped after."""
    half = count // 2
    sims = [start_simulator(half), start_simulator(count - half)]
    try:
        yield sims
    finally:
        for s in sims:
            s.proc.terminate()
        for s in sims:
            s.proc.wait(10)


def write_config(path: Path, ports: list[int], mqtt_port: int, data_dir: Path,
                 licences: Path, batch: int | None = None) -> None:  # fmt: skip
    lines = [
        f'[gateway]\nid = "bench"\ndata_dir = "{data_dir}"\n',
        f'[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\n'
        + (f"batch = {batch}\n" if batch is not None else ""),
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


def checkout_of(python: str) -> Path:
    """The source checkout whose .venv holds this interpreter (this one if it is not one)."""
    venv = Path(python).absolute().parent.parent  # not resolve(): the venv links elsewhere
    return venv.parent if (venv.parent / "edged").is_dir() else ROOT


def start_daemon(python: str, config: Path, work: Path) -> subprocess.Popen[bytes]:
    """``edged run -c config`` of the checkout that owns ``python``, logging to work/edged.log."""
    with (work / "edged.log").open("wb") as log:
        return subprocess.Popen(
            # The bench licence is signed with the test key: the checkout's launcher trusts it.
            [python, "-m", "tools.licensing.trusting", "run", "-c", str(config)],
            cwd=work,
            stderr=log,
            preexec_fn=raise_nofile,
            env=dict(os.environ, PYTHONPATH=str(checkout_of(python))),
        )


@dataclass
class Received:
    """What the subscriber saw during the measured interval."""

    on: bool = False
    messages: int = 0
    records: int = 0
    values: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0
    delays: list[float] = field(default_factory=list)

    def add(self, topic: str, data: bytes, arrived: float) -> None:
        if not self.on or not is_record_message(topic, data):
            return
        records = decode(data)
        self.messages += 1
        self.records += len(records)
        self.payload_bytes += len(data)
        # PUBLISH at QoS 1: fixed header (1 + remaining-length bytes), topic length (2),
        # topic, packet id (2), payload.
        rest = 2 + len(topic.encode()) + 2 + len(data)
        self.wire_bytes += 1 + (1 if rest < 128 else 2 if rest < 16384 else 3) + rest
        for r in records:
            self.values += len(r.values)
            self.delays.append(arrived - max(v.ts for v in r.values.values()))

    def summary(self, elapsed: float) -> dict[str, Any]:
        d = sorted(self.delays) or [math.nan]
        pick = lambda q: d[min(len(d) - 1, int(q * len(d)))]  # noqa: E731
        return {
            "records": self.records / elapsed,
            "delay": (pick(0.5) * 1000, pick(0.99) * 1000, d[-1] * 1000),
            "per_message": self.payload_bytes / max(1, self.messages),
            "records_per_message": self.records / max(1, self.messages),
            "per_value": self.payload_bytes / max(1, self.values),
            "wire_per_value": self.wire_bytes / max(1, self.values),
        }


async def measure(sims: list[SimProcess], pid: int, warmup: float, duration: float,
                  received: Received | None) -> dict[str, Any]:  # fmt: skip
    # The warm-up starts once every meter is polled: opening thousands of connections
    # takes the daemon several seconds, and polls still ramping up are not its rate.
    meters = sum(len(s.ports) for s in sims)
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 120.0
    last = sum(s.requests() for s in sims)
    while loop.time() < give_up:
        await asyncio.sleep(1.0)
        now = sum(s.requests() for s in sims)
        if now - last >= 0.95 * meters:
            break
        last = now
    await asyncio.sleep(warmup)
    r0 = sum(s.requests() for s in sims)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    if received is not None:
        received.on = True
    await asyncio.sleep(duration)
    if received is not None:
        received.on = False
    r1 = sum(s.requests() for s in sims)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    elapsed = t1 - t0
    result = {
        "polls": (r1 - r0) / elapsed,
        "cores": (c1 - c0) / elapsed,
        "rss": vm_hwm_mb(pid),
        "elapsed": elapsed,
    }
    if received is not None:
        result.update(received.summary(elapsed))
    return result


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


class _BareExchange(asyncio.BufferedProtocol):
    """``--floor``: one read request per second and its answer, nothing else (no decoding,
    no timeout timer, no state): what the exchange alone costs in this interpreter."""

    REQUEST = struct.Struct(">HHHBBHH")

    def __init__(self, phase: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.phase = phase
        self.buffer = bytearray(512)
        self.filled = 0
        self.tid = 0
        self.next_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.loop.call_at(self.loop.time() + self.phase, self.send)

    def send(self) -> None:
        assert self.transport is not None
        self.tid = (self.tid + 1) & 0xFFFF
        # bench8: eight float32 values from holding register 0.
        self.transport.write(self.REQUEST.pack(self.tid, 0, 6, 1, 3, 0, 16))
        self.next_at = self.loop.time() + 1.0

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)[self.filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self.filled += nbytes
        if self.filled >= 6 and self.filled >= 6 + int.from_bytes(self.buffer[4:6], "big"):
            self.filled = 0
            self.loop.call_at(self.next_at, self.send)


async def run_floor(sims: list[SimProcess], args: argparse.Namespace) -> dict[str, Any]:
    ports = [p for s in sims for p in s.ports]
    loop = asyncio.get_running_loop()
    transports = []
    for i, port in enumerate(ports):
        t, _ = await loop.create_connection(
            lambda i=i: _BareExchange(i / len(ports)), "127.0.0.1", port
        )
        transports.append(t)
    try:
        return await measure(sims, os.getpid(), args.warmup, args.duration, None)
    finally:
        for t in transports:
            t.close()


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
        write_config(config, ports, mqtt_port, work / "data", work / "licences", args.batch)
        (work / "data").mkdir()
        install_bench_licence(work / "licences", len(ports))
        daemon = None
        try:
            await asyncio.sleep(0.5)
            received = Received()
            async with aiomqtt.Client("127.0.0.1", mqtt_port, identifier="fleet-bench") as c:
                await c.subscribe("#", qos=1)

                async def pump() -> None:
                    async for msg in c.messages:
                        if isinstance(msg.payload, bytes):
                            received.add(str(msg.topic), msg.payload, time.time())

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
            if args.keep_log is not None:
                shutil.copyfile(work / "edged.log", args.keep_log)
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
    ap.add_argument(
        "--warmup",
        type=float,
        default=5.0,
        help="seconds after every meter is polled, before measuring",
    )
    ap.add_argument(
        "--inprocess",
        action="store_true",
        help="poll with the driver inside this process instead of `edged run`",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="only send each meter's request and take its answer (bare asyncio protocols, "
        "no decoding): the cost of the exchange alone, for comparison",
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help="[mqtt] batch of the daemon (default: its own default)",
    )
    ap.add_argument(
        "--keep-log", type=Path, default=None, help="copy the daemon's log here at the end"
    )
    ap.add_argument(
        "--python",
        default=str(ROOT / ".venv" / "bin" / "python"),
        help="interpreter of the edged under test (default: the checkout's .venv)",
    )
    args = ap.parse_args()
    raise_nofile()
    with fleet_simulators(args.count) as sims:
        runner = run_floor if args.floor else run_inprocess if args.inprocess else run_daemon
        r = asyncio.run(runner(sims, args))
    mode = (
        "floor: bare request/answer exchange in-process"
        if args.floor
        else "driver in-process"
        if args.inprocess
        else "edged run (daemon)"
    )
    print(f"modbus fleet bench: {mode}")
    if not (args.inprocess or args.floor):
        print(f"  edged under test: {checkout_of(args.python)} ({args.python})")
    print(
        f"  setup: N={args.count} meters (bench8, 8 x f32, 1 request/poll), poll 1 Hz, "
        f"2 simulator processes, one TCP port per meter"
    )
    print(
        f"  setup: warm-up {args.warmup:.0f} s once every meter is polled, "
        f"measured {r['elapsed']:.1f} s, "
        f"python {platform.python_version()}, cpu {cpu_model()} x {os.cpu_count()}"
    )
    print(f"  polls per device per second: {r['polls'] / args.count:.3f}")
    print(f"  polling process CPU: {r['cores']:.3f} cores")
    print(f"  polling process peak RSS (VmHWM): {r['rss']:.1f} MB")
    if r.get("records") is not None:
        p50, p99, worst = r["delay"]
        print(f"  records/s received at the broker: {r['records']:.1f}")
        print(f"  read-to-broker delay p50/p99/max: {p50:.0f} / {p99:.0f} / {worst:.0f} ms")
        print(
            f"  bytes per message: {r['per_message']:.0f} "
            f"({r['records_per_message']:.1f} records per message)"
        )
        print(
            f"  bytes per value: {r['per_value']:.1f} payload, "
            f"{r['wire_per_value']:.1f} with topic and MQTT header"
        )
    print("  (the machine is shared with other work: CPU and delay figures are noisy)")
    if r.get("log_tail") and r["polls"] / args.count < 0.9:
        print("  (polling fell short; tail of the daemon's log follows)")
        print(r["log_tail"])
    if "online" in r:
        print(f"  devices online at the end: {r['online']}/{args.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
