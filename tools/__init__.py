"""Vendor and developer tools that run from a source checkout; not part of the edged package."""
