"""Validated settings of an OCPP connection (the listening server) and of its chargers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from drivers.ocpp.passwords import is_password_hash
from edged.api import Options
from edged.model import ConnectionSpec, DeviceSpec

VERSIONS = ("1.6", "2.0.1")
ID_TOKEN_TYPES = (
    "Central",
    "eMAID",
    "ISO14443",
    "ISO15693",
    "KeyCode",
    "Local",
    "MacAddress",
    "NoAuthorization",
)
"""OCPP 2.0.1 IdTokenEnumType."""
DEFAULT_ID_TOKEN_TYPE = "ISO14443"
"""An RFID card's type: what a tag is when nothing says otherwise."""
SUBPROTOCOLS: Mapping[str, str] = {"2.0.1": "ocpp2.0.1", "1.6": "ocpp1.6"}
"""Subprotocol per OCPP version, in the server's order of preference."""


@dataclass(frozen=True)
class ChargerSettings:
    """One configured charger: its device id, charge point id and credentials."""

    device_id: str
    charge_point_id: str
    password_hash: str | None
    versions: tuple[str, ...]
    id_token_type: str = DEFAULT_ID_TOKEN_TYPE
    """The OCPP 2.0.1 type of the tags this charger reads (remote starts send it)."""


@dataclass(frozen=True)
class OcppSettings:
    """The listening central system and the chargers allowed to connect to it."""

    host: str
    port: int
    heartbeat_interval: int
    max_message_size: int
    tls_cert: str | None
    tls_key: str | None
    auth: str
    id_tags: frozenset[str] | None
    chargers: Mapping[str, ChargerSettings]
    """Chargers by charge point id."""
    name: str = ""
    """The connection's name in the configuration."""

    @property
    def endpoint(self) -> str:
        """``ocpp://host:port`` of the listening socket."""
        return f"ocpp://{self.host}:{self.port}"

    @property
    def tls(self) -> bool:
        """True when the server speaks TLS (security profile 2)."""
        return self.tls_cert is not None


def _pem_file(opts: Options, key: str, value: str, base: Path) -> str:
    path = Path(value) if Path(value).is_absolute() else (base / value).resolve()
    if not path.is_file():
        raise opts.error(key, f"file not found: {path}")
    return str(path)


def parse(connection: ConnectionSpec, devices: Sequence[DeviceSpec]) -> OcppSettings:
    """Validate the connection and device settings; raise ConfigError naming file and key."""
    opts = Options.of(connection)
    host = opts.str("host", "0.0.0.0")
    port = opts.int("port", 9000, min=1, max=65535)
    heartbeat = opts.int("heartbeat_interval", 300, min=1, max=86400)
    max_size = opts.int("max_message_size", 65536, min=1024, max=16 * 1024 * 1024)
    tls_cert = opts.str("tls_cert", None)
    tls_key = opts.str("tls_key", None)
    if (tls_cert is None) != (tls_key is None):
        missing = "tls_key" if tls_key is None else "tls_cert"
        raise opts.error(missing, "tls_cert and tls_key must be given together")
    # Relative paths are relative to the file that names them (systemd starts us in /).
    base = Path(connection.source.file).parent if connection.source.file else Path.cwd()
    if tls_cert is not None:
        tls_cert = _pem_file(opts, "tls_cert", tls_cert, base)
    if tls_key is not None:
        tls_key = _pem_file(opts, "tls_key", tls_key, base)
    raw_tags = opts.raw("id_tags", None)
    id_tags: frozenset[str] | None = None
    if raw_tags is not None:
        if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
            raise opts.error("id_tags", "expected an array of strings")
        id_tags = frozenset(raw_tags)
    chargers = _chargers(devices)
    any_password = any(c.password_hash for c in chargers.values())
    auth = opts.choice("auth", ("none", "basic"), "basic" if any_password else "none")
    opts.finish()
    if auth == "basic":
        for dev in devices:
            cp = _cp_id(dev)
            if chargers[cp].password_hash is None:
                raise dev.source.error(
                    "password_hash",
                    "auth = 'basic' needs a password_hash on every charger "
                    "(make one with `edged ocpp hash-password`)",
                )
    return OcppSettings(
        host=host,
        port=port,
        heartbeat_interval=heartbeat,
        max_message_size=max_size,
        tls_cert=tls_cert,
        tls_key=tls_key,
        auth=auth,
        id_tags=id_tags,
        chargers=chargers,
        name=connection.name,
    )


def _cp_id(dev: DeviceSpec) -> str:
    return str(dev.address) if dev.address is not None else dev.id


def _chargers(devices: Sequence[DeviceSpec]) -> dict[str, ChargerSettings]:
    chargers: dict[str, ChargerSettings] = {}
    for dev in devices:
        opts = Options.of(dev)
        cp = _cp_id(dev)
        if not cp or "/" in cp or len(cp) > 48:
            raise dev.source.error("address", f"invalid charge point id {cp!r}")
        if cp in chargers:
            raise dev.source.error("address", f"charge point id {cp!r} is used twice")
        pw = opts.str("password_hash", None)
        if pw is not None and not is_password_hash(pw):
            raise opts.error(
                "password_hash",
                "expected a hash made by `edged ocpp hash-password` (scrypt$N$r$p$salt$hash), "
                "never a clear-text password",
            )
        version = opts.choice("ocpp_version", VERSIONS, None)
        token_type = opts.choice("id_token_type", ID_TOKEN_TYPES, DEFAULT_ID_TOKEN_TYPE)
        opts.finish()
        versions = (version,) if version else VERSIONS
        chargers[cp] = ChargerSettings(dev.id, cp, pw, versions, token_type)
    return chargers
