"""`python -m relance.cli`: the same command line as `relance`."""

from relance.cli import app

app()
