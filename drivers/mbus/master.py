"""The M-Bus master: request/response exchanges, FCB, retries, multi-telegram reads, scans.

Every exchange has a hard deadline derived from the baud rate, so a noisy line
ends in a timeout instead of a hang. Answers are classified by what a caller
does with them: nothing at all (``NoReply``), bytes that never formed the
expected frame before the line went quiet (``GarbledReply`` — on a wildcard
select this is a collision), or bytes that kept coming past the deadline
(``LineNoise``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from drivers.mbus import frame as fr
from drivers.mbus import telegram as tg
from drivers.mbus.address import PRIMARY_MAX, WILDCARD, Address, SecondaryAddress
from drivers.mbus.transport import (
    MAX_FRAME_BYTES,
    Link,
    byte_time,
    idle_gap,
    response_timeout,
    transmit_time,
)
from edged.errors import DecodeError, DeviceTimeout

log = logging.getLogger(__name__)

MAX_TELEGRAMS = 16  # a meter that keeps saying "more follows" is cut off here


class NoReply(DeviceTimeout):
    """Nothing at all arrived before the response deadline."""


class LineNoise(DeviceTimeout):
    """Bytes kept arriving but no expected frame formed before the hard deadline."""


class GarbledReply(DecodeError):
    """An answer started but did not form the expected frame (corruption or a collision)."""


class Probe(enum.Enum):
    """What a select probe found."""

    NOTHING = "nothing"
    SINGLE = "single"
    COLLISION = "collision"


@dataclass(frozen=True)
class Reading:
    """All telegrams of one read, in the order the slave sent them."""

    address: Address
    frames: tuple[fr.LongFrame, ...]
    telegrams: tuple[tg.Telegram, ...]


Accept = Callable[[fr.Frame], bool]


def _is_ack(frame: fr.Frame) -> bool:
    return isinstance(frame, fr.AckFrame)


def _is_rsp_ud(frame: fr.Frame) -> bool:
    # ACD and DFC bits may be set by the slave; the function code must be RSP_UD.
    return isinstance(frame, fr.LongFrame) and (frame.control & 0x4F) == fr.RSP_UD


class Master:
    """Talks to the slaves on one link, one exchange at a time."""

    def __init__(
        self,
        link: Link,
        *,
        retries: int = 2,
        timeout: float | None = None,
        frame_gap: float | None = None,
        max_telegrams: int = MAX_TELEGRAMS,
        idle: float | None = None,
    ) -> None:
        self.link = link
        self.baudrate = link.settings.baudrate
        self.retries = retries
        self.timeout = timeout if timeout is not None else response_timeout(self.baudrate)
        self.frame_gap = frame_gap if frame_gap is not None else 11 / self.baudrate
        self.max_telegrams = max_telegrams
        self.rejected = 0  # answers thrown away (garbled, unexpected, undecodable)
        self._progress: Callable[[str], None] | None = None
        self._on_found: Callable[[SecondaryAddress], None] | None = None
        self._top = -1
        self._idle = idle if idle is not None else idle_gap(self.baudrate)
        self._fcb: dict[Address, bool] = {}
        self._quiet_at = 0.0
        self._lock = asyncio.Lock()

    # -- timing ---------------------------------------------------------------------------

    def deadline(self, request_bytes: int) -> float:
        """Longest one attempt of an exchange can take (request, wait, longest frame, gap)."""
        return (
            self.frame_gap
            + transmit_time(request_bytes, self.baudrate)
            + self.timeout
            + transmit_time(MAX_FRAME_BYTES, self.baudrate)
            + self._idle
        )

    # -- one exchange ----------------------------------------------------------------------

    async def exchange(self, request: fr.Frame, accept: Accept) -> fr.Frame:
        """Send one request and wait for the answer ``accept`` recognises (no retries)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._quiet_at + self.frame_gap - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            stale = self.link.discard_input()
            if stale:
                log.debug("mbus dropped stale input bytes=%d", stale)
            data = fr.encode(request)
            self.link.write(data)
            sent = loop.time()
            first = sent + transmit_time(len(data), self.baudrate) + self.timeout
            hard = first + transmit_time(MAX_FRAME_BYTES, self.baudrate) + self._idle
            try:
                return await self._receive(accept, first, hard)
            finally:
                self._quiet_at = loop.time()

    async def _receive(self, accept: Accept, first: float, hard: float) -> fr.Frame:
        loop = asyncio.get_running_loop()
        buf = b""
        started = False
        junk = False
        while True:
            while buf:
                result = fr.scan(buf)
                if isinstance(result, fr.Complete):
                    buf = buf[result.end :]
                    if accept(result.frame):
                        return result.frame
                    junk = True
                elif isinstance(result, fr.Invalid):
                    buf = buf[max(result.skip, 1) :]
                    junk = True
                else:
                    break
            now = loop.time()
            if now >= hard:
                raise LineNoise(f"{self.link.endpoint}: no valid frame within the deadline")
            until = first if not started else min(hard, now + self._idle)
            if await self.link.wait_bytes(until - now):
                buf += self.link.take()
                started = True
                continue
            if not started:
                raise NoReply(f"{self.link.endpoint}: no answer")
            if loop.time() >= hard:
                raise LineNoise(f"{self.link.endpoint}: no valid frame within the deadline")
            what = "truncated frame" if buf and not junk else "garbled answer"
            raise GarbledReply(f"{self.link.endpoint}: {what}")

    async def request(
        self, request: fr.Frame, accept: Accept, retries: int | None = None
    ) -> fr.Frame:
        """``exchange`` with retries of the very same frame (same FCB) on silence or garbage."""
        attempts = (self.retries if retries is None else retries) + 1
        for attempt in range(attempts):
            try:
                return await self.exchange(request, accept)
            except GarbledReply as exc:
                self.rejected += 1
                if attempt + 1 == attempts:
                    raise
                log.debug("mbus retry attempt=%d error=%s", attempt + 1, exc)
            except DeviceTimeout as exc:
                if attempt + 1 == attempts:
                    raise
                log.debug("mbus retry attempt=%d error=%s", attempt + 1, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- link-layer services ----------------------------------------------------------------

    async def snd_nke(self, address: int, retries: int | None = None) -> None:
        """Reset a slave's link layer (it then expects FCB = 1)."""
        await self.request(fr.ShortFrame(fr.SND_NKE, address), _is_ack, retries)
        self._fcb[address] = True

    async def req_ud2(
        self, address: int, key: Address | None = None, retries: int | None = None
    ) -> fr.LongFrame:
        """One REQ_UD2 with this target's FCB; the FCB toggles only after a successful answer."""
        key = address if key is None else key
        fcb = self._fcb.get(key, True)
        control = fr.REQ_UD2_FCB if fcb else fr.REQ_UD2
        try:
            answer = await self.request(fr.ShortFrame(control, address), _is_rsp_ud, retries)
        except (DeviceTimeout, DecodeError):
            # The slave's FCB state is unknown now; reset it before the next read.
            self._fcb.pop(key, None)
            raise
        self._fcb[key] = not fcb
        assert isinstance(answer, fr.LongFrame)
        return answer

    async def select(self, mask: SecondaryAddress, retries: int | None = None) -> None:
        """Select the slave(s) matching ``mask``; they then answer at address 253."""
        request = fr.LongFrame(fr.SND_UD, fr.ADDR_NETWORK_LAYER, fr.CI_SELECT, mask.to_bytes())
        await self.request(request, _is_ack, retries)

    async def probe(self, mask: SecondaryAddress) -> Probe:
        """One select without retries: nobody, exactly one, or several slaves answered."""
        try:
            await self.select(mask, retries=0)
        except NoReply:
            return Probe.NOTHING
        except (GarbledReply, LineNoise):
            return Probe.COLLISION
        return Probe.SINGLE

    # -- application reads ------------------------------------------------------------------

    async def read(self, address: Address, retries: int | None = None) -> Reading:
        """Read every telegram of one slave, toggling the FCB until no more records follow."""
        if isinstance(address, SecondaryAddress):
            try:
                await self.select(address, retries)
            except GarbledReply as exc:
                if not address.is_wildcard:
                    raise
                # Several slaves acknowledging one select overlap on the line.
                raise GarbledReply(
                    f"{exc}: the wildcard address {address} matches several meters; give the "
                    "full secondary address (edged mbus scan --secondary lists them)"
                ) from None
            wire = fr.ADDR_NETWORK_LAYER
            # A fresh select restarts the slave's telegram sequence.
            self._fcb[address] = True
        else:
            wire = address
            if address not in self._fcb:
                await self.snd_nke(address, retries)
        frames: list[fr.LongFrame] = []
        telegrams: list[tg.Telegram] = []
        for _ in range(self.max_telegrams):
            answer = await self.req_ud2(wire, key=address, retries=retries)
            try:
                telegram = tg.decode_user_data(answer.ci, answer.data)
            except DecodeError:
                self.rejected += 1
                raise
            frames.append(answer)
            telegrams.append(telegram)
            if not telegram.more_follows:
                break
        else:
            log.warning(
                "mbus read stopped address=%s telegrams=%d reason=more-follows-limit",
                address,
                self.max_telegrams,
            )
        return Reading(address, tuple(frames), tuple(telegrams))

    # -- scans ------------------------------------------------------------------------------

    async def scan_primary(
        self,
        addresses: range = range(PRIMARY_MAX + 1),
        retries: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> list[int]:
        """Primary addresses that acknowledge a SND_NKE (garbled answers are reported too)."""
        found: list[int] = []
        for n, address in enumerate(addresses):
            # A full scan takes about a minute at 2400 baud: say how far it got.
            if progress is not None and n and n % 25 == 0:
                progress(f"address {address} ({n}/{len(addresses)}), {len(found)} found so far")
            try:
                await self.snd_nke(address, retries=retries)
            except NoReply:
                continue
            except (GarbledReply, LineNoise):
                log.warning("mbus scan collision address=%d (two slaves share it?)", address)
            found.append(address)
        return found

    async def scan_secondary(
        self,
        mask: SecondaryAddress = WILDCARD,
        progress: Callable[[str], None] | None = None,
        on_found: Callable[[SecondaryAddress], None] | None = None,
    ) -> list[SecondaryAddress]:
        """Every slave matching ``mask``, found by wildcard selects split on collisions.

        ``on_found`` is called with each slave as soon as it is identified.
        """
        found: list[SecondaryAddress] = []
        self._progress = progress
        self._on_found = on_found
        self._top = mask.id.find("F")
        position = mask.id.find("F")
        if position < 0:
            if await self.probe(mask) is not Probe.NOTHING:
                ident = await self._identify()
                found.append(ident or mask)
                if on_found is not None:
                    on_found(ident or mask)
            return found
        await self._scan_from(mask, position, found)
        return found

    async def _scan_from(
        self, mask: SecondaryAddress, position: int, found: list[SecondaryAddress]
    ) -> None:
        for digit in range(10):
            candidate = mask.with_digit(position, digit)
            if position == self._top and self._progress is not None:
                self._progress(f"searching {candidate} ({digit + 1}/10), {len(found)} found so far")
            outcome = await self.probe(candidate)
            if outcome is Probe.NOTHING:
                continue
            if outcome is Probe.SINGLE:
                ident = await self._identify()
                if ident is not None:
                    log.info("mbus scan found address=%s", ident)
                    found.append(ident)
                    if self._on_found is not None:
                        self._on_found(ident)
                    if self._progress is not None:
                        self._progress(f"found {ident} ({len(found)} so far)")
                    continue
            nxt = candidate.id.find("F", position + 1)
            if nxt < 0:
                log.warning("mbus scan unresolved collision mask=%s", candidate)
                continue
            await self._scan_from(candidate, nxt, found)

    async def _identify(self) -> SecondaryAddress | None:
        """The full address of the one selected slave, None when its answer was garbled."""
        try:
            answer = await self.request(
                fr.ShortFrame(fr.REQ_UD2_FCB, fr.ADDR_NETWORK_LAYER), _is_rsp_ud, retries=1
            )
        except (GarbledReply, LineNoise):
            return None
        except NoReply:
            log.warning("mbus scan: a slave acknowledged the select but sent no data")
            return None
        assert isinstance(answer, fr.LongFrame)
        return header_address(answer)


def header_address(answer: fr.LongFrame) -> SecondaryAddress | None:
    """The secondary address in a response's header (long header or fixed structure)."""
    if answer.ci in (fr.CI_RESPONSE_LONG, fr.CI_RESPONSE_LONG_MSB) and len(answer.data) >= 8:
        return SecondaryAddress.from_header(answer.data[:8])
    if answer.ci in (fr.CI_RESPONSE_FIXED, fr.CI_RESPONSE_FIXED_MSB) and len(answer.data) >= 4:
        ident = "".join(f"{b:02X}" for b in reversed(answer.data[0:4]))
        return SecondaryAddress(ident)
    return None


def bus_floor(request_bytes: int, response_bytes: int, baudrate: int) -> float:
    """Line-rate floor of one exchange: 11 bits per byte of request and response."""
    return (request_bytes + response_bytes) * byte_time(baudrate)
