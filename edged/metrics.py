"""Prometheus metrics in a private registry (served at ``/metrics`` by ``edged.web.server``).

Metric families are created on first use, so drivers can count new events
without a central list. Names are prefixed ``edged_``: ``count("polls", ...)``
becomes ``edged_polls_total``, ``observe("poll", ...)`` becomes
``edged_poll_seconds`` and ``set_gauge("outbox_depth", ...)`` becomes
``edged_outbox_depth``.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

log = logging.getLogger(__name__)

PREFIX = "edged_"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""The content type of ``render()``."""

# Latencies of polls and exchanges range from a millisecond (Modbus TCP on the
# LAN) to seconds (M-Bus at 300 baud, timeouts).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

COUNTER_HELP: dict[str, str] = {
    "poll": "Polls completed, per driver and device.",
    "poll_error": "Polls that failed (timeout, connection lost, exception reply).",
    "frame_rejected": "Frames or messages rejected as malformed.",
    "meter_values": "Meter value messages received from chargers.",
    "samples": "Samples handed to the pipeline.",
    "samples_rejected": "Samples for devices not on the connection that produced them.",
    "records": "Records written to the outbox.",
    "action_fired": "If/then rules fired, per rule (label device: the rule's name).",
    "action_cleared": "If/then rules cleared, per rule (label device: the rule's name).",
    "action_failed": "Actions of if/then rules that failed after their retries, per rule.",
}
HISTOGRAM_HELP: dict[str, str] = {
    "poll": "Duration of one poll of one device.",
}
TOTAL_HELP: dict[str, str] = {
    "outbox_dropped": "Records dropped because the outbox was full, since this process started.",
    "throttle_dropped": "Samples or values the windows stage dropped: late, non-finite, unknown.",
    "uplink_published": "Records published to the broker, since this process started.",
    "uplink_acked": "Records acknowledged by the broker, since this process started.",
}
HELP: dict[str, str] = {
    "outbox_depth": "Records waiting in the outbox.",
    "outbox_bytes": "Bytes used by records waiting in the outbox.",
    "outbox_oldest_age": "Age of the oldest record waiting in the outbox, in seconds.",
    "uplink_connected": "1 while the MQTT uplink is connected.",
    "device_up": "1 while the device answers (state online), per device.",
    "device_last_sample_age": "Seconds since the device's last sample, per device.",
    "device_label": "The labels of each device from the configuration (value 1).",
    "licence_capacity": "Devices the installed capacity licences allow (gateway included).",
    "licence_used": "Devices counted against the capacity licences.",
    "devices": "Configured devices per state.",
    "account_tier_interval": "Publish interval of the cloud account tier, in seconds.",
    "account_tier": "1 for the cloud account tier in force (the lowest of any metering point).",
    "device_cloud_licence": "Cloud licence tier of each device (one series per device, value 1).",
}

_NAME = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(name: str) -> str:
    """The Prometheus-safe name of an event or gauge (without prefix and suffix)."""
    safe = _NAME.sub("_", name).strip("_") or "unnamed"
    return "_" + safe if safe[0].isdigit() else safe


class Metrics:
    """Counters, latency histograms and gauges of one daemon."""

    def __init__(self) -> None:
        # ``*_created`` series double the output for no use on a gateway.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in the library
        self.registry = CollectorRegistry(auto_describe=True)
        _ProcessCollector(registry=self.registry)
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._gauges: dict[str, tuple[Gauge, tuple[str, ...]]] = {}
        self._totals: dict[str, Counter] = {}
        self._total_seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        # False when [metrics] is off (fixed until a restart): counting per sample and per
        # device would cost CPU and memory for series nobody can read.
        self.enabled = True
        self._children: dict[tuple[str, str, str], Any] = {}

    def count(self, event: str, driver: str, device_id: str | None = None, n: int = 1) -> None:
        """Add ``n`` to the counter of an event for a driver (and device)."""
        if not self.enabled:
            return
        child = self._children.get((event, driver, device_id or ""))
        if child is not None:  # the hot path: one dict lookup per sample
            child.inc(n)
            return
        name = metric_name(event)
        counter = self._counters.get(name)
        if counter is None:
            counter = Counter(
                PREFIX + name,
                COUNTER_HELP.get(name, f"Count of {name} events."),
                ("driver", "device"),
                registry=self.registry,
            )
            self._counters[name] = counter
        child = counter.labels(driver, device_id or "")
        self._children[(event, driver, device_id or "")] = child
        child.inc(n)

    def observe(self, event: str, driver: str, seconds: float) -> None:
        """Record a duration in the latency histogram of an event for a driver."""
        if not self.enabled:
            return
        name = metric_name(event)
        histogram = self._histograms.get(name)
        if histogram is None:
            histogram = Histogram(
                PREFIX + name + "_seconds",
                HISTOGRAM_HELP.get(name, f"Duration of {name}."),
                ("driver",),
                buckets=LATENCY_BUCKETS,
                registry=self.registry,
            )
            self._histograms[name] = histogram
        histogram.labels(driver).observe(seconds)

    def advance(self, name: str, total: float, /, **labels: str) -> None:
        """Bring the counter ``edged_<name>_total`` up to a running total kept elsewhere.

        The parts that keep running totals (outbox, uplink, windows) count since they were
        created, which is since this process started; a total that goes down (a part was
        replaced) is taken as a new start, as Prometheus' ``rate()`` does for a counter reset.
        """
        if not self.enabled:
            return
        key = metric_name(name)
        counter = self._totals.get(key)
        if counter is None:
            counter = Counter(
                PREFIX + key,
                TOTAL_HELP.get(key, f"Count of {key}."),
                tuple(sorted(labels)),
                registry=self.registry,
            )
            self._totals[key] = counter
        series = (key, tuple(sorted(labels.items())))
        last = self._total_seen.get(series, 0.0)
        step = total - last if total >= last else total
        self._total_seen[series] = total
        if step > 0:
            (counter.labels(**labels) if labels else counter).inc(step)

    def set_gauge(self, name: str, value: float, /, **labels: str) -> None:
        """Set a gauge; a gauge keeps the label names it was first set with."""
        if not self.enabled:
            return
        key = metric_name(name)
        entry = self._gauges.get(key)
        names = tuple(sorted(labels))
        if entry is None:
            gauge = Gauge(PREFIX + key, HELP.get(key, f"{key}."), names, registry=self.registry)
            entry = (gauge, names)
            self._gauges[key] = entry
        gauge, known = entry
        if names != known:
            raise ValueError(f"gauge {key} has labels {list(known)}, got {list(names)}")
        (gauge.labels(**labels) if known else gauge).set(value)

    def clear_gauge(self, name: str) -> None:
        """Drop every labelled series of a gauge (e.g. devices that left the config)."""
        entry = self._gauges.get(metric_name(name))
        if entry is not None and entry[1]:
            entry[0].clear()

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)


class _ProcessCollector(ProcessCollector):
    """Process metrics that work under ``ProcSubset=pid``.

    The stock collector reads the boot time from ``/proc/stat`` and reports
    nothing when that file is hidden, as it is in the service's sandbox; the boot
    time follows from the wall clock and ``CLOCK_BOOTTIME`` just as well.
    """

    def _boot_time(self) -> float:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
