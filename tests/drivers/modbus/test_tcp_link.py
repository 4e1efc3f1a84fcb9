"""The lean Modbus TCP link against a raw TCP peer that misbehaves on purpose: late
answers, foreign transaction ids, exception replies, wrong functions, a broken header."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from drivers.modbus.errors import DeviceRefused, ExceptionResponse
from drivers.modbus.settings import ConnectionSettings
from drivers.modbus.tcp import TcpLink
from edged.errors import ConnectionLost, DecodeError, DeviceTimeout

strays: list[int] = []
"""One entry per frame the links under test reported as answering nothing."""

Answer = Callable[[int, int, bytes, asyncio.StreamWriter], Awaitable[None]]


def frame(tid: int, unit: int, pdu: bytes, pid: int = 0) -> bytes:
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1, unit) + pdu


def registers(values: list[int], fc: int = 3) -> bytes:
    return struct.pack(f">BB{len(values)}H", fc, 2 * len(values), *values)


async def serve(answer: Answer) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(7)
                tid, _, length, unit = struct.unpack(">HHHB", head)
                pdu = await reader.readexactly(length - 1)
                await answer(tid, unit, pdu, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def settings(port: int, timeout: float = 0.3, retries: int = 0) -> ConnectionSettings:
    return ConnectionSettings("tcp", "127.0.0.1", port, "", 0, "N", 1, 8, timeout, retries, 0.0)


@pytest.fixture
async def link_to() -> AsyncIterator[Callable[..., Awaitable[TcpLink]]]:
    servers: list[asyncio.Server] = []
    links: list[TcpLink] = []
    strays.clear()

    async def make(answer: Answer, **kw: float) -> TcpLink:
        server, port = await serve(answer)
        servers.append(server)
        link = TcpLink(settings(port, **kw), lambda: strays.append(1))  # type: ignore[arg-type]
        await link.open()
        links.append(link)
        return link

    yield make
    for link in links:
        link.close()
    for server in servers:
        server.close()


async def test_reads_and_writes_round_trip(link_to: Callable[..., Awaitable[TcpLink]]) -> None:
    seen: list[bytes] = []

    async def answer(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        seen.append(pdu)
        if pdu[0] in (3, 4):
            start, count = struct.unpack(">HH", pdu[1:5])
            w.write(frame(tid, unit, registers(list(range(start, start + count)), pdu[0])))
        else:
            w.write(frame(tid, unit, pdu[:5]))  # writes echo address and value/count

    link = await link_to(answer)
    assert await link.read("holding", 10, 3, 7) == [10, 11, 12]
    assert await link.read("input", 0, 2, 7) == [0, 1]
    await link.write(7, 5, [0x1234], None)
    await link.write(7, 6, [1, 2], None)
    await link.write(7, 8, [], True)
    assert seen[2] == bytes([6, 0, 5, 0x12, 0x34])
    assert seen[3] == bytes([16, 0, 6, 0, 2, 4, 0, 1, 0, 2])
    assert seen[4] == bytes([5, 0, 8, 0xFF, 0x00])


async def test_a_late_answer_is_never_taken_for_the_next_one(
    link_to: Callable[..., Awaitable[TcpLink]],
) -> None:
    calls = 0

    async def answer(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.5)  # past the link's timeout: this answer comes late
            w.write(frame(tid, unit, registers([111])))
        else:
            w.write(frame(tid ^ 0x5555, unit, registers([999])))  # a foreign transaction id
            w.write(frame(tid, unit + 1, registers([998])))  # another unit
            w.write(frame(tid, unit, registers([997]), pid=1))  # another protocol
            w.write(frame(tid, unit, registers([222])))

    link = await link_to(answer, timeout=0.3)
    with pytest.raises(DeviceTimeout):
        await link.read("holding", 0, 1, 1)
    assert await link.read("holding", 0, 1, 1) == [222]
    assert link.stray_frames == 4
    assert len(strays) == 4  # reported, for the frame_rejected metric
    assert link.connected


async def test_frames_split_or_run_together_are_taken_whole(
    link_to: Callable[..., Awaitable[TcpLink]],
) -> None:
    """The answer dribbled out a byte at a time, and an answer behind more stray bytes
    than one read takes, arrive whole and in order."""
    calls = 0

    async def answer(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        reply = frame(tid, unit, registers([calls, 0xBEEF]))
        if calls == 1:
            for i in range(len(reply)):
                w.write(reply[i : i + 1])
                await w.drain()
                await asyncio.sleep(0.002)
        else:
            # Twenty foreign frames of the largest size (more than one read takes), then ours.
            big = frame(tid ^ 0xFFFF, unit, registers(list(range(125))))
            w.write(big * 20 + reply)

    link = await link_to(answer, timeout=2.0)
    assert await link.read("holding", 0, 2, 1) == [1, 0xBEEF]
    assert await link.read("holding", 0, 2, 1) == [2, 0xBEEF]
    assert link.stray_frames == 20
    assert link.connected


async def test_a_retry_after_a_timeout_gets_the_answer(
    link_to: Callable[..., Awaitable[TcpLink]],
) -> None:
    calls = 0

    async def answer(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            w.write(frame(tid, unit, registers([5])))

    link = await link_to(answer, timeout=0.2, retries=1)
    assert await link.read("holding", 0, 1, 1) == [5]
    assert calls == 2


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (bytes([0x83, 2]), ExceptionResponse),
        (bytes([0x83, 6]), DeviceRefused),
        (bytes([4, 2, 0, 1]), DecodeError),  # another function
        (bytes([3, 4, 0, 1]), DecodeError),  # byte count does not match the data
        (bytes([3, 2, 0, 1, 0, 2]), DecodeError),  # one register too many
    ],
)
async def test_replies_that_do_not_fit_the_request_are_errors(
    link_to: Callable[..., Awaitable[TcpLink]], reply: bytes, error: type[Exception]
) -> None:
    async def answer(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.write(frame(tid, unit, reply))

    link = await link_to(answer)
    with pytest.raises(error):
        await link.read("holding", 0, 1, 1)
    assert link.connected


async def test_a_broken_header_closes_the_link(
    link_to: Callable[..., Awaitable[TcpLink]],
) -> None:
    async def answer(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.write(struct.pack(">HHHB", tid, 0, 900, unit) + b"\0" * 10)

    link = await link_to(answer)
    with pytest.raises(ConnectionLost, match="malformed MBAP header"):
        await link.read("holding", 0, 1, 1)
    assert not link.connected


async def test_a_peer_that_hangs_up_fails_the_waiting_read(
    link_to: Callable[..., Awaitable[TcpLink]],
) -> None:
    async def answer(tid: int, unit: int, pdu: bytes, w: asyncio.StreamWriter) -> None:
        w.close()

    link = await link_to(answer, timeout=5.0)
    with pytest.raises(ConnectionLost):
        await link.read("holding", 0, 1, 1)
    with pytest.raises(ConnectionLost):
        await link.read("holding", 0, 1, 1)


async def test_nothing_listening_is_connection_lost() -> None:
    server, port = await serve(lambda *a: asyncio.sleep(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionLost, match="cannot connect"):
        await TcpLink(settings(port)).open()
