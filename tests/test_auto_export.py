"""Auto export: every finished day once, to a directory and by HTTP POST, across failures."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from edged.energyconfig import ExportConfig
from edged.energystore import EnergyStore, Row
from edged.export import COLUMNS, AutoExport, periods

DAY = datetime(2026, 11, 2, tzinfo=UTC).timestamp()


class Receiver:
    """A local HTTP endpoint that refuses the first ``fail`` posts with 503."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.posts = 0
        self.files: Counter[str] = Counter()
        self.bodies: dict[str, str] = {}
        self.auth: set[str] = set()

    async def handle(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.posts <= self.fail:
            return web.Response(status=503, text="busy")
        name = request.headers["X-Edged-Export"]
        self.files[name] += 1
        self.bodies[name] = await request.text()
        self.auth.add(request.headers.get("Authorization", ""))
        return web.Response(status=201)


async def serve(receiver: Receiver) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/upload", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


def fill(store: EnergyStore, days: int) -> None:
    rows = [
        Row("grid", "energy_import", DAY + 900 * k, DAY + 900 * (k + 1), float(k), 500.0, "ok")
        for k in range(96 * days)
    ]
    store.save((), rows, ())


async def test_auto_export_delivers_every_file_exactly_once(tmp_path: Path) -> None:
    receiver = Receiver(fail=3)
    runner, port = await serve(receiver)
    try:
        path = tmp_path / "energy.sqlite"
        store = EnergyStore(path)
        fill(store, 3)
        cfg = ExportConfig(
            schedule=("daily",),
            directory=tmp_path / "out",
            url=f"http://127.0.0.1:{port}/upload",
            token="s3cret",
            ca_file=None,
            points=(),
            retry_initial=0.05,
            retry_max=0.2,
        )
        now = [DAY + 60.0]
        exporter = AutoExport(cfg, store, lambda: now[0])
        assert await exporter.run_once() == 0  # enabled now: nothing has ended yet
        now[0] = DAY + 3 * 86400 + 600
        assert await exporter.run_once() == 6  # 3 days x (directory + HTTP)
        names = ["loadprofile-2026-11-02.csv", "loadprofile-2026-11-03.csv"]
        names.append("loadprofile-2026-11-04.csv")
        assert receiver.posts == 3 + 3  # three refused, then each file once
        assert receiver.files == Counter({n: 1 for n in names})
        assert receiver.auth == {"Bearer s3cret"}
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
        table = list(csv.DictReader(io.StringIO(receiver.bodies[names[1]])))
        assert len(table) == 96 and tuple(table[0]) == COLUMNS
        assert table[0]["start"] == "2026-11-03T00:00:00.000Z"
        # Restart: a new exporter on the same store sends nothing again.
        store.close()
        store = EnergyStore(path)
        again = AutoExport(cfg, store, lambda: now[0])
        assert await again.run_once() == 0
        assert receiver.posts == 6
        # The next day is delivered once, as soon as it has ended.
        fill(store, 4)
        now[0] = DAY + 4 * 86400 + 600
        assert await again.run_once() == 2
        assert receiver.files["loadprofile-2026-11-05.csv"] == 1
        assert max(receiver.files.values()) == 1
    finally:
        await runner.cleanup()


async def test_an_endpoint_that_is_down_is_retried_until_it_answers(tmp_path: Path) -> None:
    import asyncio
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = EnergyStore(tmp_path / "energy.sqlite")
    fill(store, 1)
    cfg = ExportConfig(
        ("daily",), None, f"http://127.0.0.1:{port}/upload", None, None, (), 0.05, 0.2
    )
    now = [DAY + 60.0]
    exporter = AutoExport(cfg, store, lambda: now[0])
    await exporter.run_once()
    now[0] = DAY + 86400 + 600
    task = asyncio.create_task(exporter.run_once())
    await asyncio.sleep(1.0)  # connection refused meanwhile: retried, not given up
    assert not task.done()
    receiver = Receiver(fail=0)
    app = web.Application()
    app.router.add_post("/upload", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        assert await asyncio.wait_for(task, 30) == 1
        assert receiver.files == Counter({"loadprofile-2026-11-02.csv": 1})
    finally:
        await runner.cleanup()


def test_periods_daily_and_monthly() -> None:
    since = datetime(2026, 10, 30, 12, tzinfo=UTC).timestamp()
    until = datetime(2026, 11, 2, 1, tzinfo=UTC).timestamp()
    got = [name for name, _, _ in periods(("daily", "monthly"), since, until)]
    assert got == [
        "loadprofile-2026-10-30.csv",
        "loadprofile-2026-10-31.csv",
        "loadprofile-2026-11-01.csv",
        "loadprofile-2026-10.csv",
    ]


def test_auto_export_without_a_target_is_a_config_error(tmp_path: Path) -> None:
    import pytest

    from edged import config as configmod
    from edged.energyconfig import check_export
    from edged.errors import ConfigError

    main = tmp_path / "edged.toml"
    main.write_text(
        f'[gateway]\nid = "gw"\ndata_dir = "{tmp_path}"\n\n[features]\nauto_export = true\n'
        '\n[export]\nschedule = ["daily", "monthly"]\n'
    )
    cfg = configmod.load(main)
    assert cfg.export is not None and cfg.export.schedule == ("daily", "monthly")
    with pytest.raises(ConfigError) as err:
        check_export(True, cfg.export, str(main))
    assert err.value.key == "export.directory"
    assert err.value.line == 8  # the [export] table
