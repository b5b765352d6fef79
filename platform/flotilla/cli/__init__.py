"""The ``flotilla`` command: typer + rich, thin over the Python API (one module per command group)."""

from flotilla.cli.commands import app, main, parse_sets

__all__ = ["app", "main", "parse_sets"]
