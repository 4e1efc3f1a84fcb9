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
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edged import payload
from edged.model import Reading, unit_of

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "demo"
# Runtime state (outbox, gateway key, licences, logs): git-ignored, rebuilt by every run.
VAR = ROOT / "var" / "demo"


@dataclass(frozen=True)
class Ports:
    """The demo's loopback ports; ``--base-port`` moves them all so two demos can run."""

    mqtt: int = 18830
    modbus: int = 15020
    mbus: int = 15100
    ocpp: int = 19000
    metrics: int = 19108

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """Five consecutive ports from ``base``."""
        return cls(base, base + 1, base + 2, base + 3, base + 4)

    def all(self) -> tuple[int, ...]:
        """Every port the demo listens on."""
        return (self.mqtt, self.modbus, self.mbus, self.ocpp, self.metrics)


DEFAULT_PORTS = Ports()


# The simulated site: two electricity meters behind one Modbus TCP gateway, a heat meter
# behind an M-Bus-to-TCP converter (paced at 2400 baud) and an OCPP 2.0.1 charger.
def modbus_sim(ports: Ports) -> tuple[str, ...]:
    """`edged sim modbus` for the two electricity meters."""
    return (
        "sim", "modbus", "--profile", "eastron_sdm630", "--count", "2",
        "--units-per-port", "2", "--port", str(ports.modbus),
    )  # fmt: skip


def mbus_sim(ports: Ports) -> tuple[str, ...]:
    """`edged sim mbus` for the heat meter behind an M-Bus-to-TCP converter."""
    return ("sim", "mbus", "--tcp-port", str(ports.mbus), "--slaves", "1", "--baud", "2400")


def ocpp_sim(ports: Ports) -> tuple[str, ...]:
    """`edged sim ocpp` for the charger."""
    return (
        "sim", "ocpp", "--url", f"ws://127.0.0.1:{ports.ocpp}", "--count", "1",
        "--prefix", "CP", "--version", "2.0.1", "--interval", "2", "--quiet",
    )  # fmt: skip


def demo_config(ports: Ports, var: Path) -> Path:
    """The demo configuration with its ports and state directory; the shipped file when both
    are the defaults, else a copy in ``var``."""
    shipped = DEMO / "edged.toml"
    if ports == DEFAULT_PORTS and var == VAR:
        return shipped
    text = shipped.read_text()
    for old, new in zip(DEFAULT_PORTS.all(), ports.all(), strict=True):
        text = re.sub(rf"\b{old}\b", str(new), text)
    text = text.replace('"../../var/demo', f'"{var}')
    out = var / "edged.toml"
    out.write_text(text)
    return out


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
    # Each child in a session of its own: Ctrl-C in the terminal reaches only the demo,
    # which then stops the daemon first and the broker last (see main's finally).
    with log.open("ab") as fh:
        return subprocess.Popen(
            args,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            start_new_session=True,
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
    """Refuse to start when another demo (or anything) holds one of the demo's ports."""
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise SystemExit(
                    f"demo: port {port} on 127.0.0.1 is in use (is another demo running? "
                    "give this one other ports with --base-port)"
                ) from None


def _stop(p: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or for --duration seconds)."""
    ap = argparse.ArgumentParser(prog="edged-demo")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    ap.add_argument(
        "--base-port",
        type=int,
        default=None,
        metavar="PORT",
        help="use the five ports PORT..PORT+4 (MQTT, Modbus, M-Bus, OCPP, metrics) and "
        "var/demo-PORT for state, so a second demo can run beside the first "
        f"(default: {', '.join(map(str, DEFAULT_PORTS.all()))} and var/demo)",
    )
    args = ap.parse_args(argv)
    if args.base_port is not None and not 1024 <= args.base_port <= 65531:
        ap.error("--base-port must be between 1024 and 65531")
    start = time.monotonic()
    ports = DEFAULT_PORTS if args.base_port is None else Ports.from_base(args.base_port)
    _ports_free(ports.all())
    var = VAR if args.base_port is None else VAR.with_name(f"demo-{args.base_port}")
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    logs = var / "logs"
    logs.mkdir()
    config = demo_config(ports, var)
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    (var / "mosquitto.conf").write_text(
        f"listener {ports.mqtt} 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    daemon: subprocess.Popen[bytes] | None = None
    env = {"PYTHONPATH": str(ROOT)}
    try:
        procs.append(_start([mosq, "-c", str(var / "mosquitto.conf")], logs / "mosquitto.log"))
        _wait_port(ports.mqtt)
        procs.append(_start(_edged(*modbus_sim(ports)), logs / "sim-modbus.log"))
        procs.append(_start(_edged(*mbus_sim(ports)), logs / "sim-mbus.log"))
        _wait_port(ports.modbus)
        _wait_port(ports.mbus)
        subprocess.run(
            _edged("license", "demo-trial", "--dir", str(var / "licences")),
            check=True,
            env={**os.environ, **env},
        )
        daemon = _start(_edged("run", "-c", str(config)), logs / "edged.log", env)
        _wait_port(ports.ocpp)
        procs.append(_start(_edged(*ocpp_sim(ports)), logs / "sim-ocpp.log"))
        print(
            f"demo: broker 127.0.0.1:{ports.mqtt}, logs in {logs}; readings follow (Ctrl-C stops)",
            flush=True,
        )
        with contextlib.suppress(TimeoutError, KeyboardInterrupt):
            asyncio.run(_watch(ports.mqtt, args.duration, start))
    finally:
        # The daemon first, while the broker still takes what it flushes on the way out;
        # then the simulators and the broker.
        if daemon is not None:
            with contextlib.suppress(KeyboardInterrupt):
                _stop(daemon, 15.0)
        for p in reversed(procs):
            with contextlib.suppress(KeyboardInterrupt):
                _stop(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
