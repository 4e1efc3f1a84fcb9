"""`make deb`: build, install, run, upgrade with a full outbox, refused upgrade, remove, purge.

This test changes the machine: it installs the package (user ``edged``, /opt/edged,
/etc/edged, /var/lib/edged), so it needs root, refuses to run when an edged it did not
install is there, and purges and restores what it touched at the end, also on failure.
Without systemd as PID 1 (containers, this CI) the maintainer scripts cannot start or
restart the unit; the test then checks those steps statically and says which.

It installs as an installer does, with `apt-get install ./edged_….deb`, so apt resolves the
package's Depends from Debian (a fresh machine may lack ``adduser``). Builds keep their wheel
cache in a pytest temporary directory shared by the session, never in the checkout.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import tomllib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest

from edged.model import Record
from edged.payload import decode, is_record_message
from tests.conftest import Broker, free_port, wait_port
from tests.daemon import Proc, modbus_sim_cmd
from tests.licences import grant_capacity
from tools.licensing import gate

REPO = Path(__file__).resolve().parent.parent
PREFIX = Path("/opt/edged")
CONFIG = Path("/etc/edged/edged.toml")
DATA = Path("/var/lib/edged")
LICENCES = Path("/var/lib/edged-licences")
OUTBOX = DATA / "outbox.sqlite"
UNIT = Path("/lib/systemd/system/edged.service")
SYSTEMD_RUNS = Path("/run/systemd/system").is_dir()

pytestmark = pytest.mark.slow


APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
# apt-get's exit status when a dpkg it ran failed (here: the preinst refusing the upgrade).
APT_DPKG_FAILED = 100


def run(
    *args: str, check: bool = True, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command (stdin closed: a dpkg prompt fails instead of hanging)."""
    proc = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if check:
        assert proc.returncode == 0, f"{args} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc


def installed_version() -> str | None:
    """The version of the installed edged package, None when not installed."""
    q = run("dpkg-query", "-W", "-f=${Version} ${db:Status-Status}", "edged", check=False)
    version, _, status = q.stdout.partition(" ")
    return version if q.returncode == 0 and status == "installed" else None


def ensure_tools(*, lintian: bool) -> None:
    """What `make deb` (and the lint) need, from apt when missing (CI machines are fresh).

    Debian's /usr/bin/python3 with venv and ensurepip builds the package's virtualenv;
    dpkg-deb packs it. As root the missing packages are installed; otherwise the test fails
    naming them: a skip would hide a missing install step.
    """
    missing = [] if shutil.which("dpkg-deb") else ["dpkg"]
    if lintian and not shutil.which("lintian"):
        missing.append("lintian")
    venv_ok = run("/usr/bin/python3", "-c", "import venv, ensurepip", check=False)
    if venv_ok.returncode != 0:
        # python3-venv depends on python3, so this also brings /usr/bin/python3 itself.
        missing.append("python3-venv")
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.fail(
            f"missing Debian packages: apt-get install {' '.join(missing)} (or run as root)"
        )
    run("apt-get", "update", "-qq", env=APT_ENV, timeout=900)
    run("apt-get", "install", "-y", "-qq", *missing, env=APT_ENV, timeout=900)


def apt_install(deb: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`apt-get install ./edged_….deb`, as README tells installers: apt resolves Depends.

    A fresh machine has no package lists (or stale ones): when the simulation cannot
    resolve the Depends, or would fetch anything besides edged, the lists are updated first.
    """
    sim = run("apt-get", "install", "--simulate", "-y", str(deb), check=False, env=APT_ENV)
    fetched = re.findall(r"^Inst (\S+)", sim.stdout, re.M)
    if sim.returncode != 0 or set(fetched) - {"edged"}:
        run("apt-get", "update", "-qq", env=APT_ENV, timeout=900)
    return run("apt-get", "install", "-y", str(deb), check=check, env=APT_ENV, timeout=900)


def checkout_build_paths() -> list[str]:
    """Every file under the checkout's build/ and dist/ (where `make deb` writes by default).

    With size and modification time: the same list before and after a test means its builds
    wrote nothing there, which `git status --porcelain` cannot show for these git-ignored
    paths (and a CI machine needs no git to run the tests).
    """
    files = []
    for top in ("build", "dist"):
        for path in sorted((REPO / top).rglob("*")):
            st = path.lstat()
            files.append(f"{path.relative_to(REPO)} {st.st_size} {st.st_mtime_ns}")
    return files


def verify_unit(unit: Path) -> tuple[list[str], list[str]]:
    """`systemd-analyze verify` of ``unit``: (lines about the unit, lines ignored).

    Only lines that systemd attributes to the unit itself (``edged.service: …`` or
    ``<unit path>:<line>: …``) count. Everything else is about the environment, not the
    unit, and its wording varies with the systemd version and the machine: no systemd as
    PID 1, no D-Bus, missing /run paths, unit files of other packages that the verifier
    loads as dependencies (network-online.target, …). Those are returned to be shown.
    """
    proc = run("systemd-analyze", "verify", "--man=no", "--no-pager", str(unit), check=False)
    about_unit, ignored = [], []
    for line in (proc.stdout + proc.stderr).splitlines():
        if not line.strip():
            continue
        own = line.startswith((f"{unit.name}:", f"{unit}:"))
        (about_unit if own else ignored).append(line)
    return about_unit, ignored


def base_version() -> str:
    with (REPO / "pyproject.toml").open("rb") as fh:
        version: str = tomllib.load(fh)["project"]["version"]
    return version


def bump(version: str, part: int) -> str:
    """The version with component ``part`` (0 major, 1 minor, 2 patch) raised."""
    parts = [int(p) for p in version.split(".")] + [0, 0]
    parts = parts[:3]
    parts[part] += 1
    parts[part + 1 :] = [0] * (2 - part)
    return ".".join(map(str, parts))


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel cache shared by every build of the session, outside the checkout."""
    return tmp_path_factory.mktemp("deb-wheels")


def make_deb(out: Path, wheels: Path, *extra: str, compress: str = "gzip") -> subprocess.Popen[str]:
    """`make deb` into ``out`` (started, not waited for), caching wheels in ``wheels``."""
    return subprocess.Popen(
        ["make", "--no-print-directory", "-s", "-C", str(REPO), "deb", f"DEB_OUT={out}",
         f"DEB_WHEELHOUSE={wheels}", f"DEB_COMPRESS={compress}", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def finish(build: subprocess.Popen[str]) -> Path:
    """Wait for a `make deb` and return the package it printed."""
    out, err = build.communicate(timeout=600)
    assert build.returncode == 0, f"make deb failed:\n{out}\n{err}"
    deb = Path(out.strip().splitlines()[-1])
    assert deb.is_file(), out
    return deb


def outbox_records() -> list[tuple[str, int]]:
    """(device, seq) of every record in the installed daemon's outbox.

    Read as the service user: root opening the WAL database could leave root-owned
    -wal/-shm files the daemon then cannot open.
    """
    query = (
        "import json, sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "print(json.dumps(db.execute('SELECT device_id, seq FROM records').fetchall()))"
    )
    out = subprocess.run(
        ["/usr/bin/python3", "-c", query, str(OUTBOX)],
        capture_output=True, text=True, timeout=60, user="edged", group="edged", check=True,
    ).stdout  # fmt: skip
    return sorted((str(d), int(s)) for d, s in json.loads(out))


def owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return (
        pwd.getpwuid(st.st_uid).pw_name,
        grp.getgrgid(st.st_gid).gr_name,
        stat.S_IMODE(st.st_mode),
    )


def poll(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@dataclass
class Machine:
    """What the test found before it changed anything, to put it back afterwards."""

    work: Path
    user_existed: bool
    licences_stat: os.stat_result | None
    data_aside: Path | None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


@pytest.fixture
def machine() -> Iterator[Machine]:
    if os.geteuid() != 0:
        pytest.skip("installs a Debian package system-wide: run as root (CI does)")
    if installed_version() is not None or PREFIX.exists() or CONFIG.parent.exists():
        pytest.fail(
            f"an edged installation this test did not make is present (package "
            f"{installed_version()}, {PREFIX}, {CONFIG.parent}): refusing to replace it"
        )
    ensure_tools(lintian=True)
    # /var/tmp, not the pytest tmp dir: the service user must reach the launcher and licences.
    work = Path(tempfile.mkdtemp(prefix="edged-deb-test-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    user_existed = True
    try:
        pwd.getpwnam("edged")
    except KeyError:
        user_existed = False
    licences_stat = LICENCES.stat() if LICENCES.exists() else None
    data_aside = None
    if DATA.exists():  # data of an earlier run or another tool: moved aside, restored after
        data_aside = work / "data-aside"
        shutil.move(DATA, data_aside)
    m = Machine(work, user_existed, licences_stat, data_aside)
    try:
        yield m
    finally:
        for p in m.procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()
        if (
            installed_version() is not None
            or run("dpkg", "-s", "edged", check=False).returncode == 0
        ):
            run("dpkg", "--purge", "edged", check=False)
        shutil.rmtree(DATA, ignore_errors=True)
        if data_aside is not None:
            shutil.move(data_aside, DATA)
        if licences_stat is None:
            shutil.rmtree(LICENCES, ignore_errors=True)
        elif LICENCES.exists():
            (LICENCES / "deb-test-marker").unlink(missing_ok=True)
            os.chown(LICENCES, licences_stat.st_uid, licences_stat.st_gid)
            os.chmod(LICENCES, stat.S_IMODE(licences_stat.st_mode))
        if not user_existed:
            run("userdel", "edged", check=False)
            run("groupdel", "edged", check=False)
        shutil.rmtree(work, ignore_errors=True)


def as_edged(m: Machine, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start a command as the service user (as the unit would), output to ``log``."""
    launcher = m.work / "launcher"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(launcher),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    with log.open("ab") as fh:
        p = subprocess.Popen(
            list(args),
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=launcher,
            user="edged",
            group="edged",
            extra_groups=["dialout"],
            umask=0o077,
        )
    m.procs.append(p)
    return p


def start_installed_daemon(m: Machine, log: Path) -> subprocess.Popen[bytes]:
    """The installed edged (its venv, its code), trusting the test key through the launcher.

    The launcher directory holds only ``tools/``, so ``edged`` is imported from /opt/edged.
    """
    return as_edged(
        m, log, str(PREFIX / "bin/python"), "-m", "tools.licensing.trusting", "run",
        "--config", str(CONFIG),
    )  # fmt: skip


def stop(p: subprocess.Popen[bytes]) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


async def receive(
    port: int,
    until: Callable[[list[Record]], bool],
    timeout: float = 30.0,
    subscribed: Callable[[], object] = lambda: None,
) -> list[Record]:
    """Data records arriving on the broker until ``until`` holds for them.

    ``subscribed`` runs once the subscription stands (start the daemon there to see all).
    """
    got: list[Record] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"deb-test-{os.getpid()}") as c:
        await c.subscribe("edged/gw-deb/+", qos=1)

        async def pump() -> None:
            async for msg in c.messages:
                if isinstance(msg.payload, bytes) and is_record_message(
                    str(msg.topic), msg.payload
                ):
                    got.extend(decode(msg.payload))  # format 1 (old release) or 2

        task = asyncio.create_task(pump())
        subscribed()
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while not until(got):
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"timed out; received {len(got)} records")
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return got


async def wait_online(port: int, timeout: float = 30.0) -> None:
    """Wait for the gateway's retained status ``online`` on the broker."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"deb-status-{os.getpid()}") as c:
        await c.subscribe("edged/gw-deb/status", qos=1)
        async with asyncio.timeout(timeout):
            async for msg in c.messages:
                if msg.payload == b"online":
                    return


def site_config(broker_port: int, sim_port: int, licences: Path) -> str:
    return f"""\
# written by tests/test_deb.py
[gateway]
id = "gw-deb"

[mqtt]
host = "127.0.0.1"
port = {broker_port}
backoff_initial = 0.2
backoff_max = 1.0

[control]
socket = "{DATA}/control.sock"

[metrics]
enabled = false

[licensing]
directory = "{licences}"

[connections.panel]
driver = "modbus"
transport = "tcp"
host = "127.0.0.1"
port = {sim_port}
timeout = 0.5

[[devices]]
id = "meter"
connection = "panel"
address = 1
profile = "eastron_sdm630"
poll_interval = 0.25
cloud_licence = "professional"
"""


def check_installed_files(version: str) -> None:
    edged = PREFIX / "bin/edged"
    assert edged.read_text().splitlines()[0] == f"#!{PREFIX}/bin/python"
    # Debian's interpreter, not the build machine's (a pyenv under /root is hidden from
    # User=edged by ProtectHome=).
    assert os.path.realpath(PREFIX / "bin/python").startswith("/usr/bin/python3")
    assert "home = /usr/bin" in (PREFIX / "pyvenv.cfg").read_text()
    assert os.readlink("/usr/bin/edged") == f"{PREFIX}/bin/edged"
    assert f"ExecStart={PREFIX}/bin/edged run --config {CONFIG}" in UNIT.read_text()
    assert (
        Path("/usr/lib/sysusers.d/edged.conf").read_text()
        == (REPO / "systemd/edged.sysusers").read_text()
    )
    assert (
        Path("/usr/lib/tmpfiles.d/edged.conf").read_text()
        == (REPO / "systemd/edged.tmpfiles").read_text()
    )
    assert Path("/usr/share/man/man1/edged.1.gz").is_file()
    assert (PREFIX / "share/edged/release").read_text().split()[0] == version
    assert run("/usr/bin/edged", "--version").stdout.strip() == f"edged {version}"
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "edged").stdout
    assert str(CONFIG) in conffiles
    listing = run("dpkg", "-L", "edged").stdout
    # Neither the issuing tool nor any key or test of the checkout is shipped.
    assert not re.search(r"site-packages/(tools|tests)/|TEST-ONLY|\.pem$", listing, re.M)


def test_deb_install_run_upgrade_refuse_remove_purge(
    machine: Machine, broker: Broker, wheelhouse: Path
) -> None:
    m = machine
    base = base_version()
    update, feature = bump(base, 2), bump(base, 1)
    static: list[str] = []
    checkout_before = checkout_build_paths()

    # -- build: the release as pyproject says (xz, as shipped), then an update and a feature
    # release, which reuse the wheels of the first build.
    first = finish(make_deb(m.work / "v1", wheelhouse, compress="xz"))
    assert first.name == f"edged_{base}_{run('dpkg', '--print-architecture').stdout.strip()}.deb"
    builds = [
        make_deb(m.work / "v2", wheelhouse, f"VERSION={update}", "RELEASE_KIND=update"),
        make_deb(m.work / "v3", wheelhouse, f"VERSION={feature}", "RELEASE_KIND=feature"),
    ]
    lint = run("lintian", str(first), check=False)
    print(f"lintian {first.name}: exit {lint.returncode}\n{lint.stdout}{lint.stderr}")
    assert lint.returncode == 0
    assert not re.search(r"^[EW]: ", lint.stdout, re.M), lint.stdout
    control = run("dpkg-deb", "-f", str(first), "Depends").stdout
    assert re.search(r"python3 \(>= 3\.\d+~\), python3 \(<< 3\.\d+~\)", control), control
    upd_deb, feat_deb = (finish(b) for b in builds)

    # -- install: user, directories, files; the skeleton is refused, so nothing starts.
    inst = apt_install(first)
    out = inst.stdout + inst.stderr
    print(f"apt-get install {first.name}:\n{out}")
    assert "edged: not started: config error: /etc/edged/edged.toml" in out, out
    assert "gateway.id: required key is missing" in out
    assert "then: systemctl start edged" in out
    check_installed_files(base)
    user = pwd.getpwnam("edged")
    assert user.pw_dir == str(DATA) and user.pw_shell.endswith("nologin")
    assert "edged" in grp.getgrnam("dialout").gr_mem
    for d in (DATA, LICENCES):
        assert owner(d) == ("edged", "edged", 0o750), (d, owner(d))
    wants = Path("/etc/systemd/system/multi-user.target.wants/edged.service")
    assert wants.is_symlink() and os.readlink(wants) == str(UNIT)  # enabled for the next boot
    # The verifier must see a broken unit as broken here, or its silence proves nothing.
    (m.work / "broken").mkdir()
    broken = m.work / "broken" / UNIT.name
    broken.write_text(UNIT.read_text().replace(f"{PREFIX}/bin/edged", "/nonexistent/edged"))
    flagged, _ = verify_unit(broken)
    assert any("/nonexistent/edged" in line for line in flagged), flagged
    about_unit, ignored = verify_unit(UNIT)
    assert not about_unit, "\n".join(about_unit)
    if ignored:
        print("systemd-analyze verify: ignored (environment, other units):\n" + "\n".join(ignored))
    static.append(
        f"systemd-analyze verify of the installed unit against {PREFIX}/bin/edged "
        f"({len(ignored)} line(s) about the environment or other units ignored)"
    )

    # -- configure for a test broker and a simulated Modbus meter; the installed CLI accepts it.
    sim_port = free_port()
    sim = Proc(modbus_sim_cmd(sim_port, meters=1), m.work / "sim.log")
    m.procs.append(sim.proc)
    licences = m.work / "licences"
    grant_capacity(licences, 5)  # signed with the test key: only the launcher trusts it
    run("chown", "-R", "edged:edged", str(licences))
    CONFIG.write_text(site_config(broker.port, sim_port, licences))
    checked = run(
        "runuser", "-u", "edged", "--", "/usr/bin/edged", "check-config", "-c", str(CONFIG)
    )
    assert "OK" in checked.stdout, checked.stdout
    # The installed edged trusts only the production key: the test licence admits nothing.
    assert "0 device(s) licensed, 1 unlicensed" in checked.stdout, checked.stdout
    shutil.copytree(
        REPO / "tools", m.work / "launcher/tools", ignore=shutil.ignore_patterns("__pycache__")
    )
    where = as_edged(m, m.work / "where.log", str(PREFIX / "bin/python"), "-c",
                     "import tools.licensing.trusting, edged; print(edged.__file__)")  # fmt: skip
    assert where.wait(60) == 0
    assert (m.work / "where.log").read_text().startswith(f"{PREFIX}/lib/")
    wait_port(sim_port, timeout=30)

    # -- run the installed daemon as the service user; records reach the broker.
    log1 = m.work / "daemon-1.log"
    daemon = start_installed_daemon(m, log1)
    asyncio.run(receive(broker.port, lambda got: len(got) >= 3))
    assert owner(OUTBOX)[0] == "edged"

    # -- the broker goes away: records stay in the outbox; then the daemon stops.
    broker.stop()
    poll(lambda: len(outbox_records()) >= 5, "records in the outbox")
    assert stop(daemon) == 0, log1.read_text()[-3000:]
    before = outbox_records()
    assert len(before) >= 5
    print(f"outbox before the upgrade: {len(before)} records")

    # -- upgrade to the update release: the gate lets it pass; config, data, licences stay.
    config_text = CONFIG.read_text()
    up = apt_install(upd_deb)
    out = up.stdout + up.stderr
    print(f"apt-get install {upd_deb.name}:\n{out}")
    assert f"install gate: edged {update} (update release" in out, out
    assert "no maintenance licence needed" in out
    check_installed_files(update)
    assert CONFIG.read_text() == config_text
    assert outbox_records() == before  # none lost in the upgrade
    assert owner(DATA) == ("edged", "edged", 0o750)
    assert (licences / "licences").is_dir()
    postinst = run("dpkg-query", "--control-show", "edged", "postinst").stdout
    prerm = run("dpkg-query", "--control-show", "edged", "prerm").stdout
    if SYSTEMD_RUNS:
        assert run("systemctl", "is-enabled", "edged").stdout.strip() == "enabled"
    else:
        # No systemd here: the restart cannot happen. Checked statically: prerm leaves the
        # daemon running on upgrade, postinst restarts it once when it is active.
        assert re.search(r"upgrade\|deconfigure\|failed-upgrade\)\n\s*;;", prerm)
        assert postinst.count("deb-systemd-invoke restart edged.service") == 1
        assert "elif systemctl is-active --quiet edged.service; then" in postinst
        static.append("restart once on upgrade (prerm keeps it running, postinst restarts)")
        static.append("start on a fresh install when check-config accepts (postinst)")

    # -- the new code sends everything the old one left in the outbox.
    broker.start()
    log2 = m.work / "daemon-2.log"
    daemons: list[subprocess.Popen[bytes]] = []

    def delivered(got: list[Record]) -> bool:
        sent = {(r.device_id, r.seq) for r in got}
        return set(before) <= sent and not outbox_records()

    asyncio.run(
        receive(
            broker.port,
            delivered,
            timeout=60,
            subscribed=lambda: daemons.append(start_installed_daemon(m, log2)),
        )
    )
    assert stop(daemons[0]) == 0, log2.read_text()[-3000:]
    assert f"edged {update}" in run("/usr/bin/edged", "--version").stdout

    # -- /usr/bin/edged itself, exactly as the unit starts it (production key only: the
    # test licence admits no device), comes up against the broker and stops cleanly.
    log3 = m.work / "daemon-3.log"
    plain = as_edged(m, log3, "/usr/bin/edged", "run", "--config", str(CONFIG))
    asyncio.run(wait_online(broker.port))
    assert stop(plain) == 0, log3.read_text()[-3000:]
    # The test licence is signed with the test key, which an installed edged never trusts.
    assert re.search(r"edged started gateway=gw-deb devices=\d+ unlicensed=1", log3.read_text())

    # -- a feature release no installed licence covers is refused before anything changes.
    refused = apt_install(feat_deb, check=False)
    out = refused.stdout + refused.stderr
    print(f"apt-get install {feat_deb.name}: exit {refused.returncode}\n{out}")
    assert refused.returncode == APT_DPKG_FAILED, out
    assert (
        "new edged package pre-installation script subprocess returned error exit status 1" in out
    )
    assert "E: Sub-process /usr/bin/dpkg returned an error code (1)" in out
    assert f"install gate: REFUSED: edged {feature} (feature release" in out, out
    assert f"needs a maintenance licence or an upgrade licence for {feature}" in out, out
    assert f"edged: not upgraded; edged {update} stays installed" in out
    assert installed_version() == update
    check_installed_files(update)

    # -- remove keeps configuration, data and licences; purge keeps only the licences.
    (LICENCES / "deb-test-marker").write_text("a licence would be here\n")
    removed = run("dpkg", "--remove", "edged")
    assert "kept /etc/edged, /var/lib/edged and /var/lib/edged-licences" in removed.stdout
    assert not PREFIX.exists() and not Path("/usr/bin/edged").is_symlink() and not UNIT.exists()
    assert CONFIG.read_text() == config_text
    assert OUTBOX.is_file() and (LICENCES / "deb-test-marker").is_file()
    purged = run("dpkg", "--purge", "edged")
    print(f"dpkg --remove / --purge:\n{removed.stdout}{purged.stdout}")
    assert "kept the licences in /var/lib/edged-licences" in purged.stdout, purged.stdout
    assert not CONFIG.parent.exists() and not DATA.exists()
    assert (LICENCES / "deb-test-marker").is_file()
    assert installed_version() is None
    # The builds cached their wheels in the session's temp dir, not in build/ or dist/.
    assert any(wheelhouse.glob("*.whl"))
    assert checkout_build_paths() == checkout_before

    if not SYSTEMD_RUNS:
        # Shown in the warnings summary of every run, not only with -s.
        warnings.warn(
            "systemd is not PID 1 here; checked statically: " + "; ".join(static), stacklevel=1
        )


def test_gate_takes_the_release_being_installed(tmp_path: Path) -> None:
    """The preinst's gate judges the package's release, not the installed code's own."""
    installed = tmp_path / "release"
    installed.write_text("0.1.0 2026-01-01 feature\n")
    lic = tmp_path / "licences"
    ok, why = gate.check(lic, installed, None, gate.parse_release("0.1.1 2026-12-01 update"))
    assert ok and why.startswith("edged 0.1.1 (update release, 2026-12-01)")
    ok, why = gate.check(lic, installed, None, gate.parse_release("0.2.0 2026-12-01 feature"))
    assert not ok and "edged 0.2.0 (feature release, 2026-12-01) is not covered" in why
    with pytest.raises(ValueError, match="release kind"):
        gate.parse_release("0.2.0 2026-12-01 major")
    assert gate.main(["--dir", str(lic), "--installed", str(installed), "--this",
                      "0.1.0 2026-01-01 feature"]) == 0  # fmt: skip


def test_arm64_package_is_built_from_aarch64_wheels(tmp_path: Path, wheelhouse: Path) -> None:
    """`make deb DEB_ARCH=arm64`: built here, not run (no arm64 machine in CI).

    Needs PyPI for the aarch64 wheels, and Debian's python3-venv (installed as root when
    missing, as for the amd64 package).
    """
    ensure_tools(lintian=False)
    checkout_before = checkout_build_paths()
    deb = finish(make_deb(tmp_path / "out", wheelhouse, "DEB_ARCH=arm64"))
    assert deb.name == f"edged_{base_version()}_arm64.deb"
    assert run("dpkg-deb", "-f", str(deb), "Architecture").stdout.strip() == "arm64"
    run("dpkg-deb", "-x", str(deb), str(tmp_path / "root"))
    site = next((tmp_path / "root/opt/edged/lib").glob("python3*/site-packages"))
    extensions = list(site.rglob("*.so"))
    assert any(p.name == "_rust.abi3.so" for p in extensions)  # cryptography
    for so in extensions:
        header = so.read_bytes()[:20]
        assert header[:4] == b"\x7fELF", so
        assert int.from_bytes(header[18:20], "little") == 183, so  # EM_AARCH64
    assert (site / "edged/__init__.py").is_file()
    assert os.readlink(tmp_path / "root/opt/edged/bin/python3") == "/usr/bin/python3"
    assert any((wheelhouse / "arm64").glob("*aarch64*.whl"))
    assert checkout_build_paths() == checkout_before
