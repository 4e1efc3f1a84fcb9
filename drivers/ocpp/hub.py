"""The state a listening central system shares between its charger sessions."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable

from drivers.ocpp.settings import OcppSettings
from drivers.ocpp.state import ChargerStatus
from edged.api import DriverContext
from edged.model import DeviceState, Sample

log = logging.getLogger("edged.ocpp")
LINK_CONNECTS = "link_connects"


class Hub:
    """Charger states, local authorisation and the way out to the daemon (DriverContext)."""

    def __init__(
        self, settings: OcppSettings, ctx: DriverContext, statuses: dict[str, ChargerStatus]
    ):
        self.settings = settings
        self.ctx = ctx
        self.statuses = statuses
        self._add_statuses()
        # 1.6 transaction ids are integers chosen by the central system; seeding from
        # the clock keeps them from repeating across restarts.
        self._tx_ids = itertools.count(int(time.time()) % 1_000_000_000)

    def replace_settings(self, settings: OcppSettings, removed: Iterable[str]) -> None:
        """Serve a new charger list: forget removed chargers, add statuses for new ones."""
        for device_id in removed:
            self.statuses.pop(device_id, None)
        self.settings = settings
        self._add_statuses()

    def _add_statuses(self) -> None:
        for charger in self.settings.chargers.values():
            st = self.statuses.setdefault(
                charger.device_id, ChargerStatus(charger.device_id, charger.charge_point_id)
            )
            st.default_id_token_type = charger.id_token_type

    def status(self, device_id: str) -> ChargerStatus:
        """The state of a configured charger."""
        return self.statuses[device_id]

    def authorize(self, id_tag: str) -> bool:
        """Local authorisation: any tag when no list is configured, else only listed tags."""
        tags = self.settings.id_tags
        return tags is None or id_tag in tags

    def new_transaction_id(self) -> int:
        """A fresh OCPP 1.6 transaction id."""
        return next(self._tx_ids) % 2_000_000_000 + 1

    def seen(self, device_id: str) -> None:
        """A frame arrived from the charger."""
        # A charger removed at reload may still send a frame while its socket closes.
        st = self.statuses.get(device_id)
        if st is not None:
            st.last_seen = time.time()

    def deliver(self, device_id: str, samples: Iterable[Sample]) -> int:
        """Hand samples to the daemon; returns how many."""
        n = 0
        for s in samples:
            self.ctx.sample(s)
            n += 1
        if n:
            self.ctx.count("meter_values", device_id, n)
        return n

    def online(self, device_id: str, version: str, remote: str | None) -> None:
        """A charger's WebSocket was accepted."""
        st = self.statuses[device_id]
        st.connected, st.version, st.remote = True, version, remote
        st.connected_since = st.last_seen = time.time()
        st.connects += 1
        self.ctx.state(device_id, DeviceState.ONLINE)
        # A counter in the live values, so the core sees every new connection (the charger
        # may have rebooted and lost its limits) even when no offline state came in between.
        self.ctx.sample(Sample(device_id, st.connected_since, {LINK_CONNECTS: float(st.connects)}))

    def offline(self, device_id: str, reason: str | None) -> None:
        """A charger's last WebSocket closed."""
        st = self.statuses[device_id]
        st.connected = False
        st.connected_since = None
        self.ctx.state(device_id, DeviceState.OFFLINE, reason)
