"""`edged modbus read` and `edged modbus scan` against the real simulator over TCP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.modbus import codec, profile
from drivers.modbus.simulator import Meter, Simulator
from edged.cli import main
from tests.conftest import free_port, wait_port
from tests.daemon import Proc, modbus_sim_cmd


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    proc = Proc(modbus_sim_cmd(port, meters=2), tmp_path / "sim.log")
    wait_port(port)
    yield port
    proc.stop()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_read_through_a_profile_prints_canonical_values(
    sim: int, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "modbus", "read", "--host", "127.0.0.1", "--port", str(sim), "--unit", "2",
        "--profile", "eastron_sdm630",
    )  # fmt: skip
    print(out)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"unit 2 at tcp://127.0.0.1:{sim}, profile eastron_sdm630"
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines[1:]}
    assert 200 < float(rows["voltage_l1"][0]) < 260 and rows["voltage_l1"][1] == "V"
    assert float(rows["energy_import"][0]) > 0 and rows["energy_import"][1] == "Wh"


def test_read_registers_with_type_and_word_order(
    sim: int, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("modbus", "read", "--host", "127.0.0.1", "--port", str(sim), "--table", "input",
            "--register", "0", "--type", "f32", "--count", "2", "--json")  # fmt: skip
    code, out, err = run(capsys, *base)
    assert code == 0, err
    doc = json.loads(out)
    assert [v["register"] for v in doc["values"]] == [0, 2]
    first = doc["values"][0]
    assert 200 < first["value"] < 260  # voltage_l1 of the SDM630, float32 high word first
    assert first["value"] == pytest.approx(codec.decode(first["registers"], "f32"))
    # The same words read with the other word order decode to something else entirely.
    code, out, _ = run(capsys, *base, "--word-order", "little")
    swapped = json.loads(out)["values"][0]
    # Swapped, the random low word of the voltage is the exponent: now and then a NaN.
    assert swapped["value"] == pytest.approx(
        codec.decode(swapped["registers"], "f32", word_order="little"), nan_ok=True
    )
    assert not 200 < swapped["value"] < 260
    code, out, _ = run(capsys, *base[:-1])
    assert out.splitlines()[0].endswith("input registers, f32, word order big, byte order big")
    reg, hi, lo, value = out.splitlines()[1].split()
    assert reg == "0" and value == f"{codec.decode([int(hi, 16), int(lo, 16)], 'f32'):.10g}"


def test_read_errors_are_one_line(sim: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "modbus", "read", "--host", "127.0.0.1", "--port", str(free_port()),
                       "--register", "0")  # fmt: skip
    assert code == 1
    assert err.strip().startswith("edged: cannot connect to tcp://127.0.0.1:")
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "modbus", "read", "--host", "127.0.0.1", "--port", str(sim),
                       "--profile", "no_such_meter")  # fmt: skip
    assert code == 1 and "no profile 'no_such_meter' (shipped: " in err


def test_scan_lists_the_units_that_answer(sim: int, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "modbus", "scan", "--host", "127.0.0.1", "--port", str(sim),
                         "--last", "6", "--table", "input", "--timeout", "0.3")  # fmt: skip
    print(out)
    assert code == 0, err
    assert out.splitlines() == [
        "unit 1 answers",
        "unit 2 answers",
        f"2 unit(s) found on tcp://127.0.0.1:{sim} (1-6)",
    ]


async def test_scan_and_read_on_a_serial_bus(capsys: pytest.CaptureFixture[str]) -> None:
    prof = profile.load(profile.shipped()["carlo_gavazzi_em24"])
    m3, m9 = Meter(prof, unit=3), Meter(prof, unit=9)
    m9.fixed["power_active"] = 4321.5
    async with Simulator() as sim:
        path = await sim.add_rtu_pty([m3, m9])
        # A pty keeps no even parity on this kernel: 8N1.
        bus = ["--device", path, "--baudrate", "19200", "--parity", "N", "--timeout", "0.2"]
        code = await asyncio.to_thread(main, ["modbus", "scan", *bus, "--last", "12"])
        scanned = capsys.readouterr()
        rc_read = await asyncio.to_thread(
            main, ["modbus", "read", *bus, "--unit", "9", "--profile", "carlo_gavazzi_em24"]
        )
        read = capsys.readouterr()
    print(scanned.out, read.out)
    assert code == 0, scanned.err
    assert scanned.out.splitlines() == [
        "unit 3 answers",
        "unit 9 answers",
        f"2 unit(s) found on serial://{path} (1-12)",
    ]
    assert rc_read == 0, read.err
    rows = {ln.split()[0]: ln.split()[1:] for ln in read.out.splitlines()[1:]}
    assert rows["power_active"] == ["4321.5", "W"]
