"""`edged mbus scan` output (issue 18): meters as found, progress with times, medium names."""

from __future__ import annotations

import asyncio

import pytest

from drivers.mbus.address import SecondaryAddress
from drivers.mbus.cli import main
from drivers.mbus.master import Master
from drivers.mbus.simulator import Simulator, generated_slaves
from drivers.mbus.transport import LineSettings, LinkSpec


async def test_secondary_scan_reports_each_slave_as_it_is_found() -> None:
    sim = Simulator(generated_slaves(3), baudrate=9600)
    port = await sim.start_tcp()
    events: list[tuple[str, str]] = []
    link = await LinkSpec("tcp", LineSettings(9600, "N"), host="127.0.0.1", port=port).open()
    try:
        master = Master(link, timeout=0.05)
        found = await master.scan_secondary(
            SecondaryAddress.parse("1000000FFFFFFFFF"),
            progress=lambda text: events.append(("progress", text)),
            on_found=lambda a: events.append(("found", str(a))),
        )
    finally:
        await link.close()
        await sim.close()
    assert [e[1] for e in events if e[0] == "found"] == [str(a) for a in found]
    assert len(found) == 3
    first = next(i for i, e in enumerate(events) if e[0] == "found")
    # The search went on after the first slave was reported, and said where it was.
    assert any(e[0] == "progress" and e[1].startswith("searching ") for e in events[first:])
    assert events[0] == ("progress", "searching 10000000FFFFFFFF (1/10), 0 found so far")


async def test_scan_prints_medium_names_and_times(capsys: pytest.CaptureFixture[str]) -> None:
    sim = Simulator(generated_slaves(3), baudrate=9600)
    port = await sim.start_tcp()
    bus = ["--tcp", f"127.0.0.1:{port}", "--baud", "9600", "--parity", "N", "--timeout", "0.05"]
    try:
        rc_sec = await asyncio.to_thread(
            main, ["scan", "--secondary", "--mask", "1000000FFFFFFFFF", *bus]
        )
        sec = capsys.readouterr()
        rc_pri = await asyncio.to_thread(main, ["scan", *bus, "--last", "30"])
        pri = capsys.readouterr()
    finally:
        await sim.close()
    print(sec.out, sec.err, pri.out, pri.err)
    assert rc_sec == rc_pri == 0
    meters = [ln for ln in sec.out.splitlines() if "manufacturer" in ln]
    assert len(meters) == 3
    assert all(" medium " in ln and "(0x" in ln for ln in meters)
    assert not any(ln.split(" medium ")[1].startswith("0x") for ln in meters)  # a name first
    assert "scan: searching 1000000" in sec.err and " s elapsed" in sec.err
    assert "scan: address 25 (25/31), 3 found so far, " in pri.err
    assert " s elapsed, about " in pri.err and " s left" in pri.err
    primaries = [ln for ln in pri.out.splitlines() if ln.startswith("primary")]
    assert len(primaries) == 3 and all("  medium " in ln for ln in primaries)
    assert pri.out.splitlines()[-1].startswith("3 slaves found (")


def test_primary_range_is_0_to_250(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["scan", "--tcp", "127.0.0.1:1", "--last", "260"])
    assert caught.value.code == 2
    assert "--first/--last: primary addresses are 0-250 (251-255 are reserved), got 0-260" in (
        capsys.readouterr().err
    )
