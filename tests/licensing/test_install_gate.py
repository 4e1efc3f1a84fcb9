"""The installer's maintenance gate (issue 16, item 4): `make install` refuses an upgrade to a
feature release that no installed licence covers, says why, and takes an override."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edged.licensing import RELEASE_DATE, RELEASE_KIND, RELEASE_VERSION
from edged.licensing.keys import with_test_keys
from tests.licensing.issuing import install_test_licence, issue_test_licence
from tests.licensing.licence_helpers import TEST_KEY
from tools.licensing import gate

REPO = Path(__file__).resolve().parents[2]
PREFIX = "opt/edged"


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


def installed_release(dest: Path, line: str) -> Path:
    path = dest / PREFIX / "share" / "edged" / "release"
    path.parent.mkdir(parents=True)
    path.write_text(line + "\n")
    return path


@pytest.mark.slow
@pytest.mark.slow
def test_make_install_refuses_an_uncovered_feature_upgrade_and_accepts_an_update(
    tmp_path: Path,
) -> None:
    assert RELEASE_KIND == "feature"
    dest = tmp_path / "root"
    installed_release(dest, "0.0.9 2026-01-01 feature")  # an older version is installed
    lic = tmp_path / "licences"
    res = make("install", f"DESTDIR={dest}", f"LICENCE_DIR={lic}")
    print(res.stderr)
    assert res.returncode != 0
    assert f"REFUSED: edged {RELEASE_VERSION} (feature release" in res.stderr
    assert "make install RELEASE_KIND=update" in res.stderr
    assert not (dest / PREFIX / "bin").exists()  # nothing was installed

    res = make("install", f"DESTDIR={dest}", f"LICENCE_DIR={lic}", "RELEASE_KIND=update")
    print(res.stdout)
    assert res.returncode == 0, res.stderr
    assert "update release, no maintenance licence needed" in res.stdout
    assert "overridden by RELEASE_KIND=update" in res.stdout
    assert (dest / PREFIX / "bin" / "edged").exists()  # installed this time


def test_first_installation_and_reinstall_need_no_licence(tmp_path: Path) -> None:
    marker = tmp_path / "release"
    allowed, reason = gate.check(tmp_path / "none", marker, None)
    assert allowed and "first installation" in reason
    marker.write_text(gate.release_line() + "\n")
    allowed, reason = gate.check(tmp_path / "none", marker, None)
    assert allowed and "reinstalling" in reason
    assert gate.release_line() == f"{RELEASE_VERSION} {RELEASE_DATE.isoformat()} feature"


def test_a_maintenance_licence_covering_the_release_lets_it_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "release"
    marker.write_text("0.0.9 2026-01-01 feature\n")
    lic = tmp_path / "licences"
    allowed, reason = gate.check(lic, marker, None)
    assert not allowed and "no licence directory" in reason
    install_test_licence(lic, TEST_KEY, "maintenance", days=365)
    # The gate trusts only the production key; the test hands it the test key instead.
    monkeypatch.setattr(gate, "production_keys", with_test_keys)
    before = sorted(p.name for p in lic.rglob("*"))
    allowed, reason = gate.check(lic, marker, None)
    assert allowed and "covered by maintenance licence" in reason
    assert sorted(p.name for p in lic.rglob("*")) == before  # read only


@pytest.mark.slow
def test_installed_wheel_refuses_test_key_licences_whatever_the_environment(
    tmp_path: Path,
) -> None:
    # Issue 16 item 5, on the real thing: `make install` into a DESTDIR (the wheel in its own
    # venv), then that interpreter with the variable that used to enable the test key and a
    # pyproject.toml planted beside the installed package.
    dest = tmp_path / "root"
    res = make("install", f"DESTDIR={dest}", f"LICENCE_DIR={tmp_path / 'none'}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "first installation" in res.stdout
    assert (dest / PREFIX / "share/edged/release").read_text() == gate.release_line() + "\n"
    python = dest / PREFIX / "bin" / "python"
    site = next((dest / PREFIX / "lib").glob("python3*/site-packages"))
    (site / "pyproject.toml").write_text("")
    lic_dir = tmp_path / "lic"
    env = {"EDGED_TRUST_TEST_KEYS": "1", "PATH": "/usr/bin:/bin"}
    code = subprocess.run(
        [str(python), "-m", "edged.cli", "license", "install-code", "--dir", str(lic_dir)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert code.returncode == 0, code.stderr
    data = issue_test_licence(TEST_KEY, code.stdout.strip(), "capacity", capacity=10)
    (tmp_path / "cap.lic").write_bytes(data)
    argv = ["license", "activate", str(tmp_path / "cap.lic"), "--dir", str(lic_dir)]
    res = subprocess.run(
        [str(python), "-m", "edged.cli", *argv],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    print(res.stderr)
    assert res.returncode == 1
    assert "signed with the test key 'edged-test-2026', which this gateway does not trust" in (
        res.stderr
    )
