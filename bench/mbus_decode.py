"""M-Bus decode throughput: frames decoded per second over the conformance corpus.

Each round decodes every frame of ``tests/drivers/mbus/corpus/test-frames`` (link layer and
application layer, ``decode_frame``). Run: ``.venv/bin/python bench/mbus_decode.py [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from drivers.mbus.telegram import decode_frame, from_hex  # noqa: E402
from tests.drivers.mbus import CORPUS  # noqa: E402

FRAMES = CORPUS / "test-frames"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to measure")
    args = parser.parse_args()
    frames = [from_hex(p.read_text()) for p in sorted(FRAMES.glob("*.hex"))]
    if not frames:
        print(f"no frames under {FRAMES}", file=sys.stderr)
        return 1
    records = sum(len(decode_frame(f).records) for f in frames)
    size = sum(len(f) for f in frames)
    for f in frames:  # warm-up
        decode_frame(f)
    count = 0
    start = time.perf_counter()
    deadline = start + args.seconds
    while time.perf_counter() < deadline:
        for f in frames:
            decode_frame(f)
        count += len(frames)
    elapsed = time.perf_counter() - start
    rate = count / elapsed
    print(
        f"setup: Python {platform.python_version()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared, one process; corpus {len(frames)} frames, "
        f"{size} bytes, {records} records ({size / len(frames):.0f} bytes/frame)"
    )
    print(
        f"mbus decode: {rate:,.0f} frames/s, {rate * records / len(frames):,.0f} records/s, "
        f"{1e6 / rate:.1f} us/frame ({count} frames in {elapsed:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
