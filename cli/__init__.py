"""The `recipe` command line (recipe_ft.cli): the typer app and its commands are in commands.py."""

from .commands import app, main, run

__all__ = ["app", "main", "run"]
