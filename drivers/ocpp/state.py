"""What the central system knows about each charger, reported by ``OcppDriver.status()``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from drivers.ocpp.settings import DEFAULT_ID_TOKEN_TYPE
from edged.model import iso


@dataclass
class Transaction:
    """The charging session running on a connector."""

    id: str
    connector: int
    started: float
    id_tag: str | None = None
    meter_start_wh: float | None = None
    energy_wh: float | None = None
    """Energy register at the last meter value, Wh."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view; ``energy_wh`` is the energy delivered in this transaction."""
        delivered = None
        if self.energy_wh is not None and self.meter_start_wh is not None:
            delivered = self.energy_wh - self.meter_start_wh
        return {
            "id": self.id,
            "connector": self.connector,
            "started": iso(self.started),
            "id_tag": self.id_tag,
            "meter_wh": self.energy_wh,
            "energy_wh": delivered,
        }


def _next_id(last: int) -> int:
    return max(last + 1, int(time.time()) % 2**31)


@dataclass
class ChargerStatus:
    """Mutable state of one charger, updated by its session (one writer: the event loop)."""

    device_id: str
    charge_point_id: str
    connected: bool = False
    version: str | None = None
    remote: str | None = None
    connected_since: float | None = None
    last_seen: float | None = None
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    serial: str | None = None
    connectors: dict[int, str] = field(default_factory=dict)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    token_types: dict[str, str] = field(default_factory=dict)
    """The type of each id token the charger presented (2.0.1), so a remote start names it."""
    default_id_token_type: str = DEFAULT_ID_TOKEN_TYPE
    """The type of a tag the charger never presented (the ``id_token_type`` setting)."""
    last_remote_start_id: int = 0
    connects: int = 0
    """WebSocket connections accepted since the start (``link_connects``)."""
    last_request_id: int = 0

    def new_remote_start_id(self) -> int:
        """A remoteStartId this charger has not seen from this process: seeded by the clock
        (so a restart does not go back), then counted (so two starts in a second differ)."""
        self.last_remote_start_id = _next_id(self.last_remote_start_id)
        return self.last_remote_start_id

    def new_request_id(self) -> int:
        """A requestId for a report, unique per charger in the same way."""
        self.last_request_id = _next_id(self.last_request_id)
        return self.last_request_id

    def transaction_on(self, connector: int | None) -> Transaction | None:
        """The active transaction on a connector (any connector when None)."""
        for tx in self.transactions.values():
            if connector is None or tx.connector == connector:
                return tx
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view of this charger."""
        active = next(iter(self.transactions.values()), None)
        return {
            "charge_point_id": self.charge_point_id,
            "connected": self.connected,
            "ocpp_version": self.version,
            "remote": self.remote,
            "connected_since": iso(self.connected_since) if self.connected_since else None,
            "last_seen": iso(self.last_seen) if self.last_seen else None,
            "boot": {
                "vendor": self.vendor,
                "model": self.model,
                "firmware": self.firmware,
                "serial": self.serial,
            },
            "connectors": {str(k): v for k, v in sorted(self.connectors.items())},
            "transaction": active.to_dict() if active else None,
            "transactions": [t.to_dict() for t in self.transactions.values()],
        }
