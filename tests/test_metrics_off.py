"""With [metrics] off nothing is counted: no per-device series held in memory."""

from __future__ import annotations

from edged.metrics import Metrics


def test_disabled_metrics_keep_no_series() -> None:
    m = Metrics()
    m.enabled = False
    for i in range(100):
        m.count("samples", "modbus", f"m{i}")
        m.observe("poll", "modbus", 0.01)
        m.set_gauge("device_up", 1, device=f"m{i}")
        m.advance("outbox_dropped", i)
    text = m.render()
    for name in (b"edged_samples", b"edged_poll", b"edged_device_up", b"edged_outbox_dropped"):
        assert name not in text


def test_enabled_metrics_count_through_the_cached_series() -> None:
    m = Metrics()
    for _ in range(3):
        m.count("samples", "modbus", "m1")
    m.count("samples", "modbus", "m2", 2)
    text = m.render().decode()
    assert 'edged_samples_total{device="m1",driver="modbus"} 3.0' in text
    assert 'edged_samples_total{device="m2",driver="modbus"} 2.0' in text
