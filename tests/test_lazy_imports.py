"""A daemon loads the protocol stacks its configuration uses, not the others."""

from __future__ import annotations

import subprocess
import sys


def run_python(code: str) -> str:
    """What a fresh interpreter prints running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout


def test_daemon_modules_do_not_load_server_stacks_or_ocpp() -> None:
    # What `edged run` imports before it reads the config; the Modbus server (pymodbus'
    # server side pulls in aiohttp), OCPP and WebSockets load only when configured.
    code = (
        "import sys, edged.cli, edged.app, edged.status\n"
        "heavy = ('aiohttp', 'pymodbus.server', 'ocpp', 'websockets')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy"
        " or m.startswith('pymodbus.server')))\n"
    )
    out = run_python(code)
    assert out.strip() == "[]", out


def test_modbus_tcp_polling_does_not_load_pymodbus() -> None:
    # Modbus TCP polls on the lean client (drivers.modbus.tcp); pymodbus serves serial lines.
    code = (
        "import sys, edged.app, drivers.modbus.driver\n"
        "from drivers.modbus.tcp import TcpLink\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pymodbus'))\n"
    )
    out = run_python(code)
    assert out.strip() == "[]", out


def test_built_in_drivers_load_without_reading_package_metadata() -> None:
    # A connection of a built-in driver does not scan the installed distributions' entry
    # points (asked once per connection); a third-party name still finds them.
    code = (
        "import sys, edged.cli, edged.app\n"
        "from edged import api\n"
        "drivers = [api.get('modbus') for _ in range(3)]\n"
        "print('importlib.metadata' in sys.modules, type(drivers[0]).__name__)\n"
        "print('modbus' in api.available(), 'importlib.metadata' in sys.modules)\n"
    )
    out = run_python(code)
    assert out.split("\n")[:2] == ["False ModbusDriver", "True True"], out
