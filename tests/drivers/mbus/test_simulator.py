"""The M-Bus simulator: collisions, real frames, pacing, secondary addressing, the command."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.mbus import frame as fr
from drivers.mbus import telegram as tg
from drivers.mbus.address import SecondaryAddress
from drivers.mbus.master import Master, Probe
from drivers.mbus.simulator import (
    Simulator,
    collide,
    generated_slaves,
    read_hex,
    slaves_from_dir,
)
from drivers.mbus.transport import transmit_time
from tests.drivers.mbus import CORPUS

FRAMES = CORPUS / "test-frames"
ROOT = Path(__file__).resolve().parents[3]
CORPUS_FILES = sorted(FRAMES.glob("*.hex"))


def test_simultaneous_answers_garble_into_something_that_is_not_a_frame() -> None:
    ack = fr.encode(fr.AckFrame())
    for n in (2, 3, 5):
        garbage = collide([ack] * n)
        assert garbage and garbage != ack
        assert not isinstance(fr.scan(garbage), fr.Complete)
    one = fr.encode(fr.LongFrame(fr.RSP_UD, 1, 0x72, bytes(range(20))))
    two = fr.encode(fr.LongFrame(fr.RSP_UD, 2, 0x72, bytes(range(1, 21))))
    mixed = collide([one, two])
    with pytest.raises(fr.FrameError):
        fr.parse(mixed)


async def test_slaves_answer_with_real_frames_from_hex_files() -> None:
    slaves = slaves_from_dir(FRAMES, count=6)
    assert len(slaves) == 6
    sim = Simulator(slaves, baudrate=38400, pace=False)
    spec = await sim.serve("tcp")
    link = await spec.open()
    try:
        master = Master(link, timeout=0.2)
        for slave, path in zip(slaves, CORPUS_FILES, strict=False):
            original = read_hex(path)
            reading = await master.read(slave.primary)
            got = reading.frames[0]
            assert (got.ci, got.data[8:]) == (original.ci, original.data[8:]), path.name
            assert got.address == slave.primary
            header = reading.telegrams[0].header
            assert header is not None and f"{header.id:08d}" == slave.secondary.id
    finally:
        await link.close()
        await sim.close()


async def test_answers_are_paced_at_the_line_rate() -> None:
    sim = Simulator(generated_slaves(1), baudrate=2400)
    spec = await sim.serve("pty")
    link = await spec.open()
    try:
        master = Master(link)
        await master.read(1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        reading = await master.read(1)
        elapsed = loop.time() - started
    finally:
        await link.close()
        await sim.close()
    nbytes = 5 + len(fr.encode(reading.frames[0]))
    # Never faster than the line allows (a lower bound cannot flake on a busy machine).
    assert elapsed >= 0.95 * transmit_time(nbytes, 2400)


async def test_snd_nke_to_253_deselects_the_selected_slave() -> None:
    sim = Simulator(generated_slaves(2), pace=False)
    spec = await sim.serve("tcp")
    link = await spec.open()
    try:
        master = Master(link, timeout=0.05)
        target = sim.bus.slaves[1].secondary
        assert await master.probe(target) is Probe.SINGLE
        assert sim.bus.slaves[1].selected and not sim.bus.slaves[0].selected
        await master.snd_nke(fr.ADDR_NETWORK_LAYER)
        assert not sim.bus.slaves[1].selected
        assert await master.probe(SecondaryAddress("77777777")) is Probe.NOTHING
    finally:
        await link.close()
        await sim.close()


def _start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from drivers.mbus.simulator import main; sys.exit(main(sys.argv[1:]))",
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    return proc, first


@pytest.mark.parametrize("where", [["--tcp-port", "0"], ["--pty"]])
async def test_sim_command_serves_until_sigterm(where: list[str]) -> None:
    proc, banner = await asyncio.to_thread(_start, [*where, "--slaves", "3", "--baud", "9600"])
    try:
        m = re.search(r"3 slaves at 9600 baud on (tcp \S+:(\d+)|pty (\S+))", banner)
        assert m, banner
        from drivers.mbus.transport import LineSettings, LinkSpec

        if m.group(2):
            spec = LinkSpec("tcp", LineSettings(9600, "N"), host="127.0.0.1", port=int(m[2]))
        else:
            spec = LinkSpec("serial", LineSettings(9600, "N"), device=m.group(3))
        link = await spec.open()
        try:
            reading = await Master(link).read(3)
            assert reading.telegrams[0].header is not None
            assert reading.telegrams[0].header.manufacturer == "EDG"
            assert isinstance(reading.telegrams[0], tg.Telegram)
        finally:
            await link.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(proc.wait, 10)
    assert rc == 0
