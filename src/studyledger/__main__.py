"""``python -m studyledger`` runs the command line."""

from .cli import main

main()
