"""Load -> override -> validate, as one call each for the CLI."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from ..schemas.errors import Problem, RecipeError, UsageError
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
    elif result.ok:  # mistakes only the model's architecture reveals (a target module it lacks, ...)
        from .planner import resolve_model

        try:
            resolve_model(result.recipe, Path(path), doc)
        except RecipeError as exc:
            found = exc.problems or [Problem(path, 1, 1, "", exc.message)]
            result = Result(None, sorted(result.problems + found, key=problem_order))
    return result


def compile_file(path: str, overrides: list[str] = ()):
    """Validate, then compile to a plan; RecipeError (located where possible) on user errors."""
    from .planner import compile_plan

    doc, misplaced = load(path, overrides)
    result = validate(doc, base_dir=Path(path).resolve().parent)
    problems = sorted(misplaced + result.problems, key=problem_order)
    if misplaced or not result.ok:
        raise RecipeError(f"{path}: invalid recipe", problems)
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    return compile_plan(result.recipe, Path(path), doc, tuple(overrides))


def plan_for_run(target: str, overrides: list[str], replan: Optional[bool] = None):
    """The plan `recipe run` executes: compiled from a recipe, or a lock file that is still fresh.
    Returns (plan, the directory its relative paths are relative to). `replan`: the command's --replan
    (None: the command has no such flag, and a stale plan's message does not offer it)."""
    from . import lock

    if target.endswith(".json"):
        plan = lock.read(Path(target))
        reasons = lock.staleness(plan)
        if lock.edited(Path(target)):  # the compiler decides: a plan changed by hand is not run as it is
            reasons.insert(0, "it was edited after `recipe plan` wrote it (change the recipe, or --set, and re-plan "
                              "instead: a plan's memory, time and cost hold only for what the compiler decided)")
        if reasons and not replan:
            raise RecipeError(f"{target} is stale: " + "; ".join(reasons) +
                              ". Re-plan with `recipe plan RECIPE -o PLAN`, or " +
                              ("pass --replan" if replan is not None else "give the recipe instead of the plan"))
        if not reasons and not overrides:
            return plan, Path(plan.lock.recipe_path).resolve().parent
        target, overrides = plan.lock.recipe_path, list(plan.lock.overrides) + list(overrides)
    compiled = compile_file(target, overrides)
    if compiled.exit_code:
        raise RecipeError(f"{target}: nothing fits the budget; `recipe plan {target}` says what would")
    return compiled.plan, Path(target).resolve().parent
