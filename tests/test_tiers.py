"""Cloud account tier, publish intervals, feature gates and the licence planner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edged.config import load
from edged.errors import ConfigError
from edged.model import Tier
from edged.tiers import (
    FEATURE_TIERS,
    account_tier,
    check_features,
    metering_points,
    plan,
    plan_main,
    publish_interval,
    publish_intervals,
    tier_status,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "examples" / "zev-example.toml"

HEADER = """
[gateway]
id = "gw1"
data_dir = "{data}"

[connections.bus]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"

[connections.mbus-gw]
driver = "mbus"
transport = "tcp"
host = "127.0.0.1"
port = 10001
"""


def device(
    dev_id: str,
    tier: str | None = None,
    *,
    medium: str = "electricity",
    connection: str = "bus",
    publish: float | None = None,
) -> str:
    lines = [
        "[[devices]]",
        f'id = "{dev_id}"',
        f'connection = "{connection}"',
        f'medium = "{medium}"',
    ]
    if tier is not None:
        lines.append(f'cloud_licence = "{tier}"')
    if publish is not None:
        lines.append(f"publish_interval = {publish}")
    return "\n".join(lines) + "\n"


def virtual(vm_id: str, tier: str, sources: list[str], medium: str = "electricity") -> str:
    return (
        f'[[virtual_meters]]\nid = "{vm_id}"\ncloud_licence = "{tier}"\n'
        f'medium = "{medium}"\nsources = {json.dumps(sources)}\n'
    )


def write(tmp_path: Path, body: str, dropins: dict[str, str] | None = None) -> Path:
    main = tmp_path / "edged.toml"
    main.write_text(HEADER.format(data=tmp_path) + body, encoding="utf-8")
    for name, text in (dropins or {}).items():
        d = tmp_path / "conf.d"
        d.mkdir(exist_ok=True)
        (d / name).write_text(text, encoding="utf-8")
    return main


# --- account tier ------------------------------------------------------------------------------


def test_account_tier_is_the_lowest_metering_point(tmp_path: Path) -> None:
    cfg = load(
        write(
            tmp_path,
            device("a", "professional") + device("b", "limited") + device("c", "professional"),
        )
    )
    assert account_tier(cfg) is Tier.LIMITED


def test_account_tier_defaults_to_basic(tmp_path: Path) -> None:
    assert account_tier(load(write(tmp_path, ""))) is Tier.BASIC
    cfg = load(write(tmp_path, device("a", "professional") + device("b")))
    assert account_tier(cfg) is Tier.BASIC


def test_virtual_meter_counts_as_metering_point(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, device("a", "professional") + virtual("v", "limited", ["a"])))
    assert account_tier(cfg) is Tier.LIMITED
    assert [p.id for p in metering_points(cfg)] == ["a", "v"]


def test_mbus_gateway_connection_is_no_metering_point(tmp_path: Path) -> None:
    cfg = load(
        write(tmp_path, device("heat1", "professional", medium="heat", connection="mbus-gw"))
    )
    # The gateway connection itself carries no licence and does not pull the tier down.
    assert account_tier(cfg) is Tier.PROFESSIONAL
    assert [p.id for p in metering_points(cfg)] == ["heat1"]


@pytest.mark.parametrize(
    ("tier", "interval"), [("basic", 900.0), ("limited", 60.0), ("professional", 1.0)]
)
def test_tier_interval_applies_by_default(tmp_path: Path, tier: str, interval: float) -> None:
    cfg = load(write(tmp_path, device("a", tier)))
    assert publish_interval(cfg.devices[0], account_tier(cfg)) == (interval, None)


def test_longer_publish_interval_is_kept(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, device("a", "limited", publish=300)))
    assert publish_interval(cfg.devices[0], Tier.LIMITED) == (300.0, None)


def test_shorter_publish_interval_is_clamped_with_warning(tmp_path: Path) -> None:
    main = write(tmp_path, device("a", "professional") + device("b", "limited", publish=5))
    cfg = load(main)
    interval, warning = publish_interval(cfg.devices[1], account_tier(cfg))
    assert interval == 60.0
    assert warning is not None
    assert str(main) in warning
    assert "devices[1].publish_interval" in warning
    assert "limited" in warning and "60 s" in warning
    intervals, warnings = publish_intervals(cfg)
    assert intervals == {"a": 60.0, "b": 60.0}
    assert warnings == [warning]


def test_account_tier_not_device_tier_sets_interval(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, device("a", "professional") + device("b", "basic")))
    intervals, _ = publish_intervals(cfg)
    assert intervals == {"a": 900.0, "b": 900.0}


# --- feature gates -----------------------------------------------------------------------------

_BELOW = {Tier.LIMITED: ["basic"], Tier.PROFESSIONAL: ["basic", "limited"]}


@pytest.mark.parametrize(
    ("feature", "tier"),
    [(f, t) for f, needed in FEATURE_TIERS.items() for t in _BELOW[needed]],
)
def test_gated_feature_below_its_tier_is_refused(tmp_path: Path, feature: str, tier: str) -> None:
    needed = FEATURE_TIERS[feature].value
    main = write(
        tmp_path,
        f"[features]\n{feature} = true\n" + device("m1", "professional") + device("m2", tier),
    )
    with pytest.raises(ConfigError) as err:
        check_features(load(main))
    e = err.value
    assert e.file == str(main)
    assert e.key == f"features.{feature}"
    assert e.line is not None
    assert f"needs the {needed} cloud tier" in e.message
    assert f"account tier is {tier}" in e.message
    assert f"m2 ({tier})" in e.message
    assert "m1" not in e.message


@pytest.mark.parametrize("feature", sorted(FEATURE_TIERS))
def test_gated_feature_at_its_tier_is_accepted(tmp_path: Path, feature: str) -> None:
    needed = FEATURE_TIERS[feature].value
    main = write(tmp_path, f"[features]\n{feature} = true\n" + device("m1", needed))
    check_features(load(main))


def test_feature_gate_with_no_metering_points(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no metering point is configured"):
        check_features(load(write(tmp_path, "[features]\nactions = true\n")))


def test_feature_gate_points_at_the_dropin_that_set_it(tmp_path: Path) -> None:
    main = write(
        tmp_path,
        "[features]\nload_management = false\n" + device("m1", "limited"),
        dropins={"10-features.toml": "[features]\nload_management = true\n"},
    )
    with pytest.raises(ConfigError) as err:
        check_features(load(main))
    assert err.value.file == str(tmp_path / "conf.d" / "10-features.toml")
    assert err.value.key == "features.load_management"
    assert err.value.line == 2


def test_commercial_api_use_needs_professional(tmp_path: Path) -> None:
    main = write(tmp_path, '[cloud]\nusage = "commercial"\n' + device("m1", "limited"))
    with pytest.raises(ConfigError) as err:
        check_features(load(main))
    assert err.value.key == "cloud.usage"
    assert err.value.file == str(main)
    assert "commercial API use" in err.value.message
    assert "m1 (limited)" in err.value.message
    check_features(
        load(write(tmp_path, '[cloud]\nusage = "commercial"\n' + device("m1", "professional")))
    )


def test_configured_virtual_meters_need_professional(tmp_path: Path) -> None:
    main = write(tmp_path, device("m1", "professional") + virtual("v1", "limited", ["m1"]))
    with pytest.raises(ConfigError) as err:
        check_features(load(main))
    assert err.value.key == "virtual_meters[0]"
    assert "v1 (limited)" in err.value.message
    check_features(
        load(write(tmp_path, device("m1", "professional") + virtual("v1", "professional", ["m1"])))
    )


def test_ungated_limited_features_pass_on_limited(tmp_path: Path) -> None:
    main = write(
        tmp_path, "[features]\nactions = true\nload_profiles = true\n" + device("m1", "limited")
    )
    check_features(load(main))


# --- status ------------------------------------------------------------------------------------


def test_tier_status(tmp_path: Path) -> None:
    cfg = load(
        write(
            tmp_path,
            device("a", "professional")
            + device("b", "limited", publish=5)
            + virtual("v", "professional", ["a"]),
        )
    )
    status = tier_status(cfg)
    assert status["account_tier"] == status["name"] == "limited"
    assert status["interval"] == 60.0
    assert status["limited_by"] == ["b"]
    assert status["devices"] == {
        "a": {"cloud_licence": "professional", "publish_interval": 60.0},
        "b": {"cloud_licence": "limited", "publish_interval": 60.0},
    }
    assert status["virtual_meters"] == {"v": {"cloud_licence": "professional"}}
    assert len(status["warnings"]) == 1
    json.dumps(status)


# --- planner -----------------------------------------------------------------------------------


def test_example_config_is_valid_and_professional() -> None:
    cfg = load(EXAMPLE)
    check_features(cfg)
    assert account_tier(cfg) is Tier.PROFESSIONAL
    assert len(cfg.devices) == 17
    assert sum(1 for d in cfg.devices if d.connection == "mbus-gateway") == 12
    assert {c.driver for c in cfg.connections.values()} == {"modbus", "mbus"}


def test_planner_on_the_licence_sheet_example_prints_18(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert plan_main(["-c", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "6 electricity + 12 heat/water = 18" in out
    assert "M-Bus gateways            0" in out
    p = plan(load(EXAMPLE))
    assert (p.electricity, p.heat_water, p.total, p.gateways) == (6, 12, 18, 1)


def test_planner_zev_counts_defined_virtual_meters(capsys: pytest.CaptureFixture[str]) -> None:
    # The example already defines the one virtual meter a one-PV ZEV needs.
    assert plan_main(["-c", str(EXAMPLE), "--zev", "--pv", "1"]) == 0
    assert "= 18" in capsys.readouterr().out
    # More than one PV plant needs a second virtual meter.
    assert plan_main(["-c", str(EXAMPLE), "--zev", "--pv", "3"]) == 0
    out = capsys.readouterr().out
    assert "7 electricity + 12 heat/water = 19" in out
    assert "still to license: 1" in out


def test_planner_zev_adds_virtual_meters(tmp_path: Path) -> None:
    cfg = load(
        write(
            tmp_path, device("a") + device("b") + device("h", medium="heat", connection="mbus-gw")
        )
    )
    assert plan(cfg).total == 3
    one = plan(cfg, zev=True, pv=1)
    assert (one.electricity, one.zev_extra_virtual, one.total) == (3, 1, 4)
    two = plan(cfg, zev=True, pv=2)
    assert (two.electricity, two.heat_water, two.total) == (4, 1, 5)
    assert two.missing == 5
    with pytest.raises(ValueError):
        plan(cfg, zev=True, pv=0)


def test_planner_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        plan_main(["-c", str(EXAMPLE), "--pv", "2"])
    assert exc.value.code == 2
    assert plan_main(["-c", str(tmp_path / "missing.toml")]) == 78
    assert "file not found" in capsys.readouterr().err
