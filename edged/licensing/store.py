"""The licence directory: activation, status, release and the time guard.

Every call re-reads the directory, so a licence activated by the CLI is seen by the
daemon on its next evaluation (e.g. after SIGHUP). Calls do blocking file I/O: the
daemon runs them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import fcntl
import json
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
from edged.licensing.licence import Licence, iso_time, parse, parse_time, verify
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


def _restrict(state: LicenceState, other: LicenceState) -> LicenceState:
    """``state`` with every restriction of ``other`` added (its active ids are ignored)."""
    merged = statefile.merge(state, replace(other, active=state.active))
    return replace(merged, generation=state.generation)


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
    # The licence history as it stands after this evaluation (for `license show`).
    history: LicenceState | None = None

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
        history: Sequence[Path | str] = (),
        identity: Sequence[codes.IdentitySource] | None = None,
        read_only: bool = False,
    ):
        self.directory = Path(directory)
        # Directories that keep another signed copy of the licence history (the data dir).
        # read_only: evaluate without writing anything (installer checks run as root).
        self._read_only = read_only
        self._identity = tuple(identity) if identity is not None else codes.DEFAULT_SOURCES
        self._copies = tuple(Path(d) / statefile.HISTORY_FILE for d in history)
        self._install_code = codes.normalise(install_code) if install_code else None
        self._clock = clock
        self._keys = keys if keys is not None else trusted_keys()
        self._tolerance = tolerance

    @property
    def install_code(self) -> str:
        """This gateway's install code."""
        if self._install_code is None:
            self._install_code = codes.install_code(self.directory, self._identity)
        return self._install_code

    @property
    def keys(self) -> KeyRing:
        """The vendor keys this store trusts."""
        return self._keys

    # -- locking and files -------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._read_only:
            yield  # files are replaced atomically, so a reader needs no lock
            return
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

    def _save_state(self, state: LicenceState, *, strict: bool) -> LicenceState:
        if self._read_only:
            if strict:
                raise LicenceError("this licence store is read-only")
            return state
        state = replace(state, generation=state.generation + 1)
        try:
            statefile.save(self.directory, state)
        except (OSError, LicenceError) as exc:
            if strict:
                raise LicenceError(
                    f"cannot write the licence state in {self.directory}: {exc}"
                ) from None
            log.warning("cannot write licence state dir=%s error=%s", self.directory, exc)
            return state
        for path in self._copies:
            # A copy that cannot be written is only older next time, never wrong.
            try:
                statefile.save_copy(self.directory, state, path)
            except (OSError, LicenceError) as exc:
                log.warning("cannot write licence history copy path=%s error=%s", path, exc)
        return state

    def _evidence(self) -> bool:
        # Anything that shows this directory was used before (the key comes with the state).
        return (
            bool(self._files())
            or any((self.directory / RECEIPT_DIR).glob("*.json"))
            or (self.directory / gateway_key.PUBLIC_FILE).exists()
        )

    def _receipt_releases(self) -> dict[str, float]:
        # Release receipts are one more record of releases; unchecked, as they only restrict.
        out: dict[str, float] = {}
        for path in sorted((self.directory / RECEIPT_DIR).glob("*.json")):
            try:
                body = json.loads(path.read_text(encoding="utf-8"))["receipt"]
                out[str(body["licence_id"])] = parse_time(str(body["released"]))
            except (OSError, ValueError, KeyError, TypeError, LicenceError):
                out.setdefault(path.stem, 0.0)
        return out

    def _state(self, now: float) -> tuple[LicenceState, bool]:
        """The history, reconciled from every copy; True when it must be written back."""
        code = self.install_code
        copies = [statefile.read_copy(self.directory / statefile.STATE_FILE, self.directory, code)]
        copies += [statefile.read_copy(p, self.directory, code) for p in self._copies]
        trusted = [c for c in copies if c.trusted]
        if not trusted and all(c.missing for c in copies) and not self._evidence():
            return LicenceState(code), True  # a new gateway: nothing to lose
        if not trusted:
            return self._rebuild(copies, now), True
        best = max(trusted, key=lambda c: c.state.generation if c.state else 0)
        assert best.state is not None
        state = best.state
        notes: list[str] = []
        for c in copies:
            if c is best:
                continue
            if c.trusted and c.state is not None and statefile.covers(state, c.state):
                continue  # an older genuine copy: brought up to date below
            if c.trusted and c.state is not None:
                # Two genuine-looking copies where neither is a later version of the other:
                # one was edited and re-signed. Every restriction of both counts.
                log.warning(
                    "licence history copies disagree; the more restrictive wins path=%s other=%s",
                    best.path,
                    c.path,
                )
                notes.append(f"{best.path} and {c.path} disagreed; merged to the stricter side")
                state = statefile.merge(state, c.state)
                continue
            if c.state is not None:
                state = _restrict(state, c.state)
            notes.append(f"{c.altered}; restored from {best.path}")
            log.warning("licence history copy restored reason=%s from=%s", c.altered, best.path)
        receipts = self._receipt_releases()
        unknown = {lid: t for lid, t in receipts.items() if lid not in state.released_ids()}
        if unknown:
            state = _restrict(state, replace(state, released=tuple(unknown.items())))
            notes.append(f"release receipts for {', '.join(sorted(unknown))} added to the history")
            log.warning("licence releases restored from receipts ids=%s", ",".join(unknown))
        if notes:
            state = replace(state, repairs=(*state.repairs, (now, "; ".join(notes))))
        stale = any(
            c is not best and (c.state is None or c.state.body() != state.body()) for c in copies
        )
        return state, bool(notes) or stale

    def _rebuild(self, copies: Sequence[statefile.Copy], now: float) -> LicenceState:
        # No copy of the history can be trusted. What their content says may only add
        # restrictions; licences that depend on time cannot be judged without a trustworthy
        # history and are disabled; no trial can be activated any more (an earlier one
        # cannot be ruled out). A permanent licence proves itself (vendor-signed, bound to
        # this install code) unless any surviving record says it was released.
        state = LicenceState(self.install_code)
        for c in copies:
            if c.state is not None:
                state = _restrict(state, c.state)
        receipts = self._receipt_releases()
        if receipts:
            state = _restrict(state, replace(state, released=tuple(receipts.items())))
        active: list[str] = []
        trials = set(state.trials)
        timed: set[str] = set()
        latest = state.last_seen
        for lid, path in self._files().items():
            try:
                lic = verify(path.read_bytes(), self._keys, self.install_code)
            except (OSError, LicenceError):
                continue
            if lic.id != lid or lid in state.released_ids() or lid in state.revoked:
                continue
            latest = max(latest, lic.issued)
            if lic.kind == "trial":
                trials.add(lid)
            if lic.valid_until is not None:
                timed.add(lid)
            else:
                active.append(lid)
        reason = "; ".join(c.altered or "" for c in copies if not c.trusted)
        what = (
            f"{reason}; rebuilt from the licence files (disabled: "
            f"{', '.join(sorted(timed)) or '-'}; no trial can be activated any more)"
        )
        state = replace(
            state,
            last_seen=max(latest, now),
            active=tuple(active),
            trials=tuple(sorted(trials)),
            revoked=state.revoked | timed,
            history_lost=state.history_lost if state.history_lost is not None else now,
            repairs=(*state.repairs, (now, what)),
        )
        log.warning(
            "licence state rebuilt dir=%s reason=%s revoked=%s",
            self.directory,
            reason,
            ",".join(sorted(timed)) or "-",
        )
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
            state, dirty = self._state(clock_now)
            effective, warning = self._effective(state, clock_now)
            entries, newly_expired = self._entries(state, effective)
            updated = replace(
                state,
                last_seen=max(state.last_seen, effective),
                expired=state.expired | newly_expired,
            )
            if dirty or newly_expired or updated.last_seen >= state.last_seen + _TOUCH_INTERVAL:
                updated = self._save_state(updated, strict=False)
        return Evaluation(tuple(entries), effective, warning, updated)

    def _entries(
        self, state: LicenceState, now: float
    ) -> tuple[list[LicenceEntry], frozenset[str]]:
        files = self._files()
        entries: list[LicenceEntry] = []
        expired: set[str] = set()
        # One id is one entry (and counts once), whatever the history lists.
        ids = list(dict.fromkeys([*state.active, *files]))
        released = dict(state.released)
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
            elif lid in released:
                reason = (
                    f"released from this gateway on {iso_time(released[lid])}; "
                    "it cannot be activated here again"
                )
                entries.append(LicenceEntry(lid, lic, "invalid", reason))
            elif lid in state.revoked:
                entries.append(LicenceEntry(lid, lic, "invalid", _REVOKED))
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
            state, _ = self._state(self._clock())
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
            lost = state.history_lost
            if lic.kind == "trial" and lost is not None and lic.id not in state.trials:
                raise LicenceError(
                    f"trial licence {lic.id} refused: the licence history of this gateway was "
                    f"lost or altered ({iso_time(lost)}), so an earlier trial "
                    "cannot be ruled out (one trial per install code)"
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
            state, _ = self._state(self._clock())
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
        # The key and the history are created together: a key without a history later means
        # the history was lost (see _evidence).
        self.evaluate()
        return gateway_key.fingerprint(gateway_key.private_key(self.directory).public_key())
