"""Activation, status, release and the time guard of the licence directory."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edged.errors import LicenceError
from edged.licensing import receipt
from edged.licensing.counting import CapacityWindow
from edged.licensing.keys import production_keys
from edged.licensing.store import LicenceStore
from tests.licensing.issuing import (
    fake_install_code,
    install_test_licence,
    issue_test_licence,
    store_trusting_test_key,
)
from tests.licensing.licence_helpers import DAY, T0, TEST_KEY, Clock


def _trial(code: str, lid: str = "L-TRIAL", issued: float = T0) -> bytes:
    return issue_test_licence(TEST_KEY, code, "trial", issued=issued, licence_id=lid)


def _capacity(code: str, n: int, lid: str) -> bytes:
    return issue_test_licence(TEST_KEY, code, "capacity", capacity=n, issued=T0, licence_id=lid)


def _statuses(store: LicenceStore) -> dict[str, tuple[str, str]]:
    return {e.id: (e.status, e.reason) for e in store.evaluate().entries}


def test_activated_licence_is_listed_valid_and_survives_a_new_store(
    store: LicenceStore, code: str, clock: Clock
) -> None:
    store.activate(_capacity(code, 10, "L-CAP"))
    again = store_trusting_test_key(store.directory, code, clock)
    assert again.evaluate().entries[0].status == "valid"
    assert again.capacity().capacity == 10


def test_expired_trial_is_refused_at_activation(store: LicenceStore, code: str) -> None:
    with pytest.raises(LicenceError, match="L-TRIAL expired on 2026-10-24"):
        store.activate(_trial(code, issued=T0 - 60 * DAY))


def test_trial_expires_while_installed(store: LicenceStore, code: str, clock: Clock) -> None:
    store.activate(_trial(code))
    window = store.capacity()
    assert (window.capacity, window.next_change) == (5, T0 + 30 * DAY)
    clock.now = T0 + 30 * DAY
    assert store.capacity().capacity == 0
    assert _statuses(store)["L-TRIAL"] == ("expired", "expired on 2026-12-23T12:00:00Z")


def test_clock_set_back_after_expiry_does_not_revive_the_trial(
    store: LicenceStore, code: str, clock: Clock
) -> None:
    store.activate(_trial(code))
    clock.now = T0 + 31 * DAY
    assert store.capacity().capacity == 0
    clock.now = T0 + 1 * DAY  # far beyond the tolerance
    ev = store.evaluate()
    assert ev.now == T0 + 31 * DAY
    assert ev.clock_warning and "behind" in ev.clock_warning
    assert store.capacity().capacity == 0
    clock.now = T0 + 30 * DAY - 600  # within the tolerance of the last time seen
    assert store.capacity().capacity == 0
    assert _statuses(store)["L-TRIAL"][0] == "expired"


def test_clock_set_back_before_activation_time_cannot_reactivate_an_expired_trial(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    first = store_trusting_test_key(tmp_path / "d", code, clock)
    first.activate(_trial(code, "L-T1"))
    clock.now = T0 + 40 * DAY
    first.evaluate()
    clock.now = T0 + 1 * DAY
    with pytest.raises(LicenceError, match="already active"):
        first.activate(_trial(code, "L-T1"))
    assert first.capacity().capacity == 0


def test_same_licence_twice_is_refused(store: LicenceStore, code: str) -> None:
    data = _capacity(code, 10, "L-CAP")
    store.activate(data)
    with pytest.raises(LicenceError, match="L-CAP is already active"):
        store.activate(data)
    assert store.capacity().capacity == 10


def test_second_trial_is_refused_even_after_the_first_was_released(
    store: LicenceStore, code: str
) -> None:
    store.activate(_trial(code, "L-T1"))
    with pytest.raises(LicenceError, match="already had trial L-T1"):
        store.activate(_trial(code, "L-T2"))
    store.release("L-T1")
    with pytest.raises(LicenceError, match="one trial per install code"):
        store.activate(_trial(code, "L-T2"))


def test_licences_add_up_and_each_id_counts_once(store: LicenceStore, code: str) -> None:
    store.activate(_capacity(code, 10, "L-A"))
    store.activate(_capacity(code, 25, "L-B"))
    store.activate(_trial(code))
    # A copy of L-A under another file name is not a second licence.
    shutil.copy(store.directory / "licences" / "L-A.lic", store.directory / "licences" / "X.lic")
    assert store.capacity().capacity == 40
    assert _statuses(store)["X"][0] == "invalid"


def test_release_prints_a_verifiable_receipt_and_frees_capacity(
    store: LicenceStore, code: str
) -> None:
    data = _capacity(code, 10, "L-CAP")
    store.activate(data)
    doc = store.release("L-CAP")
    rec = receipt.verify(doc)
    assert (rec.licence_id, rec.install_code) == ("L-CAP", code)
    assert rec.gateway_fingerprint == store.gateway_fingerprint()
    assert store.capacity().capacity == 0
    with pytest.raises(LicenceError, match="released from this gateway"):
        store.activate(data)
    tampered = doc.replace(b'"capacity": 10', b'"capacity": 99')
    with pytest.raises(LicenceError, match="does not match"):
        receipt.verify(tampered)


def test_release_of_unknown_licence_is_refused(store: LicenceStore) -> None:
    with pytest.raises(LicenceError, match="no active licence 'L-NONE'"):
        store.release("L-NONE")


def test_licence_copied_in_by_hand_is_not_counted(store: LicenceStore, code: str) -> None:
    store.activate(_trial(code, "L-T1"))
    (store.directory / "licences" / "L-T2.lic").write_bytes(_trial(code, "L-T2"))
    status, reason = _statuses(store)["L-T2"]
    assert status == "invalid" and "not activated" in reason
    assert store.capacity().capacity == 5


def test_edited_state_revokes_time_limited_licences(store: LicenceStore, code: str) -> None:
    store.activate(_capacity(code, 10, "L-CAP"))
    store.activate(_trial(code, "L-T1"))
    state = store.directory / "state.json"
    doc = json.loads(state.read_text())
    doc["state"]["last_seen"] = 0
    doc["state"]["expired"] = []
    state.write_text(json.dumps(doc))
    statuses = _statuses(store)
    assert statuses["L-CAP"][0] == "valid"
    assert statuses["L-T1"][0] == "invalid" and "altered" in statuses["L-T1"][1]
    assert store.capacity().capacity == 10
    with pytest.raises(LicenceError, match="disabled"):
        store.activate(_trial(code, "L-T1"))


def test_deleted_state_revokes_time_limited_licences(store: LicenceStore, code: str) -> None:
    store.activate(_trial(code, "L-T1"))
    (store.directory / "state.json").unlink()
    assert _statuses(store)["L-T1"][0] == "invalid"
    assert store.capacity().capacity == 0


def test_licence_directory_copied_to_another_gateway_is_worthless(
    store: LicenceStore, code: str, clock: Clock, tmp_path: Path
) -> None:
    store.activate(_capacity(code, 10, "L-CAP"))
    copy = tmp_path / "copy"
    shutil.copytree(store.directory, copy)
    other = store_trusting_test_key(copy, fake_install_code("gateway-b"), clock)
    status, reason = _statuses(other)["L-CAP"]
    assert status == "invalid" and "bound to install code" in reason
    assert other.capacity().capacity == 0
    (entry,) = other.evaluate().entries
    assert entry.licence is None and entry.claimed and entry.claimed.capacity == 10


def test_production_store_refuses_test_key_licences(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    prod = LicenceStore(tmp_path / "d", code, clock, keys=production_keys())
    with pytest.raises(LicenceError, match="test key"):
        prod.activate(_capacity(code, 10, "L-CAP"))


def test_maintenance_end_and_warning_due(store: LicenceStore, code: str, clock: Clock) -> None:
    store.activate(
        issue_test_licence(TEST_KEY, code, "maintenance", years=1, issued=T0, licence_id="L-M")
    )
    end = T0 + 365 * DAY
    status = store.maintenance([60, 30, 7, 1])
    assert (status.end, status.ended, status.warning_days) == (end, False, None)
    assert status.next_warning == end - 60 * DAY
    clock.now = end - 20 * DAY
    status = store.maintenance([60, 30, 7, 1])
    assert (status.warning_days, status.next_warning) == (30, end - 7 * DAY)
    assert status.days_left(clock.now) == 20
    clock.now = end
    assert store.maintenance([60, 30, 7, 1]).ended


def test_admission_gate_for_the_supervisor(store: LicenceStore, code: str, clock: Clock) -> None:
    from edged.model import DeviceSpec

    devices = [DeviceSpec(f"m{i}", "modbus", "bus") for i in range(6)]
    store.activate(_trial(code))
    gate = store.admission(devices)
    assert gate.admission.admitted == ("m0", "m1", "m2", "m3")
    assert gate.admission.unlicensed == ("m4", "m5")
    assert gate.window.next_change == T0 + 30 * DAY
    clock.now = T0 + 30 * DAY
    assert store.admission(devices).admission.admitted == ()


def test_trial_issued_ahead_of_the_gateway_clock_counts_from_its_issue_time(
    store: LicenceStore, code: str, clock: Clock
) -> None:
    store.activate(_trial(code, issued=T0 + 600))
    assert _statuses(store)["L-TRIAL"][0] == "pending"
    assert store.capacity() == CapacityWindow(0, T0 + 600)
    clock.now = T0 + 600
    assert store.capacity() == CapacityWindow(5, T0 + 600 + 30 * DAY)


def test_helper_installs_a_test_licence_for_this_machine(tmp_path: Path, clock: Clock) -> None:
    lic = install_test_licence(tmp_path / "d", TEST_KEY, "trial", clock=clock)
    store = store_trusting_test_key(tmp_path / "d", clock=clock)
    assert lic.install_code == store.install_code
    assert store.capacity().capacity == 5


def test_activation_interrupted_before_the_file_was_written_can_be_repeated(
    store: LicenceStore, code: str
) -> None:
    data = _trial(code, "L-T1")
    store.activate(data)
    (store.directory / "licences" / "L-T1.lic").unlink()  # as if the crash came first
    assert _statuses(store)["L-T1"] == ("invalid", "licence file is missing")
    store.activate(data)
    assert store.capacity().capacity == 5


def test_licence_issued_far_in_the_future_is_refused_and_harms_nothing(
    store: LicenceStore, code: str, clock: Clock
) -> None:
    store.activate(_trial(code))
    future = issue_test_licence(
        TEST_KEY, code, "capacity", capacity=3, issued=T0 + 3 * 365 * DAY, licence_id="L-FUT"
    )
    with pytest.raises(LicenceError, match="L-FUT is issued in the future"):
        store.activate(future)
    # the trial keeps counting from the real clock: the remembered time did not jump ahead
    assert store.capacity().capacity == 5
    assert _statuses(store)["L-TRIAL"][0] == "valid"
