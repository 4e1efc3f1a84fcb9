"""``make demo``: a local broker, simulated devices and the daemon, with readings printed.

Everything runs on loopback with the demo configuration in ``config/demo/``; its state
(outbox, licences, logs) goes to ``var/demo/`` in the checkout, which git ignores. The trial
licence is signed with the TEST key of the source checkout (``edged license demo-trial``,
through ``tools/licensing``), which the demo daemon trusts because it is started through the
checkout's launcher ``python -m tools.licensing.trusting`` (no environment variable does it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from edged import payload
from edged.model import Reading, unit_of

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "demo"
# Runtime state (outbox, gateway key, licences, logs): git-ignored, rebuilt by every run.
VAR = ROOT / "var" / "demo"


# The simulated site: two electricity meters behind one Modbus TCP gateway, a heat meter
# behind an M-Bus-to-TCP converter (paced at 2400 baud) and an OCPP 2.0.1 charger.
MODBUS_SIM = (
    "sim",
    "modbus",
    "--profile",
    "eastron_sdm630",
    "--count",
    "2",
    "--units-per-port",
    "2",
    "--port",
    "15020",
)
MBUS_SIM = ("sim", "mbus", "--tcp-port", "15100", "--slaves", "1", "--baud", "2400")
OCPP_SIM = (
    "sim",
    "ocpp",
    "--url",
    "ws://127.0.0.1:19000",
    "--count",
    "1",
    "--prefix",
    "CP",
    "--version",
    "2.0.1",
    "--interval",
    "2",
    "--quiet",
)


def _edged(*args: str) -> list[str]:
    # The checkout's launcher: the edged CLI with the TEST key handed to the licence store.
    return [sys.executable, "-m", "tools.licensing.trusting", *args]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"demo: nothing listening on 127.0.0.1:{port}")


def _start(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    fh = log.open("ab")
    return subprocess.Popen(
        args,
        stdout=fh,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


# Shown first when a record has them; other quantities fill up to four columns.
_PREFERRED = (
    "energy_import",
    "power_active",
    "energy_heat",
    "volume",
    "power_thermal",
    "flow_temperature",
    "state_of_charge",
    "current_import",
)


def _summary(values: Mapping[str, Reading]) -> str:
    names = [n for n in _PREFERRED if n in values]
    names += [n for n in values if n not in names][: max(0, 4 - len(names))]
    parts = []
    for name in names[:4]:
        unit = unit_of(name)
        parts.append(f"{name}={values[name].last:.10g}{' ' + unit if unit else ''}")
    return ", ".join(parts)


def _show(topic: str, raw: bytes, start: float) -> bool:
    """Print one message; True when it was a record."""
    if not raw.startswith(b"{"):
        print(f"{topic}: {raw.decode(errors='replace')}", flush=True)
        return False
    if not payload.is_record_message(topic, raw):
        print(f"{topic}: {json.loads(raw)}", flush=True)
        return False
    for record in payload.decode(raw):
        print(
            f"+{time.monotonic() - start:5.1f}s {record.device_id:<8} seq={record.seq:<5} "
            f"{_summary(record.values)}",
            flush=True,
        )
    return True


async def _watch(port: int, duration: float | None, start: float) -> int:
    """Print what arrives at the broker until the duration is over (reconnecting if dropped)."""
    import aiomqtt

    seen = 0
    async with asyncio.timeout(duration):
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", port, identifier=f"edged-demo-viewer-{os.getpid()}"
                ) as client:
                    await client.subscribe("edged/#", qos=1)
                    async for msg in client.messages:
                        raw = msg.payload if isinstance(msg.payload, bytes) else b""
                        seen += _show(str(msg.topic), raw, start)
            except aiomqtt.MqttError as exc:
                print(f"demo: viewer lost the broker ({exc}); reconnecting", flush=True)
                await asyncio.sleep(0.5)


def _ports_free(ports: tuple[int, ...]) -> None:
    """Refuse to start when another demo (or anything) holds the demo's ports."""
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(
                    f"demo: port {port} on 127.0.0.1 is in use (is another demo running?)"
                )


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or for --duration seconds)."""
    ap = argparse.ArgumentParser(prog="edged-demo")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = ap.parse_args(argv)
    start = time.monotonic()
    _ports_free((18830, 15020, 15100, 19000))
    var = VAR
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    logs = var / "logs"
    logs.mkdir()
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    (var / "mosquitto.conf").write_text(
        "listener 18830 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    env = {"PYTHONPATH": str(ROOT)}
    try:
        procs.append(_start([mosq, "-c", str(var / "mosquitto.conf")], logs / "mosquitto.log"))
        _wait_port(18830)
        procs.append(_start(_edged(*MODBUS_SIM), logs / "sim-modbus.log"))
        procs.append(_start(_edged(*MBUS_SIM), logs / "sim-mbus.log"))
        _wait_port(15020)
        _wait_port(15100)
        subprocess.run(
            _edged("license", "demo-trial", "--dir", str(var / "licences")),
            check=True,
            env={**os.environ, **env},
        )
        procs.append(_start(_edged("run", "-c", str(DEMO / "edged.toml")), logs / "edged.log", env))
        _wait_port(19000)
        procs.append(_start(_edged(*OCPP_SIM), logs / "sim-ocpp.log"))
        print(
            f"demo: broker 127.0.0.1:18830, logs in {logs}; readings follow (Ctrl-C stops)",
            flush=True,
        )
        with contextlib.suppress(TimeoutError, KeyboardInterrupt):
            asyncio.run(_watch(18830, args.duration, start))
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
