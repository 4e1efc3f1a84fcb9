"""The shape checker: it must reject what does not match, else the REST tests prove nothing."""

from __future__ import annotations

from tests.web.shapes import documented, problems


def test_every_documented_endpoint_has_a_shape() -> None:
    shapes = documented()
    for endpoint in (
        "GET /api/session",
        "GET /api/status",
        "GET /api/devices",
        "GET /api/devices/ID",
        "GET /api/devices/ID/history",
        "POST /api/devices/ID/reconnect",
        "POST /api/reload",
        "GET /api/licences",
        "POST /api/licences",
        "POST /api/licences/ID/release",
        "GET /api/scans/ID",
        "GET /api/events",
        "GET /api/circuits",
    ):
        assert endpoint in shapes, endpoint


def test_checker_rejects_wrong_types_missing_keys_and_bad_items() -> None:
    shape = {"a": "int", "b": "str|null", "c?": "bool", "d": [{"x": "number"}], "e": {"*": "str"}}
    good = {"a": 1, "b": None, "d": [{"x": 1.5}, {"x": 2}], "e": {"k": "v"}, "extra": 1}
    assert problems(good, shape) == []
    assert problems({**good, "a": True}, shape)  # a bool is not an int
    assert problems({**good, "a": "1"}, shape)
    assert problems({k: v for k, v in good.items() if k != "b"}, shape)
    assert problems({**good, "c": "yes"}, shape)
    assert problems({**good, "d": [{"x": "1"}]}, shape)
    assert problems({**good, "e": {"k": 3}}, shape)
    assert problems({**good, "d": {}}, shape)


def test_checker_takes_a_list_of_a_simple_type_or_null() -> None:
    shape = {"m": "[number]|null"}
    assert problems({"m": [1, 2.5, 3]}, shape) == []
    assert problems({"m": None}, shape) == []
    assert problems({"m": [1, "2"]}, shape)
    assert problems({"m": 1}, shape)
    assert problems({"m": [True]}, shape)
