"""Modbus TCP and RTU: the polling driver, register codec, meter profiles and the simulator."""
