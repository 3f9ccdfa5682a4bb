"""``python -m dsnet`` runs the command line."""

from dsnet.cli import main

main()
