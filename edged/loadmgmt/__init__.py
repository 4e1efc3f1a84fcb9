"""Dynamic load management for OCPP chargers: circuits, fair sharing, fail-safe.

``config`` parses ``[[circuits]]`` and ``[load_management]``; ``allocate`` shares the
available current (pure); ``controller`` reads live values and device states, decides and
sends charging limits through the typed commands of ``edged.api``; ``view`` renders the
status section.
"""
