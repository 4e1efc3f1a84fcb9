"""``edged mbus``: decode a file, scan and read a simulated bus."""

from __future__ import annotations

import asyncio
import json

import pytest

from drivers.mbus.cli import main
from drivers.mbus.simulator import Simulator, generated_slaves
from tests.drivers.mbus import CORPUS

FRAME = CORPUS / "test-frames" / "kamstrup_multical_601.hex"


def test_decode_prints_records_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", str(FRAME)]) == 0
    text = capsys.readouterr().out
    assert "manufacturer KAM" in text and "Energy: 37351000 Wh  -> energy_heat" in text
    assert main(["decode", str(FRAME), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["header"]["manufacturer"] == "KAM"
    assert len(data["records"]) == 27


def test_decode_several_files_reports_each_and_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = CORPUS / "error-frames" / "too_short_header.hex"
    assert main(["decode", str(FRAME), str(bad), "--json"]) == 1
    out = capsys.readouterr()
    docs = json.loads(out.out)
    assert [d["file"] for d in docs] == [str(FRAME)]
    assert "too_short_header.hex" in out.err


def test_bad_arguments_exit_with_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["scan", "--tcp", "nohostport"])
    assert caught.value.code == 2
    assert "host:port" in capsys.readouterr().err


async def test_scan_and_read_a_simulated_bus(capsys: pytest.CaptureFixture[str]) -> None:
    sim = Simulator(generated_slaves(3, telegrams=2), baudrate=9600)
    port = await sim.start_tcp()
    bus = ["--tcp", f"127.0.0.1:{port}", "--baud", "9600", "--parity", "N", "--timeout", "0.05"]
    try:
        rc = await asyncio.to_thread(
            main, ["scan", "--secondary", "--mask", "1000000FFFFFFFFF", *bus]
        )
        scanned_io = capsys.readouterr()
        scanned = scanned_io.out
        rc_primary = await asyncio.to_thread(main, ["scan", *bus, "--last", "30"])
        primary_io = capsys.readouterr()
        primary = primary_io.out
        rc_read = await asyncio.to_thread(main, ["read", "10000001FFFFFFFF", *bus])
        read = capsys.readouterr().out
        rc_dead = await asyncio.to_thread(main, ["read", "9", *bus, "--retries", "0"])
        dead = capsys.readouterr().err
    finally:
        await sim.close()
    assert rc == rc_primary == rc_read == 0
    assert "3 slaves found" in scanned and "1000000114870104  manufacturer EDG" in scanned
    assert "primary   2  secondary 1000000114870104" in primary
    # progress goes to stderr, so stdout stays the list of slaves
    assert "scan: found 1000000114870104 (2 so far)" in scanned_io.err
    assert "scan: address 25 (25/31), 3 found so far" in primary_io.err
    assert "telegram 2 of 2" in read and "id 10000001  manufacturer EDG" in read
    assert rc_dead == 1 and "no answer" in dead
