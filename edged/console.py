"""Wiring of the web console: the daemon's parts as the narrow ``edged.web.Backend``.

Kept apart from ``edged.web`` so that the console package never imports the supervisor,
the provisioning or the app: it gets callables, built here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edged.licensing.store import LicenceStore
from edged.web.backend import Backend
from edged.web.history import History
from edged.web.licences import LicenceDesk
from edged.web.scans import ScanJobs

if TYPE_CHECKING:
    from edged.app import Daemon


def console_backend(daemon: Daemon) -> Backend:
    """The console's view of a running daemon."""

    def config() -> Any:
        return daemon._current().config

    def store() -> LicenceStore:
        cfg = config()
        return LicenceStore(
            daemon._licence_dir(),
            tolerance=cfg.licensing.clock_tolerance,
            history=(cfg.gateway.data_dir,),
        )

    def targets() -> dict[str, tuple[Any, Any]]:
        return {n: (c.driver, c.settings) for n, c in daemon._current().connections.items()}

    def circuits() -> list[dict[str, Any]]:
        # Set by the app while load management runs; it can change on a reload.
        status_of = daemon.status_service.circuits
        return status_of() if status_of is not None else []

    return Backend(
        status=daemon.status_service.status,
        live=daemon.live,
        reconnect=daemon.supervisor.reconnect,
        reload=daemon.reload_with_notes,
        licences=LicenceDesk(
            store=store,
            devices=lambda: config().devices,
            warn_days=lambda: config().licensing.warn_days,
            changed=daemon.licences.poke,
        ),
        scans=ScanJobs(targets, daemon.supervisor.paused),
        events=daemon.events,
        history=History(daemon.live, lambda: list(daemon.supervisor.devices)),
        circuits=circuits,
    )
