"""The protocol drivers shipped with edged: one subpackage per protocol.

Each implements ``edged.api.Driver`` and whichever capabilities of ``edged.api`` it
offers; the registry in ``edged.api`` finds them (and third-party drivers registered
under the entry-point group ``edged.drivers``).
"""
