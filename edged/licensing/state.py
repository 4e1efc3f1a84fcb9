"""The licence history, signed by the gateway key and kept in more than one place.

It remembers what must not be forgotten when someone edits files by hand: which licences
were activated here, every trial ever activated, licences released from this gateway,
licences once seen expired, the latest time seen (so a clock set back does not revive an
expired licence), and every repair of the history itself.

The history only ever adds restrictions: a newer copy holds every restriction of an older
one (see :func:`covers`), so two copies that disagree otherwise were tampered with and are
merged to the more restrictive side (:func:`merge`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.errors import LicenceError
from edged.licensing import gateway_key
from edged.licensing.licence import canonical

STATE_FILE = "state.json"
# The copy of the history kept outside the licence directory (in edged's data directory).
HISTORY_FILE = "licence-history.json"
FORMAT = "edged-licence-state/1"


@dataclass(frozen=True)
class LicenceState:
    """What the licence directory remembers between runs."""

    install_code: str
    last_seen: float = 0.0
    active: tuple[str, ...] = ()
    trials: tuple[str, ...] = ()
    expired: frozenset[str] = field(default_factory=frozenset)
    released: tuple[tuple[str, float], ...] = ()
    revoked: frozenset[str] = field(default_factory=frozenset)
    # Every save increments it: of two genuine copies the higher one is the newer.
    generation: int = 0
    # (time, what happened) for every repair of the history; shown by `license show`.
    repairs: tuple[tuple[float, str], ...] = ()
    # When the whole history was first found lost or untrustworthy: no trial after that.
    history_lost: float | None = None

    def released_at(self, licence_id: str) -> float | None:
        """When that licence was released from this gateway, or None."""
        for lid, when in self.released:
            if lid == licence_id:
                return when
        return None

    def body(self) -> dict[str, Any]:
        """The JSON body that gets signed."""
        return {
            "install_code": self.install_code,
            "last_seen": self.last_seen,
            "active": list(self.active),
            "trials": list(self.trials),
            "expired": sorted(self.expired),
            "released": [[lid, when] for lid, when in self.released],
            "revoked": sorted(self.revoked),
            "generation": self.generation,
            "repairs": [[when, what] for when, what in self.repairs],
            "history_lost": self.history_lost,
        }

    def released_ids(self) -> frozenset[str]:
        """Ids released from this gateway."""
        return frozenset(lid for lid, _ in self.released)


def covers(newer: LicenceState, older: LicenceState) -> bool:
    """True when ``newer`` holds every restriction of ``older`` (a genuine later version)."""
    return (
        newer.generation >= older.generation
        and newer.last_seen >= older.last_seen
        and set(older.trials) <= set(newer.trials)
        and older.expired <= newer.expired
        and older.released_ids() <= newer.released_ids()
        and older.revoked <= newer.revoked
        and set(older.repairs) <= set(newer.repairs)
        and (older.history_lost is None or newer.history_lost is not None)
    )


def merge(a: LicenceState, b: LicenceState) -> LicenceState:
    """The more restrictive combination of two histories (every restriction of both)."""
    released: dict[str, float] = {}
    for lid, when in (*a.released, *b.released):
        released[lid] = min(when, released.get(lid, when))
    revoked = a.revoked | b.revoked
    blocked = revoked | frozenset(released)
    active = tuple(i for i in a.active if i in b.active and i not in blocked)
    lost = [t for t in (a.history_lost, b.history_lost) if t is not None]
    return LicenceState(
        install_code=a.install_code,
        last_seen=max(a.last_seen, b.last_seen),
        active=tuple(dict.fromkeys(active)),
        trials=tuple(sorted(set(a.trials) | set(b.trials))),
        expired=a.expired | b.expired,
        released=tuple(sorted(released.items(), key=lambda kv: (kv[1], kv[0]))),
        revoked=revoked,
        generation=max(a.generation, b.generation),
        repairs=tuple(sorted(set(a.repairs) | set(b.repairs))),
        history_lost=min(lost) if lost else None,
    )


@dataclass(frozen=True)
class LoadedState:
    """The state as read from disk; ``altered`` says why it cannot be trusted, if so."""

    state: LicenceState
    altered: str | None


def _from_body(body: Any) -> LicenceState:
    if not isinstance(body, dict):
        raise ValueError("state body is not an object")
    return LicenceState(
        install_code=str(body["install_code"]),
        last_seen=float(body["last_seen"]),
        active=tuple(str(x) for x in body["active"]),
        trials=tuple(str(x) for x in body["trials"]),
        expired=frozenset(str(x) for x in body["expired"]),
        released=tuple((str(lid), float(when)) for lid, when in body["released"]),
        revoked=frozenset(str(x) for x in body.get("revoked", ())),
        generation=int(body.get("generation", 0)),
        repairs=tuple((float(when), str(what)) for when, what in body.get("repairs", ())),
        history_lost=float(lost) if (lost := body.get("history_lost")) is not None else None,
    )


@dataclass(frozen=True)
class Copy:
    """One copy of the history as read from disk.

    ``altered`` says why it cannot be trusted (its content, if readable, still counts as
    restrictions); ``missing`` that there is no such file.
    """

    path: Path
    state: LicenceState | None
    altered: str | None
    missing: bool = False

    @property
    def trusted(self) -> bool:
        """Present, signed by this gateway's key and for this install code."""
        return self.state is not None and self.altered is None and not self.missing


def read_copy(path: Path, key_dir: Path, install_code: str) -> Copy:
    """Read and check one copy of the history (signed by the key in ``key_dir``)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Copy(path, None, f"{path} is missing", missing=True)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Copy(path, None, f"{path} is unreadable ({exc})")
    try:
        body = doc["state"]
        state = _from_body(body)
        signature = base64.b64decode(doc["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        return Copy(path, None, f"{path} is malformed ({exc.__class__.__name__})")
    try:
        key = gateway_key.public_key(key_dir)
    except LicenceError:
        key = None
    if key is None or not gateway_key.verify(key, signature, canonical(body)):
        return Copy(
            path, state, f"{path} was altered outside edged (or the gateway key was replaced)"
        )
    if state.install_code != install_code:
        return Copy(path, state, f"{path} belongs to another gateway")
    return Copy(path, state, None)


def load(directory: Path, install_code: str, have_licences: bool) -> LoadedState:
    """Read and check the state file; a fresh state when there is none and nothing to lose."""
    copy = read_copy(directory / STATE_FILE, directory, install_code)
    fresh = LicenceState(install_code)
    if copy.missing:
        return LoadedState(fresh, "the licence state file is missing" if have_licences else None)
    if copy.state is None:
        return LoadedState(fresh, copy.altered)
    return LoadedState(copy.state, copy.altered)


def save(directory: Path, state: LicenceState, copies: Sequence[Path] = ()) -> None:
    """Sign and write the state atomically, in the licence directory and at ``copies``."""
    body = state.body()
    signature = gateway_key.private_key(directory).sign(canonical(body))
    doc = {"format": FORMAT, "state": body, "signature": base64.b64encode(signature).decode()}
    data = (json.dumps(doc, indent=1) + "\n").encode()
    gateway_key.write_atomic(directory / STATE_FILE, data, 0o640)
    for path in copies:
        save_copy(directory, state, path)


def save_copy(directory: Path, state: LicenceState, path: Path) -> None:
    """Sign (with the key in ``directory``) and write one more copy of the state at ``path``."""
    body = state.body()
    signature = gateway_key.private_key(directory).sign(canonical(body))
    doc = {"format": FORMAT, "state": body, "signature": base64.b64encode(signature).decode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    gateway_key.write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode(), 0o640)
