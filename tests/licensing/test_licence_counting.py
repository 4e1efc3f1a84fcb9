"""Counting rules: gateway, devices, licence groups, config order, summed capacity."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edged.licensing.counting import capacity_at, plan_admission, units_needed
from edged.licensing.licence import Licence, LicenceKind
from edged.model import DeviceSpec
from tests.licensing.licence_helpers import DAY, T0


def dev(i: int | str, group: str | None = None) -> DeviceSpec:
    return DeviceSpec(f"m{i}", "modbus", "bus", licence_group=group)


def lic(lid: str, kind: LicenceKind, capacity: int, until: float | None = None) -> Licence:
    return Licence(lid, kind, capacity, "CODE", T0, until, None, None, "C", "k")


def test_trial_admits_the_gateway_and_four_devices() -> None:
    window = capacity_at([lic("T", "trial", 5, T0 + 30 * DAY)], T0)
    adm = plan_admission([dev(i) for i in range(5)], window.capacity)
    assert adm.admitted == ("m0", "m1", "m2", "m3")
    assert adm.unlicensed == ("m4",)
    assert (adm.used, adm.total) == (5, 5)


def test_three_devices_of_one_licence_group_count_as_one() -> None:
    devices = [dev("a", "iox1"), dev("b", "iox1"), dev("c", "iox1"), dev("d")]
    assert units_needed(devices) == 3
    adm = plan_admission(devices, 3)
    assert adm.admitted == ("ma", "mb", "mc", "md") and adm.used == 3


def test_a_group_refused_stays_refused_even_with_later_members() -> None:
    devices = [dev(1), dev("a", "iox"), dev(2), dev("b", "iox")]
    adm = plan_admission(devices, 2)
    assert adm.admitted == ("m1",)
    assert adm.unlicensed == ("ma", "m2", "mb")


def test_two_capacity_licences_add_up_and_one_id_counts_once() -> None:
    a, b = lic("A", "capacity", 10), lic("B", "capacity", 15)
    assert capacity_at([a, b, a], T0).capacity == 25


def test_capacity_plus_one_units_leave_exactly_one_device_unlicensed() -> None:
    capacity = 10
    devices = [dev(i) for i in range(capacity)]  # gateway + 10 devices = capacity + 1
    adm = plan_admission(devices, capacity)
    assert adm.unlicensed == ("m9",)
    assert adm.used == capacity


def test_gateway_without_devices_counts_one_and_refuses_nothing() -> None:
    # Issue 16 item 6: the gateway always counts 1 (it counted 0 with no devices); a
    # routing-only gateway still needs no licence, since nothing is refused.
    adm = plan_admission([], 0)
    assert (adm.admitted, adm.unlicensed, adm.used, adm.total) == ((), (), 1, 0)
    assert units_needed([]) == 1


def test_without_capacity_nothing_is_admitted() -> None:
    adm = plan_admission([dev(1)], 0)
    assert (adm.admitted, adm.unlicensed, adm.used) == ((), ("m1",), 1)


def test_capacity_changes_when_a_trial_ends_and_maintenance_grants_none() -> None:
    licences = [
        lic("C", "capacity", 10),
        lic("T", "trial", 5, T0 + 30 * DAY),
        lic("M", "maintenance", 0, T0 + 365 * DAY),
    ]
    assert capacity_at(licences, T0) == capacity_at(licences, T0 + 29 * DAY)
    assert capacity_at(licences, T0).capacity == 15
    assert capacity_at(licences, T0).next_change == T0 + 30 * DAY
    after = capacity_at(licences, T0 + 30 * DAY)
    assert (after.capacity, after.next_change) == (10, None)


devices_strategy = st.lists(
    st.tuples(st.integers(0, 1000), st.none() | st.sampled_from(["g1", "g2", "g3"])),
    max_size=30,
    unique_by=lambda t: t[0],
)


@given(devices_strategy, st.integers(0, 40))
def test_admission_invariants(spec: list[tuple[int, str | None]], capacity: int) -> None:
    devices = [dev(i, g) for i, g in spec]
    adm = plan_admission(devices, capacity)
    ids = [d.id for d in devices]
    assert sorted(adm.admitted + adm.unlicensed) == sorted(ids)
    assert list(adm.admitted) == [i for i in ids if i in adm.admitted]  # config order
    assert adm.used <= max(capacity, 1)
    assert adm.used == units_needed([d for d in devices if d.id in adm.admitted])
    if units_needed(devices) <= capacity:
        assert adm.unlicensed == ()
    groups_admitted = {d.licence_group for d in devices if d.id in adm.admitted}
    groups_refused = {d.licence_group for d in devices if d.id in adm.unlicensed}
    assert not (groups_admitted & groups_refused) - {None}
