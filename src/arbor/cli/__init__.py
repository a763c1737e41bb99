"""``arbor`` command line: one module per command group."""
