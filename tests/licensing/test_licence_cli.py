"""``edged license …`` and the vendor tool ``tools.licensing``: round trip in a temporary dir."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from edged.licensing import cli as licensing_cli
from edged.licensing import keys
from edged.licensing.cli import main
from tests.licensing.licence_helpers import TEST_KEY
from tools.licensing import issue


@pytest.fixture
def production_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # tests/conftest.py hands the TEST key to this process in code; undo that here, and set
    # the variable that used to enable it: it must make no difference any more.
    monkeypatch.setattr(keys, "_process_keys", None)
    monkeypatch.setenv("EDGED_TRUST_TEST_KEYS", "1")


def _config(tmp_path: Path, devices: int) -> Path:
    lines = [
        "[gateway]",
        'id = "gw1"',
        f'data_dir = "{tmp_path / "data"}"',
        "[licensing]",
        f'directory = "{tmp_path / "lic"}"',
        "[connections.bus]",
        'driver = "modbus"',
        'host = "127.0.0.1"',
    ]
    for i in range(devices):
        lines += ["[[devices]]", f'id = "m{i}"', 'connection = "bus"', f"address = {i + 1}"]
    path = tmp_path / "edged.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _issue(tmp_path: Path, code: str, name: str, *extra: str) -> Path:
    out = tmp_path / f"{name}.lic"
    argv = [
        "issue",
        "--key",
        str(TEST_KEY),
        "--install-code",
        code,
        "--customer",
        "C-1",
        "--id",
        name,
        "--out",
        str(out),
        *extra,
    ]
    assert issue.run(argv) == 0
    return out


def test_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, devices=6)
    assert main(["install-code", "-c", str(cfg)]) == 0
    code = capsys.readouterr().out.splitlines()[0]

    trial = _issue(tmp_path, code, "L-TRIAL", "--kind", "trial")
    cap = _issue(tmp_path, code, "L-CAP", "--kind", "capacity", "--capacity", "3")
    assert main(["activate", str(trial), "-c", str(cfg)]) == 0
    assert "activated L-TRIAL (trial, capacity 5" in capsys.readouterr().out

    assert main(["show", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"install code   {code}" in out
    assert "L-TRIAL" in out and "valid" in out
    assert "devices        5 of 5 used; unlicensed (2): m4, m5" in out

    assert main(["activate", str(cap), "--dir", str(tmp_path / "lic")]) == 0
    capsys.readouterr()
    assert main(["show", "-c", str(cfg)]) == 0
    assert "devices        7 of 8 used\n" in capsys.readouterr().out

    assert main(["release", "L-CAP", "-c", str(cfg)]) == 0
    receipt_text = capsys.readouterr().out
    assert '"licence_id": "L-CAP"' in receipt_text
    receipt_file = tmp_path / "receipt.json"
    receipt_file.write_text(receipt_text)
    assert issue.run(["verify-receipt", str(receipt_file)]) == 0
    assert "receipt valid: licence L-CAP" in capsys.readouterr().out

    assert main(["show", "-c", str(cfg)]) == 0
    assert "unlicensed (2)" in capsys.readouterr().out


def test_refusals_exit_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "lic")
    assert main(["install-code", "--dir", d]) == 0
    code = capsys.readouterr().out.splitlines()[0]
    lic = _issue(tmp_path, code, "L-CAP", "--kind", "capacity", "--capacity", "3")
    lic.write_bytes(lic.read_bytes().replace(b'"capacity": 3', b'"capacity": 9'))
    assert main(["activate", str(lic), "--dir", d]) == 1
    assert "refused: licence L-CAP: signature does not match" in capsys.readouterr().err
    assert main(["release", "L-NOPE", "--dir", d]) == 1
    assert "no active licence" in capsys.readouterr().err


def test_check_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "lic")
    assert (
        main(["check-upgrade", "0.2.0", "--date", "2027-01-01", "--kind", "feature", "--dir", d])
        == 1
    )
    assert "needs a maintenance licence" in capsys.readouterr().err
    assert (
        main(["check-upgrade", "0.1.1", "--date", "2027-01-01", "--kind", "update", "--dir", d])
        == 0
    )
    assert "no maintenance licence needed" in capsys.readouterr().out
    main(["install-code", "--dir", d])
    code = capsys.readouterr().out.splitlines()[0]
    maint = _issue(tmp_path, code, "L-M", "--kind", "maintenance", "--until", "2027-06-01")
    assert main(["activate", str(maint), "--dir", d]) == 0
    assert (
        main(["check-upgrade", "0.2.0", "--date", "2027-01-01", "--kind", "feature", "--dir", d])
        == 0
    )
    assert (
        main(["check-upgrade", "0.3.0", "--date", "2027-07-01", "--kind", "feature", "--dir", d])
        == 1
    )


@pytest.mark.usefixtures("production_only")
def test_the_environment_variable_no_longer_trusts_the_test_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "lic")
    main(["install-code", "--dir", d])
    code = capsys.readouterr().out.splitlines()[0]
    lic = _issue(tmp_path, code, "L-CAP", "--kind", "capacity", "--capacity", "3")
    assert main(["activate", str(lic), "--dir", d]) == 1
    assert "does not trust" in capsys.readouterr().err


def test_bad_config_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "edged.toml"
    cfg.write_text("[gateway]\n")
    assert main(["show", "-c", str(cfg)]) == 78
    assert "gateway.id" in capsys.readouterr().err


def test_plan_is_dispatched_to_the_tier_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("edged.tiers")

    def plan_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake.plan_main = plan_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "edged.tiers", fake)
    assert main(["plan", "-c", "x.toml"]) == 7
    assert seen == [["-c", "x.toml"]]


def test_issue_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "vendor.pem"
    assert issue.run(["keygen", "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert issue.run(["keygen", "--out", str(out)]) == 1


def test_demo_trial_activates_a_trial_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "lic")
    assert main(["demo-trial", "--dir", d]) == 0
    assert "activated demo trial" in capsys.readouterr().out
    assert main(["demo-trial", "--dir", d]) == 0
    assert "already installed" in capsys.readouterr().out
    assert main(["show", "--dir", d]) == 0
    assert "capacity       5 devices" in capsys.readouterr().out


@pytest.mark.usefixtures("production_only")
def test_demo_trial_counts_only_where_the_test_key_was_handed_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "lic")
    assert main(["demo-trial", "--dir", d]) == 0  # the checkout's tools trust it to activate
    capsys.readouterr()
    assert main(["show", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert "which this gateway does not trust" in out
    assert "capacity       0 devices" in out


def test_demo_trial_outside_a_checkout_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A wheel-installed edged has neither the signing tool nor the TEST key.
    monkeypatch.setattr(licensing_cli, "running_from_source", lambda: False)
    assert main(["demo-trial", "--dir", str(tmp_path / "lic")]) == 1
    err = capsys.readouterr().err
    assert "needs a source checkout" in err
    assert ".venv/bin/python -m tools.licensing.trusting license demo-trial" in err
    assert not (tmp_path / "lic").exists() or not list((tmp_path / "lic").rglob("*.lic"))


def test_issuing_tool_runs_as_a_module_from_the_checkout(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "tools.licensing", "keygen", "--out", str(tmp_path / "v.pem")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "public key (add to edged/licensing/keys.py)" in res.stdout
    assert (tmp_path / "v.pem").stat().st_mode & 0o777 == 0o600


def test_show_explains_the_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, devices=0)
    assert main(["install-code", "-c", str(cfg)]) == 0
    code = capsys.readouterr().out.splitlines()[0]
    cap = _issue(tmp_path, code, "L-CAP", "--kind", "capacity", "--capacity", "3")
    assert main(["activate", str(cap), "-c", str(cfg)]) == 0
    assert main(["release", "L-CAP", "-c", str(cfg)]) == 0
    (tmp_path / "lic" / "state.json").unlink()  # restored from the data-dir copy
    capsys.readouterr()
    assert main(["show", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "devices        1 of 0 used" in out  # the gateway always counts 1
    assert "history        trials used: none" in out
    assert "released: L-CAP (" in out
    assert "seen expired: none" in out
    assert "state.json is missing; restored from" in out
    assert "licence-history.json" in out
