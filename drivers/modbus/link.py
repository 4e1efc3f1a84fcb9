"""The link to one Modbus connection: a pymodbus async client and a register reader.

Timeouts and retries are set here (pymodbus' defaults cost 12 s per dead request), the
pause between frames on one bus is honoured, and pymodbus' exceptions are translated
into the driver's error classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.modbus.errors import from_exception_code
from drivers.modbus.planner import Table
from drivers.modbus.settings import ConnectionSettings
from edged.errors import ConnectionLost, DecodeError, DeviceTimeout

Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class Link:
    """One open (or opening) connection; one request at a time."""

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.client: Client = self._make_client()
        self._last_io = 0.0
        # Polls and writes share the link: one exchange at a time, in the order asked.
        self._lock = asyncio.Lock()

    def _make_client(self) -> Client:
        s = self.settings
        # reconnect_delay=0: the driver owns reconnects (with jittered backoff).
        if s.transport == "tcp":
            return AsyncModbusTcpClient(
                s.host, port=s.port, timeout=s.timeout, retries=s.retries, reconnect_delay=0
            )
        return AsyncModbusSerialClient(
            s.device,
            baudrate=s.baudrate,
            parity=s.parity,
            stopbits=s.stopbits,
            bytesize=s.bytesize,
            timeout=s.timeout,
            retries=s.retries,
            reconnect_delay=0,
        )

    async def open(self) -> None:
        """Connect; raises ConnectionLost when the endpoint cannot be reached."""
        try:
            ok = await asyncio.wait_for(self.client.connect(), self.settings.timeout + 1)
        except (OSError, ModbusException, TimeoutError) as exc:
            raise ConnectionLost(f"cannot connect to {self.settings.endpoint}: {exc}") from None
        if not ok:
            raise ConnectionLost(f"cannot connect to {self.settings.endpoint}")

    @property
    def connected(self) -> bool:
        """True while the transport is up."""
        return bool(self.client.connected)

    def close(self) -> None:
        """Close the transport."""
        self.client.close()

    async def read(self, table: Table, start: int, count: int, unit: int) -> list[int]:
        """Registers ``start .. start+count`` of a table of one unit."""
        async with self._lock:
            return await self._read(table, start, count, unit)

    async def write(
        self, unit: int, address: int, values: Sequence[int], coil: bool | None
    ) -> None:
        """Write holding registers from ``address`` (``values``), or one coil (``coil``)."""
        async with self._lock:
            await self._pause()
            with self._exchange(unit):
                if coil is not None:
                    rr = await self.client.write_coil(address, coil, device_id=unit)
                elif len(values) == 1:
                    rr = await self.client.write_register(address, values[0], device_id=unit)
                else:
                    rr = await self.client.write_registers(address, list(values), device_id=unit)
            if rr.isError():
                raise from_exception_code(int(getattr(rr, "exception_code", 0)))

    @contextlib.contextmanager
    def _exchange(self, unit: int) -> Iterator[None]:
        """One request and its answer: pymodbus' errors as the driver's, the time noted for
        the pause between frames."""
        try:
            yield
        except ConnectionException as exc:
            raise ConnectionLost(str(exc)) from None
        except ModbusIOException as exc:
            if not self.client.connected:
                raise ConnectionLost(str(exc)) from None
            raise DeviceTimeout(
                f"no answer from unit {unit} within {self.settings.timeout} s"
            ) from None
        except ModbusException as exc:
            raise DeviceTimeout(str(exc)) from None
        finally:
            self._last_io = time.monotonic()

    async def _pause(self) -> None:
        """Honour the pause between frames; fail at once when the link is down."""
        gap = self.settings.frame_gap
        if gap:
            wait = self._last_io + gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if not self.client.connected:
            raise ConnectionLost(f"not connected to {self.settings.endpoint}")

    async def _read(self, table: Table, start: int, count: int, unit: int) -> list[int]:
        await self._pause()
        with self._exchange(unit):
            if table == "holding":
                rr = await self.client.read_holding_registers(start, count=count, device_id=unit)
            else:
                rr = await self.client.read_input_registers(start, count=count, device_id=unit)
        if rr.isError():
            raise from_exception_code(int(getattr(rr, "exception_code", 0)))
        regs = list(rr.registers)
        if len(regs) != count:
            raise DecodeError(f"asked for {count} registers, got {len(regs)}")
        return regs
