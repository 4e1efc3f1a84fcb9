"""Shipped M-Bus device profiles (TOML data files); a package so the files ship in wheels."""
