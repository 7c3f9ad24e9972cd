"""``python -m sovereign`` runs the CLI."""

from sovereign.cli.main import main

main()
