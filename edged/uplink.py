"""The MQTT uplink: drains the outbox to the broker with QoS 1, in order, across reconnects.

Delivery is at-least-once with ordered replay. Within one connection records are
handed to the MQTT client strictly in outbox order (a window of ``max_inflight``
unacknowledged publishes), so the broker sees each device's records in order. A
record leaves the outbox only after its PUBACK. After any disconnect the next
session starts again from the oldest unacknowledged record, so a record is never
overtaken by a later one of the same device; the cloud drops duplicates by
(device, seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY

from edged import payload
from edged.config import MqttConfig
from edged.errors import UplinkError
from edged.outbox import Outbox, Stored
from edged.payload import OFFLINE, ONLINE
from edged.reconnect import Reconnect

log = logging.getLogger(__name__)

FETCH = 1000
"""Records read from the outbox per query."""
ACK_BATCH = 500
ACK_INTERVAL = 0.05
"""Seconds between batched outbox deletions of acknowledged records."""
PUBLISH_DEADLINE = 30.0
"""A publish without PUBACK for this long means the session is stuck: reconnect."""
MAX_EVENTS = 1000
"""Events queued in memory while offline; beyond that the oldest are dropped (and logged)."""


@dataclass(frozen=True)
class UplinkStats:
    """State and counters of the MQTT session."""

    connected: bool
    published: int
    acked: int
    reconnects: int
    last_error: str | None


@dataclass(frozen=True)
class _Event:
    topic: str
    payload: bytes


def describe_error(exc: BaseException) -> str:
    """One line that says what failed, with a hint for TLS problems."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, ssl.SSLError) or isinstance(cause, ssl.SSLError) or "SSL" in text:
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return (
                f"TLS certificate verification failed ({text}); "
                "check [mqtt.tls] ca_file and the broker's certificate/host name"
            )
        return f"TLS error ({text}); check [mqtt.tls] ca_file, cert_file and key_file"
    if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc in (4, 5, 134, 135):
        return f"broker refused the login ({text}); check [mqtt] username and password"
    return " ".join(text.split())


class _Stop(Exception):
    """Raised inside a session to end it on purpose (drain finished)."""


class Uplink:
    """Publishes outbox records and events to MQTT; run() forever, drain() on shutdown."""

    def __init__(
        self,
        cfg: MqttConfig,
        gateway_id: str,
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.gateway_id = gateway_id
        self.outbox = outbox
        self._clock = clock
        self._events: deque[_Event] = deque()
        self._events_dropped = 0
        self._acks: list[int] = []
        self._connected = False
        self._published = 0
        self._acked = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # ends a reconnect backoff early (stop, make_room)
        self._running = False
        self._stopped = asyncio.Event()
        self._work = asyncio.Event()
        self._inflight = 0
        self._tls: ssl.SSLContext | None = None
        self._topics: dict[str, str] = {}
        # Retained messages the gateway keeps at the broker (device info), and the changes
        # not yet published in this session (b"" clears a retained message).
        self._retained: dict[str, bytes] = {}
        self._retained_pending: dict[str, bytes] = {}
        self._retained_changed = asyncio.Event()
        # The session's reconnect policy; its state and last error are what status shows.
        self.reconnect = Reconnect(cfg.backoff_initial, cfg.backoff_max)

    # -- public API --------------------------------------------------------------------------

    def topic(self, device_id: str) -> str:
        """The data topic of a device: <prefix>/<gateway-id>/<device-id>."""
        topic = self._topics.get(device_id)
        if topic is None:
            topic = payload.data_topic(self.cfg.topic_prefix, self.gateway_id, device_id)
            self._topics[device_id] = topic
        return topic

    @property
    def batch_topic(self) -> str:
        """Messages with records of several devices: <prefix>/<gateway-id>/records."""
        return payload.batch_topic(self.cfg.topic_prefix, self.gateway_id)

    @property
    def status_topic(self) -> str:
        """Retained online/offline status of this gateway."""
        return payload.status_topic(self.cfg.topic_prefix, self.gateway_id)

    @property
    def events_topic(self) -> str:
        """Gateway events (licence warnings, outbox drops, ...)."""
        return payload.events_topic(self.cfg.topic_prefix, self.gateway_id)

    def stats(self) -> UplinkStats:
        """Connection state and counters."""
        return UplinkStats(
            self._connected, self._published, self._acked, self._reconnects, self._last_error
        )

    async def publish_event(self, kind: str, body: dict[str, object]) -> None:
        """Queue an event for <prefix>/<gw>/events (QoS 1); sent as soon as the session is up.

        Events are kept in memory (not in the outbox) until their PUBACK; while offline
        at most MAX_EVENTS are kept and the oldest are dropped with a warning.
        """
        self._events.append(_Event(self.events_topic, payload.event(kind, body)))
        if len(self._events) > MAX_EVENTS:
            self._events.popleft()
            self._events_dropped += 1
            log.warning(
                "uplink event queue full, oldest event dropped dropped=%d", self._events_dropped
            )
        self._work.set()

    def set_retained(self, messages: Mapping[str, bytes]) -> None:
        """The retained messages to keep at the broker (topic → payload): sent at every
        session start and, while connected, as soon as they change; a topic left out of
        ``messages`` is cleared at the broker."""
        for topic in self._retained.keys() - messages.keys():
            self._retained_pending[topic] = b""
        for topic, body in messages.items():
            if self._retained.get(topic) != body:
                self._retained_pending[topic] = body
        self._retained = dict(messages)
        if self._retained_pending:
            self._retained_changed.set()

    async def run(self) -> None:
        """Connect, publish status, drain the outbox; reconnect with backoff; until drain()."""
        if self._running:
            raise UplinkError("uplink is already running")
        self._running = True
        self._stopped.clear()
        self.reconnect.reset()
        self.reconnect.connecting()
        try:
            while not self._stop.is_set():
                started = False
                try:
                    client = await self._client()
                    async with client:
                        started = True
                        self.reconnect.connected()
                        self.reconnect.reset()
                        if not self._stop.is_set():
                            self._wake.clear()
                        self._connected = True
                        self._last_error = None
                        log.info(
                            "mqtt connected host=%s port=%d client_id=%s protocol=%s",
                            self.cfg.host,
                            self.cfg.port,
                            self.cfg.client_id,
                            self.cfg.protocol,
                        )
                        try:
                            await self._session(client)
                        finally:
                            self._connected = False
                except asyncio.CancelledError:
                    raise
                except _Stop:
                    pass
                except Exception as exc:  # never die: log one line and retry
                    self._last_error = describe_error(_unwrap(exc))
                    level = logging.WARNING if started or self._known(exc) else logging.ERROR
                    log.log(
                        level,
                        "mqtt %s host=%s port=%d error=%s",
                        "session lost" if started else "connect failed",
                        self.cfg.host,
                        self.cfg.port,
                        self._last_error,
                        exc_info=not self._known(exc),
                    )
                finally:
                    self._connected = False
                    await self._flush_acks()
                if self._stop.is_set():
                    break
                self._reconnects += 1
                await self.reconnect.wait(self._last_error, stop=self._wake)
                if not self._stop.is_set():  # woken to hurry: connect now
                    self._wake.clear()
                    self.reconnect.connecting()
        finally:
            self.reconnect.stopped()
            self._running = False
            self._stopped.set()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 (the supervisor's API)
        """Send what is queued for at most ``timeout`` seconds, then go offline and return."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        own: asyncio.Task[None] | None = None
        if not self._running:
            own = asyncio.create_task(self.run(), name="uplink-drain")
        self._wake.set()  # no backoff while draining: the broker may be back
        # Keep a little of the time to publish "offline" and disconnect cleanly.
        quiet_by = deadline - min(0.5, timeout / 4)
        while loop.time() < quiet_by:
            if own is None and not self._running:
                break
            if self._idle():
                break
            await asyncio.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._work.set()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), max(0.0, deadline - loop.time()))
        if own is not None:
            own.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await own
        if not self._idle():
            log.warning(
                "uplink drain ended with records left depth=%d events=%d",
                self.outbox.stats().depth,
                len(self._events),
            )

    async def make_room(self, n: int, timeout: float) -> None:  # noqa: ASYNC109
        """Wait (at most ``timeout`` s) until the outbox can take ``n`` records without a drop.

        Called before a clean stop puts its last records: a reconnect backoff is cut
        short so a broker that is back drains the backlog first. If the broker stays
        away the bound drops the oldest as always (counted).
        """
        if self.outbox.room() >= n or not self._running:
            return
        self._wake.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.outbox.room() >= n or not self._running:
                break
            await asyncio.sleep(0.02)

    # -- session -----------------------------------------------------------------------------

    def _idle(self) -> bool:
        return (
            self.outbox.stats().depth == 0
            and not self._events
            and not self._acks
            and self._inflight == 0
        )

    @staticmethod
    def _known(exc: BaseException) -> bool:
        exc = _unwrap(exc)
        return isinstance(exc, aiomqtt.MqttError | OSError | UplinkError)

    async def _client(self) -> aiomqtt.Client:
        cfg = self.cfg
        if cfg.tls is not None and self._tls is None:
            self._tls = await asyncio.to_thread(self._tls_context)
        v5 = cfg.protocol == "5"
        # A new client per connection with a clean session: the outbox replays what was
        # not acknowledged, so neither side needs to keep session state.
        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            username=cfg.username,
            password=cfg.password,
            identifier=cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else True,
            clean_start=True if v5 else MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=cfg.keepalive,
            timeout=max(10.0, float(cfg.keepalive)),
            will=aiomqtt.Will(self.status_topic, OFFLINE, qos=1, retain=True),
            tls_context=self._tls,
            tls_insecure=cfg.tls.insecure if cfg.tls is not None else None,
            max_inflight_messages=cfg.max_inflight + 4,
            logger=logging.getLogger("edged.uplink.mqtt"),
        )
        client.pending_calls_threshold = cfg.max_inflight + 8
        return client

    def _tls_context(self) -> ssl.SSLContext:
        tls = self.cfg.tls
        assert tls is not None
        try:
            ctx = ssl.create_default_context(
                cafile=str(tls.ca_file) if tls.ca_file is not None else None
            )
            if tls.cert_file is not None and tls.key_file is not None:
                ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise UplinkError(f"cannot load TLS files: {exc}; check [mqtt.tls]") from exc
        if tls.insecure:
            ctx.check_hostname = False
        return ctx

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.publish(self.status_topic, ONLINE, qos=1, retain=True)
        # The whole retained set at every session start: the broker may have lost it.
        cleared = {t: b for t, b in self._retained_pending.items() if not b}
        self._retained_pending.clear()
        self._retained_changed.clear()
        for topic, body in [*cleared.items(), *self._retained.items()]:
            await client.publish(topic, body, qos=1, retain=True)
        buffer: deque[Stored] = deque()
        state = _Cursor()
        started: dict[int, float] = {}
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch(client))
                tg.create_task(self._watch_stop())
                tg.create_task(self._feed(buffer, state))
                tg.create_task(self._ack_loop(started))
                tg.create_task(self._retain_loop(client))
                for worker in range(self.cfg.max_inflight):
                    tg.create_task(self._publish_loop(client, buffer, state, worker, started))
        except BaseExceptionGroup as group:
            stop, rest = group.split(_Stop)
            if rest is not None:
                _, rest = rest.split(asyncio.CancelledError)
            if rest is not None:
                raise rest.exceptions[0] from None
            if stop is not None:
                await self._go_offline(client)
                raise _Stop() from None
            raise

    async def _retain_loop(self, client: aiomqtt.Client) -> None:
        """Publish retained messages that changed during the session."""
        while True:
            await self._retained_changed.wait()
            self._retained_changed.clear()
            pending, self._retained_pending = self._retained_pending, {}
            for topic, body in pending.items():
                try:
                    await client.publish(topic, body, qos=1, retain=True)
                except BaseException:
                    # Not sent: keep it for the next try (or the next session's full set).
                    self._retained_pending.setdefault(topic, body)
                    raise

    async def _go_offline(self, client: aiomqtt.Client) -> None:
        await self._flush_acks()
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.status_topic, OFFLINE, qos=1, retain=True, timeout=1.0)
        log.info("mqtt disconnecting after drain host=%s port=%d", self.cfg.host, self.cfg.port)

    async def _watch(self, client: aiomqtt.Client) -> None:
        # The message iterator is the client's public way of noticing a dropped connection
        # (pending publishes are not woken by it). Nothing is subscribed, so nothing arrives.
        async for _ in client.messages:
            pass
        raise UplinkError("connection closed")

    async def _watch_stop(self) -> None:
        await self._stop.wait()
        raise _Stop()

    async def _feed(self, buffer: deque[Stored], state: _Cursor) -> None:
        while True:
            if len(buffer) >= FETCH // 2:
                state.space.clear()
                await state.space.wait()
                continue
            self.outbox.changed.clear()
            batch = await self.outbox.next_batch(FETCH, state.after)
            if batch:
                state.after = batch[-1].id
                buffer.extend(batch)
                self._work.set()
                continue
            await self.outbox.changed.wait()

    async def _publish_loop(
        self,
        client: aiomqtt.Client,
        buffer: deque[Stored],
        state: _Cursor,
        worker: int,
        started: dict[int, float],
    ) -> None:
        while True:
            if self._events:
                ev = self._events.popleft()
                self._inflight += 1
                started[worker] = self._clock()
                try:
                    await client.publish(ev.topic, ev.payload, qos=1, timeout=math.inf)
                except BaseException:
                    self._events.appendleft(ev)
                    raise
                finally:
                    self._inflight -= 1
                    started.pop(worker, None)
                self._published += 1
                continue
            if not buffer:
                # One shared event for new records and new events: a cheap wait for all
                # publishers (no helper futures per wake-up).
                self._work.clear()
                await self._work.wait()
                continue
            # Taking records and the client's publish() run without an await in between,
            # so records enter the connection in outbox order.
            topic, body, ids = self._take(buffer)
            if len(buffer) < FETCH // 2:
                state.space.set()
            self._inflight += 1
            started[worker] = self._clock()
            try:
                await client.publish(topic, body, qos=1, timeout=math.inf)
            finally:
                self._inflight -= 1
                started.pop(worker, None)
            self._published += len(ids)
            self._acked += len(ids)
            self._acks.extend(ids)

    def _take(self, buffer: deque[Stored]) -> tuple[str, bytes, list[int]]:
        """The next message: up to ``batch`` consecutive records, joined without re-encoding."""
        first = buffer.popleft()
        if first.shape is None:  # stored by an older edged: sent as it was stored
            return self.topic(first.device_id), first.payload, [first.id]
        parts = [(first.shape, first.payload)]
        ids = [first.id]
        device: str | None = first.device_id
        limit = self.cfg.batch
        while buffer and len(ids) < limit and buffer[0].shape is not None:
            rec = buffer.popleft()
            parts.append((rec.shape, rec.payload))  # type: ignore[arg-type]
            ids.append(rec.id)
            if rec.device_id != device:
                device = None
        topic = self.topic(device) if device is not None else self.batch_topic
        return topic, payload.message(parts), ids

    async def _ack_loop(self, started: dict[int, float]) -> None:
        while True:
            await asyncio.sleep(ACK_INTERVAL)
            if self._acks:
                await self._flush_acks()
            if started:
                oldest = min(started.values())
                if self._clock() - oldest > PUBLISH_DEADLINE:
                    raise UplinkError(f"no PUBACK for {PUBLISH_DEADLINE:.0f} s; reconnecting")

    async def _flush_acks(self) -> None:
        while self._acks:
            ids, self._acks = self._acks[: ACK_BATCH * 4], self._acks[ACK_BATCH * 4 :]
            try:
                await self.outbox.ack(ids)
            except Exception as exc:
                # The records stay in the outbox and are sent again: a duplicate, not a loss.
                log.warning("outbox ack failed count=%d error=%s", len(ids), exc)
                return


class _Cursor:
    """Per-session read position and wake-ups between the feeder and the publishers."""

    def __init__(self) -> None:
        self.after = 0
        self.space = asyncio.Event()


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


__all__ = ["Uplink", "UplinkStats", "describe_error"]
