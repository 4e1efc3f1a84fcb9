"""The ``[web]`` section: where the one HTTP server listens and who may change things.

Each ``[web]`` key that is not set takes the value of the ``[metrics]`` key it replaces
(``enabled``, ``host`` → ``address``, ``port``), so a configuration written for the
metrics endpoint keeps its address and port. Anything but loopback needs a password
hash, and TLS files or an explicit ``insecure = true``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from edged.api import Options
from edged.passwords import is_password_hash


@dataclass(frozen=True)
class WebConfig:
    """The validated ``[web]`` section."""

    enabled: bool
    address: str
    port: int
    password_hash: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False

    @property
    def tls(self) -> bool:
        """True when the server speaks HTTPS."""
        return self.tls_cert is not None


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; a name or any other address is not."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def parse_web(
    o: Options, legacy: Options, *, enabled: bool, host: str, port: int, base: Path
) -> WebConfig:
    """Validate ``[web]``; ``enabled``, ``host`` and ``port`` are the ``[metrics]`` values
    (``legacy`` locates an error in an address that came from ``[metrics] host``)."""
    on = o.bool("enabled", enabled)
    where = (o, "address") if o.has("address") else (legacy, "host")
    address = o.str("address", host)
    if not address:
        raise o.error("address", "must be an IP address or a host name")
    number = o.int("port", port, min=0, max=65535)
    password = o.str("password_hash", None)
    if password is not None and not is_password_hash(password):
        raise o.error(
            "password_hash",
            "expected a hash made by `edged web hash-password` (scrypt$N$r$p$salt$hash), "
            "never the password itself",
        )
    files: dict[str, Path | None] = {}
    for key in ("tls_cert", "tls_key"):
        value = o.str(key, None)
        path = None
        if value is not None:
            path = Path(value) if Path(value).is_absolute() else (base / value).resolve()
            if not path.is_file():
                raise o.error(key, f"file not found: {path}")
        files[key] = path
    if (files["tls_cert"] is None) != (files["tls_key"] is None):
        raise o.error("tls_key", "tls_cert and tls_key go together")
    insecure = o.bool("insecure", False)
    if on and not is_loopback(address):
        if password is None:
            raise where[0].error(
                where[1],
                f"{address} is reachable from other machines: set [web] password_hash "
                "(`edged web hash-password`) or keep the default 127.0.0.1 and use an SSH tunnel",
            )
        if files["tls_cert"] is None and not insecure:
            raise where[0].error(
                where[1],
                f"{address} is reachable from other machines: set [web] tls_cert and tls_key, "
                "or insecure = true to send the password unencrypted",
            )
    o.finish()
    return WebConfig(on, address, number, password, files["tls_cert"], files["tls_key"], insecure)
