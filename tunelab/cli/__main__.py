"""`python -m tunelab.cli` = `tunelab`."""

from tunelab.cli import main

main()
