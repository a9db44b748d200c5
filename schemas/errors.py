"""Errors the user can act on. The CLI prints them without a traceback."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One located problem in a recipe: `file:line:col: key.path: message`."""

    file: str
    line: int
    col: int
    key: str
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        label = "warning: " if self.severity == "warning" else ""
        if self.key:
            return f"{where}: {self.key}: {label}{self.message}"
        return f"{where}: {label}{self.message}"


class RecipeError(Exception):
    """A user error with a clear message; `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, problems: list[Problem] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = list(problems or [])


class UsageError(RecipeError):
    """Bad command-line usage (a flag, a path that does not exist)."""

    exit_code = 2


class ModelNotFound(RecipeError):
    """`model.base` is neither a catalog name nor a directory holding config.json."""


class UnsupportedArchitecture(RecipeError):
    """A config.json whose family or fields the compiler cannot model."""
