"""`python -m doodle` runs the CLI."""

from doodle.cli import app

app()
