"""Install codes and the rule that decides whether the test key is trusted."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.errors import LicenceError
from edged.licensing import install_code as codes
from edged.licensing.keys import (
    TEST_KEY_ID,
    may_trust_test_keys,
    running_from_source,
    trusted_keys,
)


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


def _source_tree(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "pyproject.toml").write_text("")
    (tmp_path / "src" / "edged").mkdir()
    return tmp_path / "src" / "edged"


def test_test_key_needs_the_variable_and_a_source_tree(tmp_path: Path) -> None:
    pkg = _source_tree(tmp_path)
    assert running_from_source(pkg)
    assert may_trust_test_keys({"EDGED_TRUST_TEST_KEYS": "1"}, pkg)
    assert not may_trust_test_keys({}, pkg)
    assert not may_trust_test_keys({"EDGED_TRUST_TEST_KEYS": "yes"}, pkg)


def test_installed_package_never_trusts_the_test_key(tmp_path: Path) -> None:
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "pyproject.toml").write_text("")
    (site / "edged").mkdir()
    assert not may_trust_test_keys({"EDGED_TRUST_TEST_KEYS": "1"}, site / "edged")
    bare = tmp_path / "opt" / "edged"
    bare.mkdir(parents=True)
    assert not may_trust_test_keys({"EDGED_TRUST_TEST_KEYS": "1"}, bare)


def test_key_ring_without_the_variable_has_only_production_keys() -> None:
    assert trusted_keys({}).key(TEST_KEY_ID) is None
    assert trusted_keys({}).is_test(TEST_KEY_ID)
