"""``make demo``: a local broker, simulated devices and the daemon, with readings printed.

Everything runs on loopback with the demo configuration in ``config/demo/``. The trial
licence is signed with the built-in TEST key, which the demo daemon trusts because it
is started with ``EDGED_TRUST_TEST_KEYS=1``.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "config" / "demo"


def _edged(*args: str) -> list[str]:
    return [sys.executable, "-m", "edged.cli", *args]


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
        args, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
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


def _summary(values: dict[str, dict[str, object]]) -> str:
    names = [n for n in _PREFERRED if n in values]
    names += [n for n in values if n not in names][: max(0, 4 - len(names))]
    parts = []
    for name in names[:4]:
        v = values[name]
        unit = f" {v['unit']}" if v.get("unit") else ""
        parts.append(f"{name}={v['value']:g}{unit}")
    return ", ".join(parts)


async def _watch(port: int, duration: float | None, start: float) -> int:
    import aiomqtt

    seen = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier="edged-demo-viewer") as client:
        await client.subscribe("edged/#", qos=1)
        async with asyncio.timeout(duration):
            async for msg in client.messages:
                topic = str(msg.topic)
                raw = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
                if not raw.startswith(b"{"):
                    print(f"{topic}: {raw.decode(errors='replace')}")
                    continue
                body = json.loads(raw)
                if "values" not in body:
                    print(f"{topic}: {body}")
                    continue
                seen += 1
                vals = _summary(body["values"])
                print(
                    f"+{time.monotonic() - start:5.1f}s {body['device']:<8} seq={body['seq']:<5} "
                    f"{vals}",
                    flush=True,
                )
    return seen


def main(argv: list[str] | None = None) -> int:
    """Run the demo until Ctrl-C (or for --duration seconds)."""
    ap = argparse.ArgumentParser(prog="edged-demo")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = ap.parse_args(argv)
    start = time.monotonic()
    var = DEMO / "var"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    logs = var / "logs"
    logs.mkdir()
    mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    (var / "mosquitto.conf").write_text(
        "listener 18830 127.0.0.1\nallow_anonymous true\npersistence false\n"
    )
    procs: list[subprocess.Popen[bytes]] = []
    env = {"EDGED_TRUST_TEST_KEYS": "1"}
    try:
        procs.append(_start([mosq, "-c", str(var / "mosquitto.conf")], logs / "mosquitto.log"))
        _wait_port(18830)
        procs.append(
            _start(
                _edged(
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
                ),
                logs / "sim-modbus.log",
            )
        )
        _wait_port(15020)
        subprocess.run(
            _edged("license", "demo-trial", "--dir", str(var / "licences")),
            check=True,
            env={**os.environ, **env},
        )
        procs.append(_start(_edged("run", "-c", str(DEMO / "edged.toml")), logs / "edged.log", env))
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
