"""The `recipe` command line (recipe_ft.cli): the commands are in commands.py, their arguments in parser.py."""

from .commands import main, run

__all__ = ["main", "run"]
