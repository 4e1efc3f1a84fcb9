"""The signed licence file: every manipulation is refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.errors import LicenceError
from edged.licensing.keys import PRODUCTION_KEY_ID, TEST_KEY_ID, production_keys, with_test_keys
from edged.licensing.licence import parse, verify
from tests.licensing.issuing import fake_install_code, issue_test_licence
from tests.licensing.licence_helpers import T0, TEST_KEY
from tools.licensing.issue import build, run


def test_round_trip_keeps_every_field(code: str) -> None:
    data = issue_test_licence(TEST_KEY, code, "capacity", capacity=10, issued=T0, licence_id="L-1")
    lic = verify(data, with_test_keys(), code)
    assert (lic.id, lic.kind, lic.capacity, lic.install_code) == ("L-1", "capacity", 10, code)
    assert (lic.issued, lic.valid_until, lic.key_id) == (T0, None, TEST_KEY_ID)


def test_one_changed_byte_of_the_payload_is_refused(code: str) -> None:
    data = issue_test_licence(TEST_KEY, code, "capacity", capacity=10, issued=T0)
    edited = data.replace(b'"capacity": 10', b'"capacity": 90')
    assert edited != data and len(edited) == len(data)
    with pytest.raises(LicenceError, match="signature does not match"):
        verify(edited, with_test_keys(), code)


def test_signature_by_another_key_is_refused(code: str) -> None:
    forged = build(
        Ed25519PrivateKey.generate(),
        kind="capacity",
        capacity=1000,
        install_code=code,
        customer="x",
        key_id=PRODUCTION_KEY_ID,
    )
    with pytest.raises(LicenceError, match="signature does not match"):
        verify(forged, with_test_keys(), code)
    unknown = build(
        Ed25519PrivateKey.generate(),
        kind="capacity",
        capacity=1000,
        install_code=code,
        customer="x",
        key_id="my-own-key",
    )
    with pytest.raises(LicenceError, match="unknown key 'my-own-key'"):
        verify(unknown, with_test_keys(), code)


def test_test_key_is_refused_by_a_production_key_ring(code: str) -> None:
    data = issue_test_licence(TEST_KEY, code, "capacity", capacity=10)
    with pytest.raises(LicenceError, match=r"test key .* does not trust"):
        verify(data, production_keys(), code)


def test_licence_bound_to_another_install_code_is_refused(code: str) -> None:
    other = fake_install_code("gateway-b")
    data = issue_test_licence(TEST_KEY, other, "capacity", capacity=10)
    with pytest.raises(LicenceError, match=rf"bound to install code {other}.*{code}"):
        verify(data, with_test_keys(), code)


def test_duplicate_json_keys_are_refused(code: str) -> None:
    data = issue_test_licence(TEST_KEY, code, "capacity", capacity=10)
    text = data.decode().replace('"capacity": 10,', '"capacity": 10, "capacity": 10,')
    with pytest.raises(LicenceError, match="appears twice"):
        parse(text.encode())


def test_unknown_fields_are_refused(code: str) -> None:
    doc = json.loads(issue_test_licence(TEST_KEY, code, "capacity", capacity=10))
    doc["payload"]["unlimited"] = True
    with pytest.raises(LicenceError, match="unknown fields \\['unlimited'\\]"):
        parse(json.dumps(doc).encode())


def test_garbage_is_not_a_licence() -> None:
    with pytest.raises(LicenceError, match="not a licence file"):
        parse(b"\x00\xff")
    with pytest.raises(LicenceError, match="not a licence file"):
        parse(b"{}")


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"kind": "trial", "days": 90}, "within 30 days"),
        ({"kind": "trial", "capacity": 50}, "at most 5"),
        ({"kind": "maintenance"}, "needs an end date"),
        ({"kind": "upgrade"}, "exactly one version"),
        ({"kind": "capacity", "capacity": 0}, "out of range"),
    ],
)
def test_licences_that_contradict_their_kind_are_not_issued(
    code: str, kwargs: dict[str, object], reason: str
) -> None:
    with pytest.raises(LicenceError, match=reason):
        issue_test_licence(TEST_KEY, code, issued=T0, **kwargs)  # type: ignore[arg-type]


def test_issuing_tool_refuses_a_trial_longer_than_30_days(
    code: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 16 item 6: the tool issued a 31-day trial; 30 days is the longest trial.
    out = tmp_path / "trial.lic"
    common = ["issue", "--key", str(TEST_KEY), "--kind", "trial", "--install-code", code]
    common += ["--customer", "C1", "--out", str(out)]
    assert run([*common, "--days", "31"]) == 1
    assert "a trial must end within 30 days" in capsys.readouterr().err
    assert not out.exists()
    assert run([*common, "--days", "30"]) == 0
    assert verify(out.read_bytes(), with_test_keys(), code).kind == "trial"
