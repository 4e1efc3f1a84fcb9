"""Wired M-Bus (EN 13757-2/-3): link-layer frames, telegram decoding, master, simulator, driver."""
