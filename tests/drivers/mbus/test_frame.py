"""M-Bus link layer: encoding, strict parsing and stream scanning with resync."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.mbus import frame as fr
from edged.errors import DecodeError

# REQ_UD2 to primary address 5, as on the wire.
REQ_UD2_5 = bytes.fromhex("10 5B 05 60 16")
RSP = fr.LongFrame(fr.RSP_UD, 5, 0x72, bytes.fromhex("78563412 2424 40 01 07 55 00 00"))


def test_constants_match_en_13757_2() -> None:
    assert fr.ACK_BYTE == 0xE5
    assert fr.SND_NKE == 0x40
    assert fr.REQ_UD2 == 0x5B and fr.REQ_UD2 | fr.FCB == fr.REQ_UD2_FCB == 0x7B
    assert (fr.SND_UD, fr.SND_UD_FCB) == (0x53, 0x73)
    assert fr.RSP_UD == 0x08
    assert (fr.CI_SELECT, fr.CI_APP_RESET) == (0x52, 0x50)


def test_encode_every_kind() -> None:
    assert fr.encode(fr.AckFrame()) == b"\xe5"
    assert fr.encode(fr.ShortFrame(fr.REQ_UD2, 5)) == REQ_UD2_5
    assert fr.encode(fr.ShortFrame(fr.SND_NKE, 0xFD)) == bytes.fromhex("10 40 FD 3D 16")
    assert fr.encode(fr.ControlFrame(fr.SND_UD, 0xFE, fr.CI_APP_RESET)) == bytes.fromhex(
        "68 03 03 68 53 FE 50 A1 16"
    )
    wire = fr.encode(RSP)
    assert wire[:4] == bytes((0x68, 3 + len(RSP.data), 3 + len(RSP.data), 0x68))
    assert wire[-1] == 0x16
    assert wire[-2] == sum(wire[4:-2]) & 0xFF


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="address"):
        fr.encode(fr.ShortFrame(fr.REQ_UD2, 256))
    with pytest.raises(ValueError, match="252"):
        fr.encode(fr.LongFrame(fr.SND_UD, 1, 0x51, bytes(253)))


def test_parse_round_trips() -> None:
    for f in (
        fr.AckFrame(),
        fr.ShortFrame(fr.REQ_UD2_FCB, 0),
        fr.ControlFrame(fr.SND_UD, 1, fr.CI_APP_RESET),
        RSP,
        fr.LongFrame(fr.SND_UD, 0xFD, fr.CI_SELECT, bytes(252)),
    ):
        assert fr.parse(fr.encode(f)) == f


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (bytes.fromhex("10 5B 05 61 16"), "checksum"),
        (bytes.fromhex("10 5B 05 60 17"), "stop byte"),
        (bytes.fromhex("68 04 05 68 08 01 72 00 7B 16"), "length fields differ"),
        (bytes.fromhex("68 04 04 69 08 01 72 00 7B 16"), "second start byte"),
        (bytes.fromhex("68 02 02 68 08 01 09 16"), "below the minimum"),
        (bytes.fromhex("68 04 04 68 08 01 72 00 7C 16"), "checksum"),
        (bytes.fromhex("68 04 04 68 08 01 72 00 7B 15"), "stop byte"),
        (bytes.fromhex("68 04 04 68 08 01 72 00 7B"), "truncated"),
        (REQ_UD2_5 + b"\xe5", "trailing"),
        (b"\x00", "does not start"),
        (b"", "empty"),
    ],
)
def test_parse_rejects_with_a_clear_reason(wire: bytes, message: str) -> None:
    with pytest.raises(fr.FrameError, match=message):
        fr.parse(wire)


def test_frame_error_is_a_decode_error() -> None:
    assert issubclass(fr.FrameError, DecodeError)


def test_scan_complete_incomplete_and_resync() -> None:
    wire = fr.encode(RSP)
    assert fr.scan(b"") == fr.Incomplete()
    for cut in range(1, len(wire)):
        assert fr.scan(wire[:cut]) == fr.Incomplete(), cut
    assert fr.scan(wire + REQ_UD2_5) == fr.Complete(RSP, len(wire))
    assert fr.scan(b"\xe5\xe5") == fr.Complete(fr.AckFrame(), 1)
    garbage = b"\x00\xff\x12"
    res = fr.scan(garbage + wire)
    assert isinstance(res, fr.Invalid)
    assert res.skip == len(garbage)
    assert fr.scan((garbage + wire)[res.skip :]) == fr.Complete(RSP, len(wire))


def test_scan_skips_a_false_start_byte_without_waiting() -> None:
    # 0x68 followed by mismatching lengths is rejected as soon as three bytes are there.
    res = fr.scan(bytes.fromhex("68 20 21"))
    assert isinstance(res, fr.Invalid) and res.skip == 3
    res = fr.scan(bytes.fromhex("68 10 11"))  # 0x10 may start a short frame: resync there
    assert isinstance(res, fr.Invalid) and res.skip == 1
    res = fr.scan(bytes.fromhex("10 5B 05 00 16") + REQ_UD2_5)
    assert isinstance(res, fr.Invalid) and "checksum" in res.reason
    assert res.skip == 5  # the next 0x10


def _drain(stream: bytes) -> list[fr.Frame]:
    out: list[fr.Frame] = []
    buf = stream
    while buf:
        res = fr.scan(buf)
        if isinstance(res, fr.Incomplete):
            break
        if isinstance(res, fr.Invalid):
            assert res.skip >= 1
            buf = buf[res.skip :]
            continue
        out.append(res.frame)
        buf = buf[res.end :]
    return out


def test_stream_with_noise_between_frames_yields_every_frame() -> None:
    frames: list[fr.Frame] = [RSP, fr.AckFrame(), fr.ShortFrame(fr.SND_NKE, 3), RSP]
    noisy = b"\x00\x01" + fr.encode(frames[0]) + b"\x55" + b"".join(map(fr.encode, frames[1:]))
    assert _drain(noisy) == frames


_bytes = st.integers(min_value=0, max_value=255)
_frames = st.one_of(
    st.just(fr.AckFrame()),
    st.builds(fr.ShortFrame, _bytes, _bytes),
    st.builds(fr.ControlFrame, _bytes, _bytes, _bytes),
    st.builds(fr.LongFrame, _bytes, _bytes, _bytes, st.binary(min_size=1, max_size=252)),
)


@given(_frames)
def test_property_encode_parse_round_trip(f: fr.Frame) -> None:
    assert fr.parse(fr.encode(f)) == f


_junk = st.binary(max_size=20).map(
    lambda b: bytes(x for x in b if x not in (fr.ACK_BYTE, fr.SHORT_START, fr.LONG_START))
)


@given(st.lists(_frames, max_size=5), _junk)
def test_property_scan_resyncs_past_noise(frames: list[fr.Frame], junk: bytes) -> None:
    wire = b"".join(fr.encode(f) for f in frames)
    assert _drain(junk + wire) == frames


@given(st.binary(max_size=300))
def test_property_scan_and_parse_never_raise_foreign_errors(data: bytes) -> None:
    res = fr.scan(data)
    if isinstance(res, fr.Invalid):
        assert 1 <= res.skip <= len(data)
    if isinstance(res, fr.Complete):
        assert 1 <= res.end <= len(data)
    with contextlib.suppress(fr.FrameError):
        fr.parse(data)
