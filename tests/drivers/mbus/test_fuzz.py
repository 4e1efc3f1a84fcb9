"""Fuzzing the M-Bus decoder: only FrameError / TelegramError may ever escape it.

A deterministic mutation loop (fixed seed) mutates the frames of the conformance corpus; most
mutants are re-framed with a correct length and checksum so they reach the application layer
instead of dying at the link layer. ``EDGED_FUZZ_FRAMES`` raises the number of mutants.
"""

from __future__ import annotations

import contextlib
import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.mbus import frame as fr
from drivers.mbus.telegram import TelegramError, decode_frame, decode_user_data, telegram_to_json
from tests.drivers.mbus import CORPUS

FUZZ_FRAMES = int(os.environ.get("EDGED_FUZZ_FRAMES", "100000"))
SEED = 13757
_CIS = (0x70, 0x72, 0x73, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x51)

# Bytes that steer the record parser into its special paths.
_INTERESTING = (
    0x00, 0x0D, 0x0F, 0x1F, 0x2F, 0x7C, 0x7F, 0x80, 0xBF, 0xC9, 0xD9, 0xEF,
    0xF0, 0xF4, 0xF5, 0xF6, 0xF7, 0xFA, 0xFB, 0xFC, 0xFD, 0xFF,
)  # fmt: skip


def _seeds() -> list[bytes]:
    frames = []
    for folder in ("test-frames", "error-frames", "unsupported-frames"):
        for path in sorted((CORPUS / folder).glob("*.hex")):
            text = path.read_text()
            try:
                frames.append(bytes.fromhex(text))
            except ValueError:
                continue
    assert len(frames) > 90, f"conformance corpus missing or incomplete under {CORPUS}"
    return frames


def _mutate(rng: random.Random, data: bytearray) -> None:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        n = len(data)
        if op == 0 and n:
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            data[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:
            data[rng.randrange(n)] = rng.choice(_INTERESTING)
        elif op == 3:
            data.insert(rng.randint(0, n), rng.choice(_INTERESTING))
        elif op == 4 and n:
            del data[rng.randrange(n)]
        elif op == 5 and n:
            del data[rng.randint(0, n - 1) :]
        elif op == 6 and n:
            i = rng.randrange(n)
            data[i:i] = data[i : i + rng.randint(1, 8)]


def _reframe(control: int, address: int, ci: int, data: bytes) -> bytes:
    return fr.encode(fr.LongFrame(control, address, ci, data[: fr.MAX_DATA]))


def test_mutated_corpus_frames_raise_only_our_errors() -> None:
    rng = random.Random(SEED)
    seeds = _seeds()
    decoded = rejected = 0
    for i in range(FUZZ_FRAMES):
        wire = rng.choice(seeds)
        if i % 5 == 0 or len(wire) < 8:
            # raw mutation: exercises the link layer (checksum, lengths, stop byte)
            buf = bytearray(wire)
            _mutate(rng, buf)
            candidate = bytes(buf)
        else:
            data = bytearray(wire[7:-2])
            _mutate(rng, data)
            ci = wire[6] if rng.random() < 0.9 else rng.choice(_CIS)
            candidate = _reframe(wire[4], wire[5], ci, bytes(data))
        try:
            t = decode_frame(candidate)
        except (fr.FrameError, TelegramError):
            rejected += 1
            continue
        telegram_to_json(t)
        decoded += 1
    print(f"\nfuzz: {FUZZ_FRAMES} mutants, {decoded} decoded, {rejected} rejected (seed {SEED})")
    assert decoded + rejected == FUZZ_FRAMES
    # Most mutants must reach the application layer, or the loop tests nothing.
    assert decoded > FUZZ_FRAMES // 10


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(_CIS), st.binary(max_size=252))
def test_property_user_data_raises_only_telegram_error(ci: int, data: bytes) -> None:
    with contextlib.suppress(TelegramError):
        telegram_to_json(decode_user_data(ci, data))


_header = st.binary(min_size=12, max_size=12)
_record_bytes = st.lists(
    st.one_of(st.sampled_from(_INTERESTING), st.integers(0, 255)), max_size=120
).map(bytes)


@settings(max_examples=500, deadline=None)
@given(_header, _record_bytes)
def test_property_records_after_a_valid_header(header: bytes, records: bytes) -> None:
    try:
        t = decode_user_data(0x72, header + records)
    except TelegramError:
        return
    for r in t.records:
        assert r.function in ("instantaneous", "maximum", "minimum", "error")
        assert r.storage >= 0 and r.tariff >= 0 and r.subunit >= 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_property_any_bytes_as_a_frame(data: bytes) -> None:
    with contextlib.suppress(fr.FrameError, TelegramError):
        decode_frame(data)
