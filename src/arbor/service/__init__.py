"""The service layer: the HTTP API (``app``, ``routes``, ``arbor serve``), the dashboard and
the ``arbor`` command line."""
