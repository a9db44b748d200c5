"""Load -> override -> validate, as one call each for the CLI."""

from __future__ import annotations

from pathlib import Path

from ..schemas.recipe import Recipe
from .errors import Problem, RecipeError, UsageError
from .load import Document, read
from .overrides import apply
from .validate import Result, problem_order, validate


def load(path: str, overrides: list[str] = ()) -> tuple[Document, list[Problem]]:
    """Read a recipe and apply overrides; also returns the overrides that could not be applied."""
    doc = read(Path(path), display=path)
    return doc, apply(doc, list(overrides))


def check_file(path: str, overrides: list[str] = ()) -> Result:
    """Validate one file; every user error becomes a located problem."""
    try:
        doc, misplaced = load(path, overrides)
    except UsageError:
        raise
    except RecipeError as exc:
        return Result(None, exc.problems or [Problem(path, 1, 1, "", exc.message)])
    result = validate(doc, base_dir=Path(path).resolve().parent)
    if misplaced:
        result = Result(None, sorted(misplaced + result.problems, key=problem_order))
    return result


def load_recipe(path: str, overrides: list[str] = ()) -> tuple[Recipe, Result]:
    """A valid recipe, or RecipeError carrying every problem."""
    result = check_file(path, overrides)
    if not result.ok:
        raise RecipeError(f"{path}: invalid recipe", result.problems)
    return result.recipe, result
