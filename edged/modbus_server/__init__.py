"""The Modbus TCP server: every metering point's live values for local controllers.

- ``sunspec``: the SunSpec layout (marker, common model 1, meter models 201/203/211/213,
  end model) and its encoding with scale factors; pure.
- ``plainmap``: the plain float32 map generated from the canonical quantities; pure.
- ``config``: the ``[modbus_server]`` section.
- ``server``: the pymodbus TCP server bound to the live values, with an allow-list and a
  bound on connections.

It reads live values and device states only (handed in by ``edged.app``), never a driver.
"""
