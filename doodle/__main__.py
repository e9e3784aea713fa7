"""`python -m doodle` runs the CLI."""

from doodle.cli import app

if __name__ == "__main__":  # not when a worker process re-imports the main module
    app()
