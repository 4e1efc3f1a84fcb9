"""The licence history only ever adds restrictions (issue 16, item 2).

Each test is an attack that worked before: deleting, editing (and re-signing) the state, or
copying a released licence back. The history now lives in two places (the licence directory
and the data directory), is rebuilt only to the more restrictive side, and says so.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from edged.errors import LicenceError
from edged.licensing import gateway_key
from edged.licensing.cli import format_history
from edged.licensing.keys import with_test_keys
from edged.licensing.licence import canonical
from edged.licensing.store import LicenceStore
from tests.licensing.issuing import issue_test_licence
from tests.licensing.licence_helpers import DAY, T0, TEST_KEY, Clock


def make_store(tmp_path: Path, code: str, clock: Clock, *, copy: bool = True) -> LicenceStore:
    history = (tmp_path / "data",) if copy else ()
    return LicenceStore(tmp_path / "lic", code, clock, keys=with_test_keys(), history=history)


def trial(code: str, lid: str, issued: float = T0) -> bytes:
    return issue_test_licence(TEST_KEY, code, "trial", issued=issued, licence_id=lid)


def capacity(code: str, n: int, lid: str) -> bytes:
    return issue_test_licence(TEST_KEY, code, "capacity", capacity=n, issued=T0, licence_id=lid)


def statuses(store: LicenceStore) -> dict[str, tuple[str, str]]:
    return {e.id: (e.status, e.reason) for e in store.evaluate().entries}


def resign(directory: Path, edit: Any) -> None:
    """Edit state.json and sign it again with the gateway key kept beside it."""
    path = directory / "state.json"
    doc = json.loads(path.read_text())
    edit(doc["state"])
    sig = gateway_key.private_key(directory).sign(canonical(doc["state"]))
    doc["signature"] = base64.b64encode(sig).decode()
    path.write_text(json.dumps(doc))


def test_state_deleted_with_the_trial_file_no_second_trial(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    store = make_store(tmp_path, code, clock, copy=False)
    store.activate(trial(code, "L-T1"))
    clock.now = T0 + 31 * DAY
    assert store.capacity().capacity == 0
    # Attack: forget the trial (state and file), keep the rest, try a fresh trial.
    (store.directory / "state.json").unlink()
    (store.directory / "licences" / "L-T1.lic").unlink()
    with pytest.raises(LicenceError) as err:
        store.activate(trial(code, "L-T2", issued=clock.now))
    print(err.value)
    assert "history of this gateway was lost or altered" in str(err.value)


def test_whole_licence_directory_deleted_the_data_copy_remembers_the_trial(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    store = make_store(tmp_path, code, clock)
    store.activate(trial(code, "L-T1"))
    clock.now = T0 + 31 * DAY
    store.evaluate()
    shutil.rmtree(store.directory)  # state, licence files and gateway key
    with pytest.raises(LicenceError) as err:
        store.activate(trial(code, "L-T2", issued=clock.now))
    print(err.value)
    assert "already had trial L-T1" in str(err.value)


def test_state_deleted_and_clock_set_back_the_expired_trial_stays_dead(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    store = make_store(tmp_path, code, clock, copy=False)
    data = trial(code, "L-T1")
    store.activate(data)
    clock.now = T0 + 31 * DAY
    store.evaluate()
    (store.directory / "state.json").unlink()
    clock.now = T0 + DAY
    assert store.capacity().capacity == 0
    status, reason = statuses(store)["L-T1"]
    assert status == "invalid" and "disabled" in reason
    with pytest.raises(LicenceError, match="disabled"):
        store.activate(data)


def test_state_edited_and_resigned_released_licence_stays_released(
    tmp_path: Path, code: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(tmp_path, code, clock)
    data = capacity(code, 10, "L-CAP")
    store.activate(data)
    store.release("L-CAP")

    # Attack: with the gateway key beside it, rewrite history: never released, still active.
    def forget(body: dict[str, Any]) -> None:
        body["released"] = []
        body["active"] = ["L-CAP"]
        body["generation"] += 5

    resign(store.directory, forget)
    shutil.rmtree(store.directory / "receipts")
    (store.directory / "licences" / "L-CAP.lic").write_bytes(data)
    with caplog.at_level(logging.WARNING):
        status, reason = statuses(store)["L-CAP"]
    print(status, reason)
    assert status == "invalid" and "released from this gateway on" in reason
    assert store.capacity().capacity == 0
    assert "licence history copies disagree" in caplog.text
    history = "\n".join(format_history(store.evaluate().history))
    print(history)
    assert "released: L-CAP" in history and "disagreed; merged to the stricter side" in history


def test_state_edited_to_count_one_licence_twice_counts_it_once(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    store = make_store(tmp_path, code, clock, copy=False)
    store.activate(capacity(code, 10, "L-CAP"))

    def twice(body: dict[str, Any]) -> None:
        body["active"] = ["L-CAP", "L-CAP"]

    resign(store.directory, twice)
    assert [e.id for e in store.evaluate().entries] == ["L-CAP"]
    assert store.capacity().capacity == 10


def test_released_licence_copied_back_after_the_state_is_deleted_is_refused(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    store = make_store(tmp_path, code, clock)
    data = capacity(code, 10, "L-CAP")
    store.activate(data)
    store.activate(capacity(code, 3, "L-KEEP"))
    store.release("L-CAP")
    # Attack: delete the state (and the receipts), put the kept copy back, re-activate.
    (store.directory / "state.json").unlink()
    shutil.rmtree(store.directory / "receipts")
    (store.directory / "licences" / "L-CAP.lic").write_bytes(data)
    status, reason = statuses(store)["L-CAP"]
    print(status, reason)
    assert status == "invalid" and "released from this gateway" in reason
    assert store.capacity().capacity == 3  # L-KEEP, proven active by the data-dir copy
    with pytest.raises(LicenceError, match="released from this gateway"):
        store.activate(data)
    history = "\n".join(format_history(store.evaluate().history))
    assert "state.json is missing; restored from" in history


def test_without_the_data_copy_the_receipt_still_remembers_the_release(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    store = make_store(tmp_path, code, clock, copy=False)
    data = capacity(code, 10, "L-CAP")
    store.activate(data)
    store.release("L-CAP")
    (store.directory / "state.json").unlink()
    (store.directory / "licences" / "L-CAP.lic").write_bytes(data)
    assert statuses(store)["L-CAP"][0] == "invalid"
    assert store.capacity().capacity == 0
    with pytest.raises(LicenceError, match="released from this gateway"):
        store.activate(data)


def test_a_lost_data_copy_is_rewritten_and_nothing_is_lost(
    tmp_path: Path, code: str, clock: Clock
) -> None:
    store = make_store(tmp_path, code, clock)
    store.activate(trial(code, "L-T1"))
    store.activate(capacity(code, 10, "L-CAP"))
    shutil.rmtree(tmp_path / "data")  # a reset of edged's data
    assert store.capacity().capacity == 15
    assert (tmp_path / "data" / "licence-history.json").exists()
    # an older genuine copy (here: the CLI updated only the licence dir) is no mismatch
    cli = make_store(tmp_path, code, clock, copy=False)
    cli.release("L-CAP")
    assert store.capacity().capacity == 5
    assert all("disagreed" not in what for _, what in store.evaluate().history.repairs)  # type: ignore[union-attr]
