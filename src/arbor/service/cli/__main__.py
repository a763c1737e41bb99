"""``python -m arbor.service.cli`` runs the ``arbor`` command."""

from arbor.service.cli.main import main

main()
