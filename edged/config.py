"""Reading and validating the TOML configuration.

The main file is read first, then ``conf.d/*.toml`` beside it in name order.
Sections merge key by key (a later file overrides a scalar), connections merge
by name (a name defined twice is an error), and ``[[devices]]`` /
``[[virtual_meters]]`` are appended in file order, which is the order devices
are admitted under the licence. Driver-specific keys are kept as raw settings
and validated once by the driver (see ``edged.provisioning.provision``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from edged import energyconfig
from edged.actions import config as actions_config
from edged.actions.config import Rule
from edged.api import DEVICE_KEYS, Options
from edged.errors import ConfigError
from edged.loadmgmt import config as loadmgmt
from edged.modbus_server import config as modbus_server_config
from edged.model import ConnectionSpec, DeviceSpec, Source, Tier
from edged.virtualspec import VirtualDef
from edged.virtualspec import check as check_virtual
from edged.web.settings import WebConfig, parse_web

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MEDIA = (
    "electricity",
    "heat",
    "cold",
    "heat_cold",
    "water",
    "hot_water",
    "gas",
    "ev_charger",
    "other",
)


@dataclass(frozen=True)
class GatewayConfig:
    """Identity of this gateway."""

    id: str
    data_dir: Path
    # Searched for device profiles by name before the drivers' shipped ones (edged.profiles).
    profile_dir: Path | None = None


@dataclass(frozen=True)
class TlsConfig:
    """TLS settings of the MQTT session."""

    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None
    insecure: bool


@dataclass(frozen=True)
class MqttConfig:
    """The MQTT uplink."""

    host: str
    port: int
    protocol: str
    client_id: str
    topic_prefix: str
    username: str | None
    password: str | None
    keepalive: int
    tls: TlsConfig | None
    max_inflight: int
    backoff_initial: float
    backoff_max: float
    batch: int = 100
    """Most records per MQTT message (1: one record per message); see docs/uplink.md."""


@dataclass(frozen=True)
class OutboxConfig:
    """The durable outbox."""

    path: Path
    max_records: int | None
    """None: derived from ``outage_hours`` and the site (edged/outbox_sizing.py)."""
    max_mb: int | None
    synchronous: str
    outage_hours: float = 24.0


@dataclass(frozen=True)
class CloudConfig:
    """Cloud account usage and gated features."""

    usage: str
    features: Mapping[str, bool]


@dataclass(frozen=True)
class ControlConfig:
    """The local control socket."""

    socket: Path


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint."""

    enabled: bool
    host: str
    port: int


@dataclass(frozen=True)
class LicensingConfig:
    """Where licences live and when to warn about maintenance."""

    directory: Path
    warn_days: tuple[int, ...]
    clock_tolerance: float


@dataclass(frozen=True)
class VirtualMeter:
    """A metering point computed from other metering points (counts for tier and plan)."""

    id: str
    medium: str
    cloud_licence: Tier
    sources: tuple[str, ...]
    source: Source
    # Its formulas, skew and staleness (edged.virtualspec); None only when built by hand.
    compute: VirtualDef | None = None


@dataclass(frozen=True)
class Config:
    """A whole validated configuration."""

    files: tuple[Path, ...]
    gateway: GatewayConfig
    mqtt: MqttConfig
    outbox: OutboxConfig
    cloud: CloudConfig
    control: ControlConfig
    metrics: MetricsConfig
    licensing: LicensingConfig
    log_level: str
    connections: Mapping[str, ConnectionSpec]
    devices: tuple[DeviceSpec, ...]
    virtual_meters: tuple[VirtualMeter, ...] = field(default=())
    # Metering points that set no ``cloud_licence`` and so count as Basic.
    no_cloud_licence: tuple[str, ...] = field(default=())
    log_libraries: str = "warning"
    """Level of the protocol libraries' own loggers (pymodbus, websockets, ...)."""
    # If/then rules ([[actions]], edged.actions).
    actions: tuple[Rule, ...] = field(default=())
    modbus_server: modbus_server_config.ModbusServerConfig = field(
        default_factory=modbus_server_config.ModbusServerConfig
    )
    load_profile: energyconfig.LoadProfileConfig | None = None
    export: energyconfig.ExportConfig | None = None
    load_management: loadmgmt.LoadManagementConfig = field(
        default_factory=loadmgmt.LoadManagementConfig
    )
    # The one HTTP server (console, REST, /metrics); see edged/web/settings.py.
    web: WebConfig = field(default=WebConfig(False, "127.0.0.1", 9108))


FEATURES = (
    "virtual_meters",
    "load_management",
    "modbus_server",
    "auto_export",
    "actions",
    "load_profiles",
)

_SECTIONS = (
    "gateway",
    "mqtt",
    "outbox",
    "cloud",
    "features",
    "control",
    "metrics",
    "licensing",
    "logging",
    "modbus_server",
    "load_profile",
    "export",
    "load_management",
    "web",
)


class _Merged:
    """Config tables merged from several files, remembering which file set each key."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
        self.origin: dict[str, str] = {}
        self.connections: dict[str, tuple[dict[str, Any], Source]] = {}
        self.devices: list[tuple[dict[str, Any], Source]] = []
        self.virtual: list[tuple[dict[str, Any], Source]] = []
        self.actions: list[tuple[dict[str, Any], Source]] = []
        self.circuits: list[tuple[dict[str, Any], Source]] = []
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, file: Path, doc: dict[str, Any]) -> None:
        name = str(file)
        for key, value in doc.items():
            if key in self.sections:
                if not isinstance(value, dict):
                    raise ConfigError(name, key, "expected a table")
                for k, v in value.items():
                    if isinstance(v, dict) and key == "mqtt" and k == "tls":
                        merged = self.sections[key].setdefault("tls", {})
                        merged.update(v)
                    else:
                        self.sections[key][k] = v
                    self.origin[f"{key}.{k}"] = name
            elif key == "connections":
                if not isinstance(value, dict):
                    raise ConfigError(name, key, "expected tables [connections.NAME]")
                for cname, table in value.items():
                    if not isinstance(table, dict):
                        raise ConfigError(name, f"connections.{cname}", "expected a table")
                    if cname in self.connections:
                        first = self.connections[cname][1].file
                        raise ConfigError(
                            name,
                            f"connections.{cname}",
                            f"connection defined twice (first in {first})",
                        )
                    self.connections[cname] = (table, Source(name, f"connections.{cname}"))
            elif key in ("devices", "virtual_meters", "actions", "circuits"):
                if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
                    raise ConfigError(name, key, f"expected an array of tables [[{key}]]")
                target = {
                    "devices": self.devices,
                    "virtual_meters": self.virtual,
                    "circuits": self.circuits,
                }.get(key, self.actions)
                for i, table in enumerate(value):
                    target.append((table, Source(name, f"{key}[{i}]")))
            else:
                known = ", ".join(
                    [*_SECTIONS, "connections", "devices", "virtual_meters", "actions", "circuits"]
                )
                raise ConfigError(name, key, f"unknown section (known: {known})")

    def section(self, name: str, main: str) -> Options:
        """Options of one section; errors point at the file that set the key."""
        data = self.sections[name]
        return _SectionOptions(data, Source(main, name), self.origin, name)


class _SectionOptions(Options):
    def __init__(
        self, data: Mapping[str, Any], source: Source, origin: Mapping[str, str], section: str
    ):
        super().__init__(data, source)
        self._origin = origin
        self._section = section

    def error(self, key: str, message: str) -> ConfigError:
        file = self._origin.get(f"{self._section}.{key}", self.source.file)
        return ConfigError(file, f"{self._section}.{key}", message)


def config_files(path: Path) -> list[Path]:
    """The main file followed by its drop-ins in name order."""
    dropins = path.parent / "conf.d"
    files = [path]
    if dropins.is_dir():
        files.extend(sorted(p for p in dropins.glob("*.toml") if p.is_file()))
    return files


def _read(file: Path) -> dict[str, Any]:
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc}") from None
    try:
        # Editors on Windows save a UTF-8 byte order mark; it is not part of the TOML.
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            file, "", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save it as UTF-8", line=line
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(file, text, str(exc)) from None


def _syntax_error(file: Path, text: str, error: str) -> ConfigError:
    """A TOML syntax error with its line and, for a key set twice, the key."""
    m = re.search(r"\(at line (\d+), column (\d+)\)", error)
    msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", error)
    lines = text.splitlines()
    line: int | None
    if m:
        line = int(m.group(1))
    else:
        # "at end of document": a truncated file; point at its last non-empty line.
        line = max((i + 1 for i, ln in enumerate(lines) if ln.strip()), default=1)
        msg += " (the file ends early: truncated?)"
    key = ""
    if msg.startswith("Cannot overwrite a value") and line <= len(lines):
        km = re.match(r"\s*([A-Za-z0-9_.\-\"' ]+?)\s*=", lines[line - 1])
        if km:
            table = ""
            for ln in reversed(lines[: line - 1]):
                hm = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?", ln)
                if hm:
                    table = hm.group(1) + "."
                    break
            key = table + km.group(1).replace(" ", "")
            msg += " (this key is set twice)"
    return ConfigError(file, key, f"TOML syntax error: {msg}", line=line)


def load(path: str | Path) -> Config:
    """Read and validate the main file and its drop-ins (structure only; drivers check later)."""
    main = Path(path)
    merged = _Merged()
    files = config_files(main)
    for file in files:
        merged.add(file, _read(file))
    mainname = str(main)

    g = merged.section("gateway", mainname)
    gw_id = g.str("id")
    if not ID_PATTERN.match(gw_id):
        raise g.error("id", "must be 1-64 letters, digits, '.', '_' or '-'")
    data_dir = Path(g.str("data_dir", "/var/lib/edged"))
    if not data_dir.is_absolute():
        data_dir = (main.parent / data_dir).resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise g.error("data_dir", f"not a directory: {data_dir} (the outbox and state go there)")
    # Default: profiles/ beside the main file (/etc/edged/profiles); it need not exist.
    configured = g.str("profile_dir", None)
    profile_dir = _path(configured or "profiles", main.parent)
    if configured is not None and not profile_dir.is_dir():
        raise g.error("profile_dir", f"not a directory: {profile_dir}")
    g.finish()
    gateway = GatewayConfig(gw_id, data_dir, profile_dir)

    mqtt = _mqtt(merged.section("mqtt", mainname), gw_id, main.parent)
    outbox = _outbox(merged.section("outbox", mainname), data_dir)

    c = merged.section("cloud", mainname)
    usage = c.choice("usage", ("private", "commercial"), "private")
    c.finish()
    f = merged.section("features", mainname)
    features = {name: f.bool(name, False) for name in FEATURES}
    f.finish()
    cloud = CloudConfig(usage, MappingProxyType(features))

    ctl = merged.section("control", mainname)
    control = ControlConfig(_path(ctl.str("socket", str(data_dir / "control.sock")), main.parent))
    ctl.finish()

    m = merged.section("metrics", mainname)
    metrics = MetricsConfig(
        m.bool("enabled", True), m.str("host", "127.0.0.1"), m.int("port", 9108, min=0, max=65535)
    )
    m.finish()
    web = parse_web(
        merged.section("web", mainname),
        m,
        enabled=metrics.enabled,
        host=metrics.host,
        port=metrics.port,
        base=main.parent,
    )

    lic = merged.section("licensing", mainname)
    warn = lic.raw("warn_days", [60, 30, 7, 1])
    if not isinstance(warn, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in warn
    ):
        raise lic.error("warn_days", "expected an array of non-negative integers")
    licensing = LicensingConfig(
        _path(lic.str("directory", "/var/lib/edged-licences"), main.parent),
        tuple(sorted(set(warn), reverse=True)),
        lic.float("clock_tolerance", 3600.0, min=0),
    )
    lic.finish()

    lg = merged.section("logging", mainname)
    log_level = lg.choice("level", ("debug", "info", "warning", "error"), "info")
    log_libraries = lg.choice("libraries", ("debug", "info", "warning", "error"), "warning")
    lg.finish()

    connections: dict[str, ConnectionSpec] = {}
    for cname, (table, src) in merged.connections.items():
        if not ID_PATTERN.match(cname):
            raise src.error("", "connection name must be 1-64 letters, digits, '.', '_' or '-'")
        opts = Options(table, src)
        driver = opts.str("driver")
        settings = {k: v for k, v in table.items() if k != "driver"}
        connections[cname] = ConnectionSpec(cname, driver, MappingProxyType(settings), src)

    devices: list[DeviceSpec] = []
    seen: dict[str, Source] = {}
    for table, src in merged.devices:
        dev = _device(table, src, connections, profile_dir)
        if dev.id in seen:
            first = seen[dev.id]
            raise src.error(
                "id", f"duplicate device id {dev.id!r} (first in {first.file}, {first.key})"
            )
        seen[dev.id] = src
        devices.append(dev)
    _check_licence_groups(devices)

    virtual: list[VirtualMeter] = []
    for table, src in merged.virtual:
        vm = _virtual(table, src)
        if vm.id in seen:
            raise src.error("id", f"duplicate device id {vm.id!r}")
        seen[vm.id] = src
        virtual.append(vm)
    check_virtual(
        [(v.id, v.compute, v.source, v.sources) for v in virtual if v.compute is not None],
        {d.id: d for d in devices},
    )

    load_profile = energyconfig.load_profile(merged.section("load_profile", mainname), data_dir)
    export = energyconfig.export(merged.section("export", mainname), main.parent)

    modbus_server = modbus_server_config.parse(merged.section("modbus_server", mainname), [*seen])
    load_management = loadmgmt.parse(
        merged.section("load_management", mainname),
        merged.circuits,
        devices,
        feature_enabled=features["load_management"],
    )

    return Config(
        files=tuple(files),
        gateway=gateway,
        mqtt=mqtt,
        outbox=outbox,
        cloud=cloud,
        control=control,
        metrics=metrics,
        licensing=licensing,
        log_level=log_level,
        log_libraries=log_libraries,
        connections=MappingProxyType(connections),
        devices=tuple(devices),
        virtual_meters=tuple(virtual),
        actions=actions_config.parse(merged.actions, list(seen)),
        no_cloud_licence=tuple(
            str(table["id"])
            for table, _ in [*merged.devices, *merged.virtual]
            if "cloud_licence" not in table
        ),
        modbus_server=modbus_server,
        load_profile=load_profile,
        export=export,
        load_management=load_management,
        web=web,
    )


def _path(value: str, base: Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (base / p).resolve()


def _mqtt(o: Options, gw_id: str, base: Path) -> MqttConfig:
    host = o.str("host", "127.0.0.1")
    port = o.int("port", 1883, min=1, max=65535)
    protocol = o.choice("protocol", ("3.1.1", "5"), "3.1.1")
    client_id = o.str("client_id", f"edged-{gw_id}")
    prefix = o.str("topic_prefix", "edged")
    if (
        not prefix
        or any(ch in prefix for ch in "#+")
        or prefix.startswith("/")
        or prefix.endswith("/")
    ):
        raise o.error("topic_prefix", "must be a topic without wildcards or leading/trailing '/'")
    username = o.str("username", None)
    password = o.str("password", None)
    pwfile = o.str("password_file", None)
    if pwfile is not None:
        if password is not None:
            raise o.error("password_file", "set either password or password_file, not both")
        try:
            password = _path(pwfile, base).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise o.error("password_file", f"cannot read: {exc.strerror}") from None
    keepalive = o.int("keepalive", 30, min=5, max=3600)
    max_inflight = o.int("max_inflight", 16, min=1, max=1000)
    b0 = o.float("backoff_initial", 1.0, min=0.01)
    b1 = o.float("backoff_max", 60.0, min=0.01)
    batch = o.int("batch", 100, min=1, max=1000)
    tls_raw = o.raw("tls", None)
    tls = None
    if tls_raw is not None:
        if not isinstance(tls_raw, dict):
            raise o.error("tls", "expected a table [mqtt.tls]")
        t = Options(tls_raw, Source(o.source.file, "mqtt.tls"))
        if t.bool("enabled", True):
            files: dict[str, Path | None] = {}
            for key in ("ca_file", "cert_file", "key_file"):
                v = t.str(key, None)
                path = _path(v, base) if v else None
                if path is not None and not path.is_file():
                    raise t.error(key, f"file not found: {path}")
                files[key] = path
            if (files["cert_file"] is None) != (files["key_file"] is None):
                raise t.error("key_file", "cert_file and key_file go together")
            tls = TlsConfig(
                files["ca_file"], files["cert_file"], files["key_file"], t.bool("insecure", False)
            )
        else:
            for key in ("ca_file", "cert_file", "key_file", "insecure"):
                t.raw(key, None)
        t.finish()
    o.finish()
    return MqttConfig(
        host,
        port,
        protocol,
        client_id,
        prefix,
        username,
        password,
        keepalive,
        tls,
        max_inflight,
        b0,
        b1,
        batch,
    )


def _outbox(o: Options, data_dir: Path) -> OutboxConfig:
    path = o.str("path", "outbox.sqlite")
    p = Path(path) if Path(path).is_absolute() else data_dir / path
    cfg = OutboxConfig(
        path=p,
        max_records=o.int("max_records", None, min=1),
        max_mb=o.int("max_mb", None, min=1),
        synchronous=o.choice("synchronous", ("normal", "full"), "normal"),
        outage_hours=o.float("outage_hours", 24.0, min=0.1, max=24 * 366),
    )
    o.finish()
    return cfg


_DEVICE_KEYS = DEVICE_KEYS


def _device(
    table: dict[str, Any],
    src: Source,
    connections: Mapping[str, ConnectionSpec],
    profile_dir: Path | None = None,
) -> DeviceSpec:
    o = Options(table, src)
    dev_id = o.str("id")
    if not ID_PATTERN.match(dev_id):
        raise o.error("id", "must be 1-64 letters, digits, '.', '_' or '-' (it is used in topics)")
    conn_name = o.str("connection")
    if conn_name not in connections:
        known = ", ".join(sorted(connections)) or "none defined"
        raise o.error("connection", f"no connection named {conn_name!r} (known: {known})")
    address = o.raw("address", None)
    if address is not None and (isinstance(address, bool) or not isinstance(address, int | str)):
        raise o.error("address", "expected an integer or a string")
    labels = _labels(o)
    tier = o.choice("cloud_licence", tuple(t.value for t in Tier), "basic")
    profile = o.str("profile", None)
    spec = DeviceSpec(
        id=dev_id,
        driver=connections[conn_name].driver,
        connection=conn_name,
        address=address,
        profile=profile,
        poll_interval=o.float("poll_interval", 1.0, min=0.05, max=86400),
        publish_interval=o.float("publish_interval", None, min=1, max=86400),
        cloud_licence=Tier(tier),
        licence_group=o.str("licence_group", None),
        medium=o.choice("medium", MEDIA, "electricity"),
        labels=MappingProxyType(dict(labels)),
        settings=MappingProxyType({k: v for k, v in table.items() if k not in _DEVICE_KEYS}),
        source=src,
        profile_dir=profile_dir if profile is not None else None,
    )
    return spec


# An I/O module shows up as at most this many logical devices (docs/licensing.md).
LICENCE_GROUP_MAX = 3


MAX_LABELS = 16
"""Labels per device: they become metric series, so their number is bounded."""
_LABEL_KEY = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$")


def _labels(o: Options) -> dict[str, str]:
    """A device's ``labels``: short string values under keys usable as metric label values."""
    labels = o.raw("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise o.error("labels", 'expected a table of strings, e.g. labels = { flat = "3a" }')
    if len(labels) > MAX_LABELS:
        raise o.error("labels", f"at most {MAX_LABELS} labels per device, got {len(labels)}")
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise o.error(
                "labels",
                f"label {key!r}: a key is letters, digits and '_', not starting with a digit",
            )
        if len(value) > 200:
            raise o.error("labels", f"label {key!r}: at most 200 characters")
    return dict(labels)


def _check_licence_groups(devices: Sequence[DeviceSpec]) -> None:
    """A ``licence_group`` must be what is physically one I/O module, or it is an error.

    Devices sharing a group count as one capacity unit, so a group may only hold what is one
    module: at most three logical devices, one connection and one physical address.
    """
    first: dict[str, DeviceSpec] = {}
    members: dict[str, list[str]] = {}
    for dev in devices:
        group = dev.licence_group
        if group is None:
            continue
        if group not in first:
            first[group] = dev
            members[group] = [dev.id]
            continue
        head = first[group]
        if dev.connection != head.connection:
            raise dev.source.error(
                "licence_group",
                f"licence group {group!r} is one I/O module on connection "
                f"{head.connection!r} (device {head.id!r}); device {dev.id!r} is on connection "
                f"{dev.connection!r}: devices on different connections are separate devices",
            )
        if dev.address != head.address:
            raise dev.source.error(
                "licence_group",
                f"licence group {group!r} is one I/O module at address {head.address!r} "
                f"(device {head.id!r}); device {dev.id!r} has address {dev.address!r}: "
                "devices at different addresses are separate devices",
            )
        if len(members[group]) >= LICENCE_GROUP_MAX:
            raise dev.source.error(
                "licence_group",
                f"licence group {group!r} already has {LICENCE_GROUP_MAX} devices "
                f"({', '.join(members[group])}); one I/O module shows up as at most "
                f"{LICENCE_GROUP_MAX} logical devices, so {dev.id!r} is a separate device",
            )
        members[group].append(dev.id)


def _virtual(table: dict[str, Any], src: Source) -> VirtualMeter:
    o = Options(table, src)
    vid = o.str("id")
    if not ID_PATTERN.match(vid):
        raise o.error("id", "must be 1-64 letters, digits, '.', '_' or '-'")
    sources = o.raw("sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise o.error("sources", "expected an array of device ids")
    compute = energyconfig.virtual_def(o, tuple(sources))
    vm = VirtualMeter(
        vid,
        o.choice("medium", MEDIA, "electricity"),
        Tier(o.choice("cloud_licence", tuple(t.value for t in Tier), "basic")),
        tuple(sources) or compute.points,
        src,
        compute,
    )
    o.finish()
    return vm
