"""Vendor public keys built into edged, and the rule for when the test key is trusted.

The production key is the only key a deployed gateway trusts. The test/demo key's private
half is committed with the tests, so trusting it must need more than a config edit: both
``EDGED_TRUST_TEST_KEYS=1`` in the process environment *and* edged running from a source
checkout (its package directory sits beside ``pyproject.toml`` and outside any
``site-packages``). A wheel-installed gateway therefore never trusts it.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PRODUCTION_KEY_ID = "edged-vendor-2026"
TEST_KEY_ID = "edged-test-2026"
TRUST_TEST_KEYS_ENV = "EDGED_TRUST_TEST_KEYS"

# Raw 32-byte Ed25519 public keys, base64.
PRODUCTION_PUBLIC_KEYS: Mapping[str, str] = MappingProxyType(
    {PRODUCTION_KEY_ID: "RxrwY7K72Fpf/BZS8gHh2JgyFFSdmh6AXKD76FeAM/s="}
)
TEST_PUBLIC_KEYS: Mapping[str, str] = MappingProxyType(
    {TEST_KEY_ID: "kd5JR7n0zBxi4T1XRDKp/8XHxo56VBtcFGr4Njkl4kw="}
)


def _load(b64: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64))


@dataclass(frozen=True)
class KeyRing:
    """The vendor keys a gateway accepts, plus the test keys it knows but refuses."""

    trusted: Mapping[str, Ed25519PublicKey]
    test_ids: frozenset[str] = field(default_factory=frozenset)

    def key(self, key_id: str) -> Ed25519PublicKey | None:
        """The trusted public key of that id, or None."""
        return self.trusted.get(key_id)

    def is_test(self, key_id: str) -> bool:
        """True for the test/demo key ids (trusted or not)."""
        return key_id in self.test_ids


def production_keys() -> KeyRing:
    """Only the production key: what a deployed gateway trusts."""
    return KeyRing(
        MappingProxyType({k: _load(v) for k, v in PRODUCTION_PUBLIC_KEYS.items()}),
        frozenset(TEST_PUBLIC_KEYS),
    )


def with_test_keys() -> KeyRing:
    """Production plus test keys; for code (tests, demo helpers) that opts in explicitly."""
    keys = {k: _load(v) for k, v in {**PRODUCTION_PUBLIC_KEYS, **TEST_PUBLIC_KEYS}.items()}
    return KeyRing(MappingProxyType(keys), frozenset(TEST_PUBLIC_KEYS))


def running_from_source(package_dir: Path | None = None) -> bool:
    """True when edged runs from a source checkout rather than an installed wheel."""
    pkg = (package_dir or Path(__file__).resolve().parent.parent).resolve()
    if any(part in ("site-packages", "dist-packages") for part in pkg.parts):
        return False
    return (pkg.parent / "pyproject.toml").is_file()


def may_trust_test_keys(
    environ: Mapping[str, str] | None = None, package_dir: Path | None = None
) -> bool:
    """Whether this process may trust the test key (environment variable *and* source tree)."""
    env = os.environ if environ is None else environ
    return env.get(TRUST_TEST_KEYS_ENV) == "1" and running_from_source(package_dir)


def trusted_keys(environ: Mapping[str, str] | None = None) -> KeyRing:
    """The key ring for this process: production, plus test keys only when allowed."""
    return with_test_keys() if may_trust_test_keys(environ) else production_keys()
