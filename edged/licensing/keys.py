"""Vendor public keys built into edged, and how a process comes to trust the test key.

The production key is the only key a gateway trusts. The test/demo key's private half is
committed with the tests, so nothing a gateway's operator can set at run time makes edged
trust it: no environment variable, no config key, no file beside the package. Code that
wants it hands it over explicitly: a store built with ``keys=with_test_keys()`` (tests), or
:func:`trust_in_this_process` called by the source checkout's launcher
``python -m tools.licensing.trusting …`` (end-to-end tests and ``make demo``), which is not
part of the ``edged`` package.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PRODUCTION_KEY_ID = "edged-vendor-2026"
TEST_KEY_ID = "edged-test-2026"

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
    """True when edged runs from a source checkout (used only to explain demo-trial)."""
    pkg = (package_dir or Path(__file__).resolve().parent.parent).resolve()
    if any(part in ("site-packages", "dist-packages") for part in pkg.parts):
        return False
    return (pkg.parent / "pyproject.toml").is_file()


_process_keys: KeyRing | None = None


def trust_in_this_process(keys: KeyRing) -> None:
    """Make stores created later in this process without ``keys=`` trust ``keys``.

    Only code can call this (the checkout's launcher and tests); the installed ``edged``
    command never does, whatever its environment or configuration says.
    """
    global _process_keys
    _process_keys = keys


def trusted_keys() -> KeyRing:
    """The key ring for this process: production only, unless code handed over another."""
    return _process_keys if _process_keys is not None else production_keys()
