"""The Prometheus endpoint, fetched over real HTTP."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edged.metrics import Metrics, _ProcessCollector, metric_name


def fetch(port: int, path: str = "/metrics", method: str = "GET") -> tuple[int, str, str]:
    """Status, content type and body of one HTTP request (blocking; run in a thread)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_served_over_http_in_prometheus_text_format() -> None:
    metrics = Metrics()
    metrics.count("polls", "modbus", "meter-1")
    metrics.count("polls", "modbus", "meter-1", n=4)
    metrics.count("poll_errors", "mbus", "heat-2")
    metrics.count("frame_rejected", "ocpp")
    metrics.observe("poll", "modbus", 0.003)
    metrics.observe("poll", "modbus", 0.2)
    metrics.set_gauge("outbox_depth", 17)
    metrics.set_gauge("uplink_connected", 1)
    metrics.set_gauge("devices", 3, state="online")
    metrics.set_gauge("devices", 1, state="unlicensed")
    await metrics.start("127.0.0.1", 0)
    try:
        assert metrics.port
        status, ctype, body = await asyncio.to_thread(fetch, metrics.port)
    finally:
        await metrics.close()
    assert status == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    got = samples(body)
    assert got[("edged_polls_total", (("device", "meter-1"), ("driver", "modbus")))] == 5
    assert got[("edged_poll_errors_total", (("device", "heat-2"), ("driver", "mbus")))] == 1
    assert got[("edged_frame_rejected_total", (("device", ""), ("driver", "ocpp")))] == 1
    assert got[("edged_poll_seconds_count", (("driver", "modbus"),))] == 2
    assert got[("edged_poll_seconds_bucket", (("driver", "modbus"), ("le", "0.005")))] == 1
    assert got[("edged_poll_seconds_sum", (("driver", "modbus"),))] == pytest.approx(0.203)
    assert got[("edged_outbox_depth", ())] == 17
    assert got[("edged_uplink_connected", ())] == 1
    assert got[("edged_devices", (("state", "online"),))] == 3
    assert got[("edged_devices", (("state", "unlicensed"),))] == 1
    assert "# HELP edged_outbox_depth Records waiting in the outbox." in body
    assert not any(name.endswith("_created") for name, _ in got)
    # The process collector reports memory, which operators watch on small gateways.
    assert got[("process_resident_memory_bytes", ())] > 0


async def test_gauges_follow_updates_between_scrapes() -> None:
    metrics = Metrics()
    await metrics.start("127.0.0.1", 0)
    assert metrics.port
    try:
        metrics.set_gauge("outbox_depth", 5)
        first = samples((await asyncio.to_thread(fetch, metrics.port))[2])
        metrics.set_gauge("outbox_depth", 0)
        second = samples((await asyncio.to_thread(fetch, metrics.port))[2])
    finally:
        await metrics.close()
    assert first[("edged_outbox_depth", ())] == 5
    assert second[("edged_outbox_depth", ())] == 0


async def test_other_paths_and_methods() -> None:
    metrics = Metrics()
    await metrics.start("127.0.0.1", 0)
    assert metrics.port
    try:
        assert (await asyncio.to_thread(fetch, metrics.port, "/nope"))[0] == 404
        assert (await asyncio.to_thread(fetch, metrics.port, "/metrics", "POST"))[0] == 405
        head = await asyncio.to_thread(fetch, metrics.port, "/metrics", "HEAD")
        assert head[0] == 200 and head[2] == ""
        reader, writer = await asyncio.open_connection("127.0.0.1", metrics.port)
        writer.write(b"garbage without end of head")
        writer.write_eof()
        reply = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert reply.startswith(b"HTTP/1.1 400 ")
        # Still serving afterwards.
        assert (await asyncio.to_thread(fetch, metrics.port))[0] == 200
    finally:
        await metrics.close()
    with pytest.raises(OSError):
        await asyncio.to_thread(fetch, metrics.port)


def test_gauge_labels_are_fixed_at_first_use() -> None:
    metrics = Metrics()
    metrics.set_gauge("devices", 1, state="online")
    with pytest.raises(ValueError, match="gauge devices has labels"):
        metrics.set_gauge("devices", 1)


def test_two_instances_do_not_share_series() -> None:
    a, b = Metrics(), Metrics()
    a.count("polls", "modbus", "m1")
    assert b"edged_polls_total" in a.render()
    assert b"edged_polls_total" not in b.render()


def test_metric_names_are_sanitised() -> None:
    assert metric_name("poll-error") == "poll_error"
    assert metric_name("9lives") == "_9lives"
    metrics = Metrics()
    metrics.count("frame rejected!", "mbus")
    assert b"edged_frame_rejected_total" in metrics.render()


def test_process_metrics_without_proc_stat(tmp_path: Path) -> None:
    # Under ProcSubset=pid only /proc/<pid> is visible; /proc/stat (boot time) is not.
    fake_proc = tmp_path / "proc"
    (fake_proc / "self").mkdir(parents=True)
    (fake_proc / "self" / "stat").write_bytes(Path("/proc/self/stat").read_bytes())
    registry = CollectorRegistry()
    _ProcessCollector(proc=str(fake_proc), registry=registry)
    text = generate_latest(registry).decode()
    got = samples(text)
    assert got[("process_resident_memory_bytes", ())] > 0
    # The same start time as the stock collector computes from the full /proc
    # (which has the boot time only to the second).
    stock = CollectorRegistry()
    ProcessCollector(registry=stock)
    expected = samples(generate_latest(stock).decode())[("process_start_time_seconds", ())]
    assert got[("process_start_time_seconds", ())] == pytest.approx(expected, abs=2.0)


async def test_serve_runs_as_a_task_until_cancelled() -> None:
    metrics = Metrics()
    metrics.set_gauge("licence_capacity", 10)
    task = asyncio.create_task(metrics.serve("127.0.0.1", 0))
    while metrics.port is None:  # noqa: ASYNC110 (the port appears once bound)
        await asyncio.sleep(0.01)
    status, _, body = await asyncio.to_thread(fetch, metrics.port)
    assert status == 200 and "edged_licence_capacity 10.0" in body
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(OSError):
        await asyncio.to_thread(fetch, metrics.port)


async def test_running_totals_are_counters_since_this_process_started(tmp_path: Path) -> None:
    """Drops of an earlier life of the outbox stay in `edged status`, not in the counter."""
    from edged.live import LiveValues
    from edged.model import Reading, Record
    from edged.outbox import Outbox
    from edged.status import StatusService
    from edged.supervisor import Supervisor
    from edged.windows import Windows

    path = tmp_path / "outbox.db"
    earlier = Outbox(path, max_records=3, max_bytes=1 << 20)
    await earlier.open()
    for i in range(10):
        earlier.put(
            Record(
                "m1", 1_700_000_000.0 + i, 1.0, {"power_active": Reading(float(i), 1_700_000_000.0)}
            )
        )
    await earlier.flush()
    await earlier.close()

    outbox = Outbox(path, max_records=3, max_bytes=1 << 20)
    await outbox.open()
    try:
        assert outbox.stats().dropped == 7
        metrics = Metrics()
        service = StatusService(
            Supervisor(metrics, lambda s: None), LiveValues(), Windows(), metrics
        )
        service.attach_outbox(outbox)
        service.refresh_gauges()
        got = samples(metrics.render().decode())
        assert got[("edged_outbox_dropped_total", ())] == 0
        for i in range(5):
            outbox.put(
                Record(
                    "m1",
                    1_700_000_100.0 + i,
                    1.0,
                    {"power_active": Reading(float(i), 1_700_000_100.0)},
                )
            )
        await outbox.flush()
        service.refresh_gauges()
        service.refresh_gauges()  # a second refresh adds nothing new
        got = samples(metrics.render().decode())
        assert got[("edged_outbox_dropped_total", ())] == 5
        families = {
            f.name: f.type for f in text_string_to_metric_families(metrics.render().decode())
        }
        assert families["edged_outbox_dropped"] == "counter"
        assert families["edged_throttle_dropped"] == "counter"
    finally:
        await outbox.close()


def test_advance_takes_a_smaller_total_as_a_restart() -> None:
    metrics = Metrics()
    metrics.advance("uplink_acked", 10)
    metrics.advance("uplink_acked", 4)  # the counting part was replaced and counts anew
    metrics.advance("uplink_acked", 6)
    assert samples(metrics.render().decode())[("edged_uplink_acked_total", ())] == 16
