"""Errors of the OCPP driver's command API."""

from __future__ import annotations

from edged.errors import ConnectionLost, DeviceTimeout, DriverError


class UnknownCharger(DriverError):
    """The device id is not a charger of this OCPP connection."""


class ChargerNotConnected(ConnectionLost):
    """The charger is configured but has no open WebSocket."""


class CommandTimeout(DeviceTimeout):
    """The charger did not answer a command in time."""


class CommandError(DriverError):
    """A command was malformed or the charger refused it with a CALLERROR."""
