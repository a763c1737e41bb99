"""``python -m arbor.cli`` runs the ``arbor`` command."""

from arbor.cli.main import main

main()
