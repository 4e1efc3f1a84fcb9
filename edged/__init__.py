"""edged: an edge daemon for energy gateways."""

__version__ = "0.1.0"
