"""`make install` into a DESTDIR: the staged tree, the unit's checks, upgrade and uninstall."""

from __future__ import annotations

import marshal
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PREFIX = "/opt/edged"

pytestmark = pytest.mark.slow

PROBE = """
import ctypes, sqlite3
mdwe = ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) == 0  # PR_SET_MDWE
import edged, edged.systemd, edged.control, edged.metrics, edged.logsetup, drivers
import aiomqtt, pymodbus.client, serial_asyncio_fast, websockets, ocpp.v16, ocpp.v201
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
key = Ed25519PrivateKey.generate()
key.public_key().verify(key.sign(b"licence"), b"licence")
sqlite3.connect(":memory:").execute("pragma journal_mode=wal")
print(edged.__file__, "mdwe=on" if mdwe else "mdwe=unsupported")
"""


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

    # The staged interpreter imports the installed package, not the checkout, and the
    # dependencies work without writable+executable memory (MemoryDenyWriteExecute=yes;
    # the prctl equivalent exists since Linux 6.3).
    probe = subprocess.run(
        [str(root / "bin/python"), "-c", PROBE], capture_output=True, text=True, cwd=tmp_path,
        timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    where, mdwe = probe.stdout.split()
    assert where.startswith(str(root / "lib"))
    assert mdwe in ("mdwe=on", "mdwe=unsupported")

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

    # Upgrade: the code is replaced even at the same version, the operator's
    # configuration survives.
    installed = Path(where).parent / "systemd.py"
    installed.write_text(installed.read_text() + "STALE = True\n")
    config.write_text("# edited by the operator\n")
    again = make("install", f"DESTDIR={dest}")
    assert "keeping existing" in again.stdout
    assert config.read_text() == "# edited by the operator\n"
    assert "STALE" not in installed.read_text()
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


def test_unit_checks_pass_and_docs_state_the_score() -> None:
    out = make("-s", "check-unit")
    assert "systemd-analyze verify: clean" in out.stdout
    score = re.search(r"Overall exposure level for edged.service: (\d+\.\d)", out.stdout)
    assert score, out.stdout
    assert float(score.group(1)) <= 1.5
    docs = (REPO / "docs/service.md").read_text()
    assert f"rates the unit **{score.group(1)}**" in docs
