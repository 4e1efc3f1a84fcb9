"""Install codes and the rule that decides whether the test key is trusted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edged.errors import LicenceError
from edged.licensing import install_code as codes
from edged.licensing import keys
from edged.licensing.keys import TEST_KEY_ID, running_from_source, trusted_keys, with_test_keys
from edged.licensing.store import LicenceStore
from tests.licensing.issuing import issue_test_licence
from tests.licensing.licence_helpers import TEST_KEY


def test_install_code_is_stable_readable_and_machine_specific() -> None:
    a = codes.from_identity("3d1219c7c4c5404aaa1f6d2a48adfda4")
    assert a == codes.from_identity("3D1219C7C4C5404AAA1F6D2A48ADFDA4\n")
    assert a != codes.from_identity("3d1219c7c4c5404aaa1f6d2a48adfda5")
    assert len(a) == 19 and a.count("-") == 3
    assert codes.normalise(a.lower().replace("-", " ")) == a


def test_install_code_typo_is_caught() -> None:
    code = codes.from_identity("machine")
    i = 1 if code[1] != "0" else 2
    typo = code[:i] + ("1" if code[i] != "1" else "2") + code[i + 1 :]
    with pytest.raises(LicenceError, match="typo"):
        codes.normalise(typo)
    with pytest.raises(LicenceError, match="not an install code"):
        codes.normalise("ABCD-EFGH")


def test_install_code_comes_from_the_machine_id_file(tmp_path: Path) -> None:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    code = codes.install_code(tmp_path / "licences", [tmp_path / "missing", machine_id])
    assert code == codes.from_identity("0123456789abcdef0123456789abcdef")
    assert not (tmp_path / "licences" / codes.GENERATED_ID_FILE).exists()


def test_without_a_machine_id_one_is_generated_once_in_the_licence_dir(tmp_path: Path) -> None:
    directory = tmp_path / "licences"
    first = codes.install_code(directory, [tmp_path / "missing"])
    # A reset of data and config leaves the licence directory, so the code stays.
    assert codes.install_code(directory, [tmp_path / "missing"]) == first
    assert (directory / codes.GENERATED_ID_FILE).is_file()


def test_no_environment_makes_the_key_ring_trust_the_test_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keys, "_process_keys", None)
    monkeypatch.setenv("EDGED_TRUST_TEST_KEYS", "1")
    assert trusted_keys().key(TEST_KEY_ID) is None
    assert trusted_keys().is_test(TEST_KEY_ID)
    assert running_from_source()  # even in this checkout


def test_an_installed_copy_refuses_test_key_licences_whatever_the_environment(
    tmp_path: Path,
) -> None:
    # Issue 16 item 5: the package copied into a site-packages (and, the old loophole, with a
    # pyproject.toml beside it), run with the variable that used to enable the test key.
    root = Path(__file__).resolve().parents[2]
    for site in (tmp_path / "lib/python3/site-packages", tmp_path / "opt"):
        site.mkdir(parents=True)
        shutil.copytree(root / "edged", site / "edged", ignore=shutil.ignore_patterns("__py*"))
        (site / "pyproject.toml").write_text("")
        lic_dir = tmp_path / f"lic-{site.name}"
        store = LicenceStore(lic_dir, keys=with_test_keys())
        data = issue_test_licence(TEST_KEY, store.install_code, "capacity", capacity=10)
        (tmp_path / "cap.lic").write_bytes(data)
        env = {**os.environ, "EDGED_TRUST_TEST_KEYS": "1", "PYTHONPATH": str(site)}
        argv = ["license", "activate", str(tmp_path / "cap.lic"), "--dir", str(lic_dir)]
        res = subprocess.run(
            [sys.executable, "-c", "import edged, sys; print(edged.__file__, file=sys.stderr)"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.stderr.startswith(str(site))  # the copy runs, not the checkout
        res = subprocess.run(
            [sys.executable, "-m", "edged.cli", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        print(res.stderr)
        assert res.returncode == 1
        assert "signed with the test key 'edged-test-2026', which this gateway does not" in (
            res.stderr
        )


def test_install_code_survives_a_new_machine_id_when_hardware_identity_exists(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 16 item 3: a re-image rewrites /etc/machine-id; the code must not follow it.
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    dmi = codes.IdentitySource("DMI product UUID", lambda: "4c4c4544-0042-3510-8052-b4c04f4e3332")
    sources = [dmi, codes.file_source("machine id", machine_id, last_resort=True)]
    before = codes.install_code(tmp_path / "lic", sources)
    machine_id.write_text("fedcba9876543210fedcba9876543210\n")  # the new image
    with caplog.at_level("WARNING"):
        after = codes.install_code(tmp_path / "lic", sources)
    print(before, after)
    assert before == after == codes.from_identity("4c4c4544-0042-3510-8052-b4c04f4e3332")
    assert "machine id" not in caplog.text


def test_placeholder_firmware_values_are_skipped_in_order(tmp_path: Path) -> None:
    seen: list[str] = []

    def source(name: str, value: str | None) -> codes.IdentitySource:
        def read() -> str | None:
            seen.append(name)
            return value

        return codes.IdentitySource(name, read)

    sources = [
        source("dmi-uuid", "03000200-0400-0500-0006-000700080009"),
        source("dmi-serial", "To Be Filled By O.E.M."),
        source("dt-serial", None),
        source("mac", "mac:b8:27:eb:12:34:56"),
        source("machine-id", "never read"),
    ]
    assert codes.machine_identity(tmp_path, sources) == "mac:b8:27:eb:12:34:56"
    assert seen == ["dmi-uuid", "dmi-serial", "dt-serial", "mac"]


def test_machine_id_is_the_last_resort_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    sources = [
        codes.IdentitySource("DMI product UUID", lambda: None),
        codes.file_source("machine id", machine_id, last_resort=True),
    ]
    with caplog.at_level("WARNING"):
        code = codes.install_code(tmp_path / "lic", sources)
    assert code == codes.from_identity("0123456789abcdef0123456789abcdef")
    assert "a re-image changes this code" in caplog.text


def test_mac_source_takes_the_first_physical_interface(tmp_path: Path) -> None:
    net = tmp_path / "net"
    for name, physical, mac in [
        ("br0", False, "02:00:00:00:00:09"),
        ("eth1", True, "b8:27:eb:00:00:02"),
        ("eth0", True, "b8:27:eb:00:00:01"),
        ("lo", False, "00:00:00:00:00:00"),
    ]:
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(mac + "\n")
        (net / name / "addr_assign_type").write_text("0\n")
        if physical:
            (net / name / "device").mkdir()
    permanent = {"eth0": "B8:27:EB:00:00:01"}
    source = codes.mac_source(net, lambda name: permanent.get(name))
    assert source.read() == "mac:b8:27:eb:00:00:01"
    # a software-set address (addr_assign_type 3) is not an identity
    source = codes.mac_source(net, lambda name: None)
    (net / "eth0" / "addr_assign_type").write_text("3\n")
    assert source.read() == "mac:b8:27:eb:00:00:02"


def test_store_takes_injected_identity_sources(tmp_path: Path) -> None:
    from edged.licensing.store import LicenceStore

    dmi = codes.IdentitySource("DMI product UUID", lambda: "board-1")
    store = LicenceStore(tmp_path / "lic", identity=[dmi])
    assert store.install_code == codes.from_identity("board-1")
