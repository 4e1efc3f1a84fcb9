"""The vendor's licence tooling: ``python -m tools.licensing`` (see ``docs/licensing.md``)."""
