"""OCPP 1.6J and 2.0.1: a local central system for EV chargers, and a charger simulator."""
