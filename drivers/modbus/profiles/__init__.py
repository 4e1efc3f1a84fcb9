"""Shipped Modbus meter profiles (TOML data files); a package so the files ship in wheels."""
