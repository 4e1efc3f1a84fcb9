"""The licence directory's state file, signed by the gateway key.

It remembers what must not be forgotten when someone edits files by hand: which licences
were activated here, every trial ever activated, licences released from this gateway,
licences once seen expired, and the latest time seen (so a clock set back does not
revive an expired licence).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.licensing import gateway_key
from edged.licensing.licence import canonical

STATE_FILE = "state.json"
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
        }


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
    )


def load(directory: Path, install_code: str, have_licences: bool) -> LoadedState:
    """Read and check the state file; a fresh state when there is none and nothing to lose."""
    path = directory / STATE_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fresh = LicenceState(install_code)
        if have_licences:
            return LoadedState(fresh, "the licence state file is missing")
        return LoadedState(fresh, None)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return LoadedState(LicenceState(install_code), f"the licence state is unreadable ({exc})")
    try:
        body = doc["state"]
        state = _from_body(body)
        signature = base64.b64decode(doc["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        fresh = LicenceState(install_code)
        return LoadedState(fresh, f"the licence state is malformed ({exc.__class__.__name__})")
    key = gateway_key.public_key(directory)
    if key is None or not gateway_key.verify(key, signature, canonical(body)):
        return LoadedState(state, "the licence state was altered outside edged")
    if state.install_code != install_code:
        return LoadedState(state, "the licence directory belongs to another gateway")
    return LoadedState(state, None)


def save(directory: Path, state: LicenceState) -> None:
    """Sign and write the state atomically."""
    body = state.body()
    signature = gateway_key.private_key(directory).sign(canonical(body))
    doc = {"format": FORMAT, "state": body, "signature": base64.b64encode(signature).decode()}
    data = (json.dumps(doc, indent=1) + "\n").encode()
    gateway_key.write_atomic(directory / STATE_FILE, data, 0o640)
