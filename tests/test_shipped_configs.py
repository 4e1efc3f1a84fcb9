"""Every shipped configuration validates completely (structure, drivers, profiles, tiers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged import config as configmod
from edged.provisioning import provision

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted([ROOT / "config" / "edged.toml", *sorted((ROOT / "config").glob("*/*.toml"))])


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_shipped_config_passes_check(path: Path, tmp_path: Path) -> None:
    cfg = configmod.load(path)
    plan = provision(cfg, licence_dir=tmp_path)
    # without a licence nothing is admitted, but every device was validated by its driver
    assert len(plan.admitted) + len(plan.unlicensed) == len(cfg.devices)


def test_there_are_shipped_configs() -> None:
    names = {p.name for p in SHIPPED}
    assert {"edged.toml", "zev-example.toml"} <= names
