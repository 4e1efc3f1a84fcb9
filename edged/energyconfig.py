"""Config sections of the energy features: ``[[virtual_meters]]`` formulas (see
``edged.virtualspec``), ``[load_profile]`` and ``[export]``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edged.api import Options
from edged.energystore import FILENAME
from edged.errors import ConfigError
from edged.loadprofile import INTERVAL
from edged.model import QUANTITIES
from edged.virtualspec import DEFAULT_SKEW, PHASED, Formula, Term, VirtualDef, parse_formula

SCHEDULES = ("daily", "monthly")


@dataclass(frozen=True)
class LoadProfileConfig:
    """Where the energy store lives and how much of it is kept."""

    path: Path
    keep_days: int
    max_bytes: int
    gap: float | None
    """Seconds between readings that make a gap; None: per point from its poll interval."""


@dataclass(frozen=True)
class ExportConfig:
    """Auto export (Professional, ``features.auto_export``)."""

    schedule: tuple[str, ...]
    directory: Path | None
    url: str | None
    token: str | None
    ca_file: Path | None
    points: tuple[str, ...]
    retry_initial: float
    retry_max: float


def _path(value: str, base: Path) -> Path:
    p = Path(value)
    return p if p.is_absolute() else (base / p).resolve()


def load_profile(o: Options, data_dir: Path) -> LoadProfileConfig:
    """Parse ``[load_profile]``."""
    path = o.str("path", FILENAME)
    cfg = LoadProfileConfig(
        path=Path(path) if Path(path).is_absolute() else data_dir / path,
        keep_days=o.int("keep_days", 400, min=1, max=36500),
        max_bytes=o.int("max_mb", 64, min=1) * 1024 * 1024,
        gap=o.float("gap", None, min=1, max=INTERVAL),
    )
    o.finish()
    return cfg


def export(o: Options, base: Path) -> ExportConfig:
    """Parse ``[export]`` (``check_export`` says whether an enabled export can deliver)."""
    raw = o.raw("schedule", ["daily"])
    sched = [raw] if isinstance(raw, str) else raw
    if not isinstance(sched, list) or not sched or any(s not in SCHEDULES for s in sched):
        raise o.error("schedule", f"expected one or more of {', '.join(SCHEDULES)}")
    directory = o.str("directory", None)
    url = o.str("url", None)
    if url is not None and not url.startswith(("http://", "https://")):
        raise o.error("url", "expected an http:// or https:// URL")
    token = o.str("token", None)
    token_file = o.str("token_file", None)
    if token_file is not None:
        if token is not None:
            raise o.error("token_file", "set either token or token_file, not both")
        try:
            token = _path(token_file, base).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise o.error("token_file", f"cannot read: {exc.strerror}") from None
    ca = o.str("ca_file", None)
    ca_file = _path(ca, base) if ca else None
    if ca_file is not None and not ca_file.is_file():
        raise o.error("ca_file", f"file not found: {ca_file}")
    points = o.raw("points", [])
    if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
        raise o.error("points", "expected an array of metering point ids")
    cfg = ExportConfig(
        schedule=tuple(dict.fromkeys(sched)),
        directory=_path(directory, base) if directory else None,
        url=url,
        token=token,
        ca_file=ca_file,
        points=tuple(points),
        retry_initial=o.float("retry_initial", 5.0, min=0.01),
        retry_max=o.float("retry_max", 600.0, min=0.01),
    )
    o.finish()
    return cfg


def check_export(enabled: bool, cfg: ExportConfig | None, file: str | None) -> None:
    """``features.auto_export`` needs somewhere to deliver (checked after the tier gate)."""
    if enabled and cfg is not None and cfg.directory is None and cfg.url is None:
        raise ConfigError(
            file, "export.directory", "features.auto_export needs a directory or a url (or both)"
        )


def virtual_def(o: Options, sources: Sequence[str]) -> VirtualDef:
    """The formulas, skew and staleness of one ``[[virtual_meters]]`` table."""
    src = o.source
    raw = o.raw("quantities", None)
    per_phase = o.bool("per_phase", False)
    skew = o.float("skew", DEFAULT_SKEW, min=0, max=3600)
    stale_after = o.float("stale_after", None, min=0.1, max=86400)
    formulas: list[Formula] = []
    if raw is None:
        if not sources:
            raise o.error("quantities", "required: a table of formulas (or a list of sources)")
        for q in ("energy_import", "power_active"):
            terms = tuple(Term(s, q, 1.0) for s in sources)
            formulas.append(Formula(q, terms, "sources"))
    else:
        if not isinstance(raw, dict) or not raw:
            raise o.error("quantities", 'expected a table of quantity = "formula"')
        for qname, text in raw.items():
            key = f"quantities.{qname}"
            if qname not in QUANTITIES:
                raise src.error(key, "unknown quantity (see the table in edged/model.py)")
            if not isinstance(text, str):
                raise src.error(key, 'expected a formula string like "grid.energy_import"')
            formulas.append(parse_formula(text, qname, src, key))
    if per_phase:
        have = {f.quantity for f in formulas}
        for f in list(formulas):
            if f.quantity in PHASED and all(t.quantity in PHASED for t in f.terms):
                for n in (1, 2, 3):
                    q = f"{f.quantity}_l{n}"
                    if q not in have:
                        terms = tuple(
                            Term(t.point, f"{t.quantity}_l{n}", t.weight) for t in f.terms
                        )
                        formulas.append(Formula(q, terms, f.key))
    return VirtualDef(tuple(formulas), skew, stale_after)
