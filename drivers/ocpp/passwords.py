"""Charger passwords (OCPP security profiles 1 and 2): the core's salted scrypt hashes."""

from edged.passwords import hash_password, is_password_hash, verify_password

__all__ = ["hash_password", "is_password_hash", "verify_password"]
