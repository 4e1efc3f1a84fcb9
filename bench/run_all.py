"""`make bench`: run every benchmark in turn and print its figures with its setup.

Each bench is its own script (see bench/*.py); this runner only sequences them so the
figures in README can be reproduced with one command. Pass names to run a subset:
``python bench/run_all.py modbus_fleet outbox_drain``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHES: dict[str, list[list[str]]] = {
    "modbus_fleet": [
        ["--count", "100"],
        ["--count", "1000"],
        ["--count", "2000"],
        ["--inprocess", "--count", "5000"],
        ["--floor", "--count", "1000"],
    ],
    "outbox_drain": [["--records", "1000000"]],
    "kill9_soak": [["--cycles", "100"], ["--flap", "60"]],
    "mbus_decode": [[]],
    "mbus_bus": [["--meters", "20"]],
    "ocpp_fleet": [["--chargers", "1000", "--interval", "10"]],
    "modbus_server": [["--clients", "50", "--rate", "10", "--points", "100"]],
    "web_clients": [["--count", "1000", "--clients", "20"]],
    "loadmgmt": [[]],
}


def main(argv: list[str]) -> int:
    """Run the named benches (default: all); return non-zero if any failed."""
    names = argv or list(BENCHES)
    failed = []
    for name in names:
        for args in BENCHES[name]:
            cmd = [sys.executable, str(HERE / f"{name}.py"), *args]
            print(f"\n=== {name} {' '.join(args)}", flush=True)
            t0 = time.monotonic()
            rc = subprocess.call(cmd)
            print(f"=== {name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
            if rc != 0:
                failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
