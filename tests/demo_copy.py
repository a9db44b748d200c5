"""A fresh copy of a demo project for one test: its files, none of its runs."""

import shutil
from pathlib import Path


def fresh_copy(recipe: Path, dst: Path) -> Path:
    """Copy the folder holding `recipe` to `dst`, leaving out its runs/; returns the copy's recipe."""
    shutil.copytree(recipe.parent, dst, ignore=shutil.ignore_patterns("runs"))
    return dst / recipe.name
