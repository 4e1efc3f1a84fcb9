"""The licence desk of the console: what ``edged license show`` prints, as data; activate; release.

The functions block on file I/O and signature checks: call them in a thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edged.licensing.counting import capacity_at, maintenance_at, plan_admission
from edged.licensing.licence import iso_time
from edged.licensing.release import RELEASE_DATE, RELEASE_KIND, RELEASE_VERSION, covers
from edged.licensing.store import LicenceStore
from edged.model import DeviceSpec


@dataclass(frozen=True)
class LicenceDesk:
    """Licence operations on the daemon's licence directory."""

    store: Callable[[], LicenceStore]
    devices: Callable[[], Sequence[DeviceSpec]]
    warn_days: Callable[[], Sequence[int]]
    changed: Callable[[], None]
    """Tell the daemon the licences changed (it re-admits devices at once)."""

    def show(self) -> dict[str, Any]:
        """Install code, the licence table, capacity, devices counted, maintenance, release."""
        store = self.store()
        ev = store.evaluate()
        licences = []
        for e in ev.entries:
            lic = e.licence or e.claimed
            until = None
            if lic is not None and lic.valid_until is not None:
                until = iso_time(lic.valid_until)
            licences.append(
                {
                    "id": e.id,
                    "kind": lic.kind if lic else None,
                    "capacity": lic.capacity if lic else None,
                    "status": e.status,
                    "until": until,
                    "version": lic.version if lic else None,
                    "customer": lic.customer if lic else None,
                    "reason": e.reason,
                }
            )
        window = capacity_at(ev.usable(), ev.now)
        adm = plan_admission(self.devices(), window.capacity)
        m = maintenance_at(ev.genuine(), ev.now, self.warn_days())
        release = covers(RELEASE_VERSION, RELEASE_DATE, RELEASE_KIND, ev.genuine())
        return {
            "install_code": store.install_code,
            "directory": str(store.directory),
            "clock_warning": ev.clock_warning,
            "licences": licences,
            "capacity": window.capacity,
            "capacity_changes": (
                None if window.next_change is None else iso_time(window.next_change)
            ),
            "used": adm.used,
            "total": adm.total,
            "unlicensed": list(adm.unlicensed),
            "maintenance": {
                "until": None if m.end is None else iso_time(m.end),
                "ended": m.ended,
                "days_left": m.days_left(ev.now),
                "warning": m.warning_days is not None,
            },
            "release": {
                "version": RELEASE_VERSION,
                "kind": RELEASE_KIND,
                "date": RELEASE_DATE.isoformat(),
                "covered": release.covered,
                "reason": release.reason,
            },
        }

    def activate(self, data: bytes) -> dict[str, Any]:
        """Verify and install a licence file (LicenceError says why not); re-admit devices."""
        lic = self.store().activate(data)
        self.changed()
        return {
            "id": lic.id,
            "kind": lic.kind,
            "capacity": lic.capacity,
            "until": None if lic.valid_until is None else iso_time(lic.valid_until),
        }

    def release(self, licence_id: str) -> str:
        """Drop a licence; the receipt (signed by this gateway) to hand to the vendor."""
        receipt = self.store().release(licence_id).decode()
        self.changed()
        return receipt
