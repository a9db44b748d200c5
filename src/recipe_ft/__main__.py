"""`python -m recipe_ft ...` runs the `recipe` command."""

from .cli import main

main()
