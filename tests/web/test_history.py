"""The console's last hour of values: one point a minute, bounded, ending with the present."""

from __future__ import annotations

import itertools

from edged.live import LiveValues
from edged.model import Sample
from edged.web import history
from edged.web.history import History


def test_history_keeps_an_hour_per_quantity_and_ends_with_the_live_value() -> None:
    live = LiveValues()
    now = [1_800_000_000.0]
    devices = ["m1", "m2"]
    h = History(live, lambda: devices, clock=lambda: now[0])
    for minute in range(history.POINTS + 5):
        values = {"power_active": float(minute)}
        if minute % 2 == 0:
            values["voltage_l1"] = 230.0  # only every other sample carries it
        if minute >= 40:
            values["frequency"] = 50.0  # measured from minute 40 on
        live.update(Sample("m1", now[0], values))
        h.sample()
        now[0] += history.INTERVAL
    got = h.of("m1")
    power = got["power_active"]
    assert len(power) == history.POINTS  # the oldest minutes are gone
    assert [p[1] for p in power[-3:]] == [62.0, 63.0, 64.0]
    assert all(b[0] - a[0] == history.INTERVAL for a, b in itertools.pairwise(power))
    # A quantity keeps its last live value until a newer one arrives: no gap is invented.
    assert all(p[1] is not None for p in got["voltage_l1"])
    frequency = [p[1] for p in got["frequency"]]
    assert frequency[:35] == [None] * 35 and frequency[35:] == [50.0] * 25  # minutes 5..64
    assert h.of("m2") == {}  # never sent anything
    live.update(Sample("m1", now[0] + 5, {"power_active": 99.0}))
    assert h.of("m1")["power_active"][-1] == [now[0] + 5, 99.0]  # the present is appended
    devices.remove("m1")
    h.sample()
    assert "m1" not in h._series  # a device that left the config is forgotten
