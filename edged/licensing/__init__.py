"""Device-capacity and maintenance licences.

The supervisor needs only :class:`LicenceStore` (activation, status, capacity gate,
maintenance warnings) and :func:`plan_admission`; see ``docs/licensing.md``.
"""

from edged.licensing.counting import (
    Admission,
    CapacityWindow,
    MaintenanceStatus,
    capacity_at,
    maintenance_at,
    plan_admission,
)
from edged.licensing.licence import Licence
from edged.licensing.release import RELEASE_DATE, RELEASE_KIND, RELEASE_VERSION, covers
from edged.licensing.store import Gate, LicenceEntry, LicenceStore

__all__ = [
    "RELEASE_DATE",
    "RELEASE_KIND",
    "RELEASE_VERSION",
    "Admission",
    "CapacityWindow",
    "Gate",
    "Licence",
    "LicenceEntry",
    "LicenceStore",
    "MaintenanceStatus",
    "capacity_at",
    "covers",
    "maintenance_at",
    "plan_admission",
]
