"""``python -m braincls`` runs the command-line interface."""

from braincls.cli import main

main()
