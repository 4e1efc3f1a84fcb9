"""Device-capacity and maintenance licences."""
