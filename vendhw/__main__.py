"""``python -m vendhw`` runs the command line."""

from vendhw.cli import main

main()
