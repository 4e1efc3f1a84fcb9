"""The licence directory: activation, status, release and the time guard.

Every call re-reads the directory, so a licence activated by the CLI is seen by the
daemon on its next evaluation (e.g. after SIGHUP). Calls do blocking file I/O: the
daemon runs them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Literal

from edged.errors import LicenceError
from edged.licensing import gateway_key, receipt
from edged.licensing import install_code as codes
from edged.licensing import state as statefile
from edged.licensing.counting import (
    Admission,
    CapacityWindow,
    MaintenanceStatus,
    capacity_at,
    maintenance_at,
    plan_admission,
)
from edged.licensing.keys import KeyRing, trusted_keys
from edged.licensing.licence import Licence, iso_time, parse, verify
from edged.licensing.release import Coverage, ReleaseKind, covers
from edged.licensing.state import LicenceState
from edged.model import DeviceSpec

log = logging.getLogger(__name__)

DEFAULT_DIRECTORY = Path("/var/lib/edged-licences")
LICENCE_DIR = "licences"
RECEIPT_DIR = "receipts"
LOCK_FILE = ".lock"
# last_seen is rewritten at most this often when nothing else changed.
_TOUCH_INTERVAL = 60.0

Status = Literal["valid", "pending", "expired", "invalid"]
_REVOKED = (
    "disabled: the licence state was altered or lost, and a time-limited licence "
    "cannot be trusted after that"
)


@dataclass(frozen=True)
class LicenceEntry:
    """One licence in the directory with its status and the reason for it."""

    id: str
    licence: Licence | None
    status: Status
    reason: str
    # What an unverifiable file claims, for display only; never counted.
    claimed: Licence | None = None


@dataclass(frozen=True)
class Evaluation:
    """The directory at one moment: every entry, the effective time and any clock warning."""

    entries: tuple[LicenceEntry, ...]
    now: float
    clock_warning: str | None

    def valid(self) -> list[Licence]:
        """Licences valid at ``now``."""
        return [e.licence for e in self.entries if e.status == "valid" and e.licence]

    def usable(self) -> list[Licence]:
        """Licences that are valid now or may become valid later (for the next change)."""
        return [e.licence for e in self.entries if e.licence and e.status in ("valid", "pending")]

    def genuine(self) -> list[Licence]:
        """Licences that are authentic and bound here, expired or not (maintenance history)."""
        return [e.licence for e in self.entries if e.licence and e.status != "invalid"]


@dataclass(frozen=True)
class Gate:
    """The capacity gate at one moment: admission, capacity window and any clock warning."""

    admission: Admission
    window: CapacityWindow
    clock_warning: str | None


def _claimed(path: Path) -> Licence | None:
    try:
        return parse(path.read_bytes()).licence
    except (OSError, LicenceError):
        return None


class LicenceStore:
    """Licences of this gateway, kept in a directory that survives data and config resets."""

    def __init__(
        self,
        directory: Path | str = DEFAULT_DIRECTORY,
        install_code: str | None = None,
        clock: Callable[[], float] = time.time,
        *,
        keys: KeyRing | None = None,
        tolerance: float = 3600.0,
    ):
        self.directory = Path(directory)
        self._install_code = codes.normalise(install_code) if install_code else None
        self._clock = clock
        self._keys = keys if keys is not None else trusted_keys()
        self._tolerance = tolerance

    @property
    def install_code(self) -> str:
        """This gateway's install code."""
        if self._install_code is None:
            self._install_code = codes.install_code(self.directory)
        return self._install_code

    @property
    def keys(self) -> KeyRing:
        """The vendor keys this store trusts."""
        return self._keys

    # -- locking and files -------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # The daemon and the CLI may both write; an advisory lock serialises them.
        self.directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        (self.directory / LICENCE_DIR).mkdir(mode=0o750, exist_ok=True)
        # Read-only is enough for flock and works whichever user created the file.
        fd = os.open(self.directory / LOCK_FILE, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _file(self, licence_id: str) -> Path:
        return self.directory / LICENCE_DIR / f"{licence_id}.lic"

    def _files(self) -> dict[str, Path]:
        folder = self.directory / LICENCE_DIR
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.glob("*.lic"))}

    def _load_state(self) -> statefile.LoadedState:
        return statefile.load(self.directory, self.install_code, bool(self._files()))

    def _save_state(self, state: LicenceState, *, strict: bool) -> None:
        try:
            statefile.save(self.directory, state)
        except (OSError, LicenceError) as exc:
            if strict:
                raise LicenceError(
                    f"cannot write the licence state in {self.directory}: {exc}"
                ) from None
            log.warning("cannot write licence state dir=%s error=%s", self.directory, exc)

    def _state(self, now: float) -> LicenceState:
        loaded = self._load_state()
        if loaded.altered is None:
            return loaded.state
        return self._repair(loaded, now)

    def _repair(self, loaded: statefile.LoadedState, now: float) -> LicenceState:
        # The old content is untrusted, so it may only add restrictions. Licences that
        # depend on time cannot be judged without a trustworthy history: they are revoked.
        old = loaded.state
        active: list[str] = []
        trials = set(old.trials)
        timed: set[str] = set()
        latest = old.last_seen
        for lid, path in self._files().items():
            try:
                lic = verify(path.read_bytes(), self._keys, self.install_code)
            except (OSError, LicenceError):
                continue
            if lic.id != lid:
                continue
            active.append(lid)
            latest = max(latest, lic.issued)
            if lic.kind == "trial":
                trials.add(lid)
            if lic.valid_until is not None:
                timed.add(lid)
        state = LicenceState(
            self.install_code,
            last_seen=max(latest, now),
            active=tuple(active),
            trials=tuple(sorted(trials)),
            expired=old.expired,
            released=old.released,
            revoked=old.revoked | timed,
        )
        log.warning(
            "licence state rebuilt dir=%s reason=%s revoked=%s",
            self.directory,
            loaded.altered,
            ",".join(sorted(timed)) or "-",
        )
        self._save_state(state, strict=False)
        return state

    # -- time guard --------------------------------------------------------------------

    def _effective(self, state: LicenceState, now: float) -> tuple[float, str | None]:
        if now < state.last_seen - self._tolerance:
            behind = state.last_seen - now
            warning = (
                f"system clock is {behind / 3600:.1f} h behind the latest time seen "
                f"({iso_time(state.last_seen)}); licences are evaluated at that time"
            )
            log.warning(
                "clock behind last seen behind_s=%.0f last_seen=%s",
                behind,
                iso_time(state.last_seen),
            )
            return state.last_seen, warning
        return now, None

    # -- evaluation --------------------------------------------------------------------

    def evaluate(self, now: float | None = None) -> Evaluation:
        """Every licence with status and reason at ``now`` (default: the clock)."""
        clock_now = self._clock() if now is None else now
        with self._locked():
            state = self._state(clock_now)
            effective, warning = self._effective(state, clock_now)
            entries, newly_expired = self._entries(state, effective)
            updated = replace(
                state,
                last_seen=max(state.last_seen, effective),
                expired=state.expired | newly_expired,
            )
            if newly_expired or updated.last_seen >= state.last_seen + _TOUCH_INTERVAL:
                self._save_state(updated, strict=False)
        return Evaluation(tuple(entries), effective, warning)

    def _entries(
        self, state: LicenceState, now: float
    ) -> tuple[list[LicenceEntry], frozenset[str]]:
        files = self._files()
        entries: list[LicenceEntry] = []
        expired: set[str] = set()
        ids = list(state.active) + [i for i in files if i not in state.active]
        for lid in ids:
            path = files.get(lid)
            if path is None:
                entries.append(LicenceEntry(lid, None, "invalid", "licence file is missing"))
                continue
            try:
                lic = verify(path.read_bytes(), self._keys, self.install_code)
            except (OSError, LicenceError) as exc:
                entries.append(LicenceEntry(lid, None, "invalid", str(exc), _claimed(path)))
                continue
            if lic.id != lid:
                reason = f"file {path.name} holds licence {lic.id}"
                entries.append(LicenceEntry(lid, lic, "invalid", reason))
            elif lid not in state.active:
                reason = "was not activated on this gateway (use `edged license activate`)"
                entries.append(LicenceEntry(lid, lic, "invalid", reason))
            elif lid in state.revoked:
                entries.append(LicenceEntry(lid, lic, "invalid", _REVOKED))
            else:
                entries.append(self._timed(lic, state, now, expired))
        return entries, frozenset(expired)

    def _timed(
        self, lic: Licence, state: LicenceState, now: float, expired: set[str]
    ) -> LicenceEntry:
        if lic.valid_until is not None and (lic.id in state.expired or lic.expired_at(now)):
            expired.add(lic.id)
            return LicenceEntry(lic.id, lic, "expired", f"expired on {iso_time(lic.valid_until)}")
        if lic.valid_until is not None and lic.issued > now:
            reason = f"not valid before {iso_time(lic.issued)}"
            return LicenceEntry(lic.id, lic, "pending", reason)
        if self._keys.is_test(lic.key_id):
            return LicenceEntry(lic.id, lic, "valid", f"TEST KEY {lic.key_id} (not for production)")
        until = f"until {iso_time(lic.valid_until)}" if lic.valid_until is not None else ""
        return LicenceEntry(lic.id, lic, "valid", until)

    # -- enforcement hooks ---------------------------------------------------------------

    def capacity(self, now: float | None = None) -> CapacityWindow:
        """Licensed capacity at ``now`` and when it next changes (e.g. a trial's end)."""
        ev = self.evaluate(now)
        return capacity_at(ev.usable(), ev.now)

    def admission(self, devices: Sequence[DeviceSpec], now: float | None = None) -> Gate:
        """Which devices may run at ``now``, and when to ask again (capacity change)."""
        ev = self.evaluate(now)
        window = capacity_at(ev.usable(), ev.now)
        return Gate(plan_admission(devices, window.capacity), window, ev.clock_warning)

    def maintenance(self, warn_days: Sequence[int], now: float | None = None) -> MaintenanceStatus:
        """Maintenance end and the warning due at ``now`` for the configured ``warn_days``."""
        ev = self.evaluate(now)
        return maintenance_at(ev.genuine(), ev.now, warn_days)

    def coverage(self, version: str, released: date, kind: ReleaseKind) -> Coverage:
        """Whether the installed licences cover installing that release."""
        return covers(version, released, kind, self.evaluate().genuine())

    # -- activation and release ----------------------------------------------------------

    def activate(self, data: bytes) -> Licence:
        """Verify a licence file and install it; LicenceError says why it was refused."""
        lic = verify(data, self._keys, self.install_code)
        with self._locked():
            state = self._state(self._clock())
            now, _ = self._effective(state, self._clock())
            if lic.id in state.revoked:
                raise LicenceError(f"licence {lic.id} is {_REVOKED}")
            if lic.id in state.active and self._file(lic.id).exists():
                raise LicenceError(f"licence {lic.id} is already active on this gateway")
            released = state.released_at(lic.id)
            if released is not None:
                raise LicenceError(
                    f"licence {lic.id} was released from this gateway on {iso_time(released)} "
                    "and cannot be activated here again"
                )
            if lic.valid_until is not None and (lic.id in state.expired or lic.expired_at(now)):
                raise LicenceError(f"licence {lic.id} expired on {iso_time(lic.valid_until)}")
            if lic.issued > now + self._tolerance:
                # Its issue date would move the remembered time forward and expire every
                # other licence: a wrong gateway clock or a mis-dated licence, never valid.
                raise LicenceError(
                    f"licence {lic.id} is issued in the future ({iso_time(lic.issued)}; gateway "
                    f"time {iso_time(now)}): check the gateway clock or ask for a corrected "
                    "licence"
                )
            earlier_trials = [t for t in state.trials if t != lic.id]
            if lic.kind == "trial" and earlier_trials:
                raise LicenceError(
                    f"trial licence {lic.id} refused: this gateway already had trial "
                    f"{earlier_trials[0]} (one trial per install code)"
                )
            # State first: a crash before the file is written leaves an id that can be
            # activated again, never a file whose history is unknown.
            self._save_state(
                strict=True,
                state=replace(
                    state,
                    # A signed issue date proves the present is at least that late.
                    last_seen=max(state.last_seen, now, lic.issued),
                    active=(*[i for i in state.active if i != lic.id], lic.id),
                    trials=(*earlier_trials, lic.id) if lic.kind == "trial" else state.trials,
                ),
            )
            gateway_key.write_atomic(self._file(lic.id), data, 0o640)
        log.info("licence activated id=%s kind=%s capacity=%d", lic.id, lic.kind, lic.capacity)
        return lic

    def release(self, licence_id: str) -> bytes:
        """Drop a licence from this gateway and return the signed release receipt."""
        with self._locked():
            state = self._state(self._clock())
            path = self._file(licence_id)
            if licence_id not in state.active or not path.exists():
                raise LicenceError(f"no active licence {licence_id!r} on this gateway")
            data = path.read_bytes()
            lic = verify(data, self._keys, self.install_code)
            now, _ = self._effective(state, self._clock())
            key = gateway_key.private_key(self.directory)
            doc = receipt.make(lic, data, now, key)
            receipts = self.directory / RECEIPT_DIR
            receipts.mkdir(exist_ok=True)
            gateway_key.write_atomic(receipts / f"{licence_id}.json", doc, 0o640)
            # The state is written before the file goes, so a crash never loses the release.
            self._save_state(
                strict=True,
                state=replace(
                    state,
                    last_seen=max(state.last_seen, now),
                    active=tuple(i for i in state.active if i != licence_id),
                    released=(*state.released, (licence_id, now)),
                ),
            )
            path.unlink()
        log.info("licence released id=%s", licence_id)
        return doc

    def gateway_fingerprint(self) -> str:
        """Fingerprint of the gateway key that signs release receipts (created if needed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return gateway_key.fingerprint(gateway_key.private_key(self.directory).public_key())
