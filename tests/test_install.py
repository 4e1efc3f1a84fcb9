"""`make install` into a DESTDIR: the staged tree, the unit's checks, upgrade and uninstall."""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PREFIX = "/opt/edged"

pytestmark = pytest.mark.slow


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a make target of the project and fail the test with its output on error."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"make {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze (installed by .ci/run when missing)."""
    exe = shutil.which("systemd-analyze")
    assert exe, "systemd-analyze is missing: apt-get install systemd"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_install_into_destdir_upgrade_and_uninstall(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    make("install", f"DESTDIR={dest}")
    root = dest / PREFIX.lstrip("/")

    # The daemon in its own virtualenv, with scripts pointing at the final location.
    edged = root / "bin" / "edged"
    assert os.access(edged, os.X_OK)
    assert edged.read_text().splitlines()[0] == f"#!{PREFIX}/bin/python"
    for script in [*(root / "bin").iterdir(), root / "pyvenv.cfg"]:
        if script.is_file() and not script.is_symlink():
            assert str(dest) not in script.read_text(errors="replace"), script
    link = dest / "usr/bin/edged"
    assert link.is_symlink() and os.readlink(link) == f"{PREFIX}/bin/edged"

    # The staged interpreter imports the installed package, not the checkout.
    probe = subprocess.run(
        [str(root / "bin/python"), "-c",
         "import edged.systemd, edged.control, edged.metrics, edged.logsetup, drivers, "
         "prometheus_client, aiomqtt, pymodbus; print(edged.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=True,
    )  # fmt: skip
    assert probe.stdout.strip().startswith(str(root / "lib"))

    # Bytecode was compiled with the final paths (the service cannot write it).
    pyc = next((root / "lib").glob("python3*/site-packages/edged/__pycache__/systemd.*.pyc"))
    code = marshal.loads(pyc.read_bytes()[16:])
    assert code.co_filename.startswith(f"{PREFIX}/lib/")

    # systemd files where systemd looks for them.
    unit = dest / "lib/systemd/system/edged.service"
    assert f"ExecStart={PREFIX}/bin/edged run --config /etc/edged/edged.toml" in unit.read_text()
    assert (dest / "usr/lib/sysusers.d/edged.conf").read_text() == (
        REPO / "systemd/edged.sysusers"
    ).read_text()
    assert (dest / "usr/lib/tmpfiles.d/edged.conf").read_text() == (
        REPO / "systemd/edged.tmpfiles"
    ).read_text()
    config = dest / "etc/edged/edged.toml"
    assert config.read_text() == (REPO / "config/edged.toml").read_text()
    assert (dest / "etc/edged/conf.d").is_dir()
    assert (root / "share/doc/edged/service.md").is_file()

    # The installed unit passes the sandbox threshold and verifies against the real binary.
    security = analyze("security", "--offline=true", "--threshold=15", "--no-pager", str(unit))
    assert security.returncode == 0, security.stdout + security.stderr
    checked = tmp_path / "edged.service"
    checked.write_text(unit.read_text().replace(f"{PREFIX}/bin/", f"{root}/bin/"))
    verify = analyze("verify", "--man=no", str(checked))
    assert verify.returncode == 0 and verify.stdout + verify.stderr == "", verify.stderr

    # Upgrade: the operator's configuration survives a second install.
    config.write_text("# edited by the operator\n")
    again = make("install", f"DESTDIR={dest}")
    assert "keeping existing" in again.stdout
    assert config.read_text() == "# edited by the operator\n"
    assert os.access(edged, os.X_OK)

    # Uninstall removes the program and the systemd files, keeps configuration.
    make("uninstall", f"DESTDIR={dest}")
    assert not root.exists()
    assert not unit.exists()
    assert not link.is_symlink()
    assert not (dest / "usr/lib/sysusers.d/edged.conf").exists()
    assert config.read_text() == "# edited by the operator\n"


def test_prefix_is_substituted_in_the_unit(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    make("install-files", f"DESTDIR={dest}", "PREFIX=/srv/edged")
    unit = (dest / "lib/systemd/system/edged.service").read_text()
    assert "ExecStart=/srv/edged/bin/edged run" in unit
    assert "/opt/edged" not in unit
    assert os.readlink(dest / "usr/bin/edged") == "/srv/edged/bin/edged"


def test_unit_checks_pass() -> None:
    out = make("-s", "check-unit")
    assert "Overall exposure level for edged.service: 1." in out.stdout
    assert "systemd-analyze verify: clean" in out.stdout
