"""The local web console: one aiohttp server for the pages, the REST API and ``/metrics``.

``settings`` (the ``[web]`` section) is imported by the config loader and stays free of
aiohttp; ``server`` builds the application from a ``Backend`` the daemon hands over.
"""
