"""Validate a loaded recipe: every problem at once, each located at file:line:col."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

from pydantic import ValidationError

from ..schemas.recipe import Recipe
from .checks import semantic_problems
from ..schemas.errors import Problem
from .load import Document, type_name
from .suggest import did_you_mean, literal_choices, model_at


@dataclass
class Result:
    recipe: Optional[Recipe]
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return self.recipe is not None and not self.errors


def validate(doc: Document, base_dir=None) -> Result:
    """Schema errors and semantic checks (catalog names, data files, templates) together."""
    problems: list[Problem] = []
    recipe = None
    try:
        recipe = Recipe.model_validate(doc.data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        for err in errors:
            problems += _problems(err, doc)
        problems += _hidden_rules(doc, errors)
    problems += semantic_problems(doc, base_dir)
    problems = _dedupe(problems)
    problems.sort(key=problem_order)
    if any(p.severity == "error" for p in problems):
        recipe = None
    return Result(recipe, problems)


def problem_order(p: Problem) -> tuple:
    """The recipe file's problems in reading order, then those of --set overrides."""
    return (p.file == "--set", p.file, p.line, p.col, p.key)


def _hidden_rules(doc: Document, errors: list[dict]) -> list[Problem]:
    """Cross-field rules of sections that had field errors, which pydantic then skips.

    Drop the offending keys (so their defaults apply), validate again, keep the rule violations.
    """
    data = copy.deepcopy(doc.data)
    dropped = set()
    for err in errors:
        _drop(data, tuple(err["loc"]))
        dropped.add(dotted(tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("@")))))
    try:
        Recipe.model_validate(data)
    except ValidationError as exc:  # a key that has its own error is not blamed again for being absent
        return [p for err in exc.errors(include_url=False) if err["type"] == "cross_field"
                for p in _problems(err, doc) if p.key not in dropped]
    return []


def _drop(data: Any, loc: tuple) -> None:
    node = data
    for part in loc[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict) and loc and loc[-1] in node:
        del node[loc[-1]]


def dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def located(doc: Document, path: tuple, message: str, value: bool = False,
            severity: str = "error") -> Problem:
    file, line, col = doc.where(path, value=value)
    return Problem(file, line, col, dotted(path), message, severity)


def _problems(err: dict, doc: Document) -> list[Problem]:
    kind, given = err["type"], err.get("input")
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("@")))  # union tags (recipe.Sources)
    ctx = err.get("ctx") or {}
    if kind == "cross_field":
        return [located(doc, loc + tuple(key.split(".")), message) for key, message in ctx["problems"]]
    if kind == "extra_forbidden":
        parent = model_at(Recipe, loc[:-1])
        allowed = list(parent.model_fields) if parent else []
        hint = did_you_mean(loc[-1], allowed) or (f"; allowed keys here: {', '.join(allowed)}" if allowed else "")
        return [located(doc, loc, f"unknown key '{loc[-1]}'{hint}")]
    if kind == "missing":
        return [located(doc, loc, "required key is missing")]
    if kind == "literal_error":
        choices = literal_choices(Recipe, loc) or _expected(ctx)
        hint = did_you_mean(given, choices)
        what = f"unknown value {short(given)}" if isinstance(given, str) else f"got {type_name(given)} {short(given)}"
        return [located(doc, loc, f"{what}; expected one of: {', '.join(choices)}{hint}", value=True)]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [located(doc, loc, f"expected a mapping of keys, got {type_name(given)} {short(given)}", value=True)]
    if kind == "list_type":
        return [located(doc, loc, f"expected a list, got {type_name(given)} {short(given)}", value=True)]
    if kind == "string_pattern_mismatch" and loc == ("name",):
        return [located(doc, loc, f"{short(given)} is not a valid name: use letters, digits, '.', '_' "
                                  f"and '-', starting with a letter or digit", value=True)]
    if kind == "string_pattern_mismatch" and loc[-1:] == ("hub",):
        return [located(doc, loc, f"{short(given)} is not a hub dataset name; expected org/name", value=True)]
    if kind == "targets":
        return [located(doc, loc, err["msg"] + did_you_mean(given, ctx.get("choices", [])), value=True)]
    if kind in ("auto_or_int", "auto_or_bool"):
        return [located(doc, loc, err["msg"] + did_you_mean(given, ["auto"]), value=True)]
    message = err["msg"]
    if message.startswith("Input should"):
        message = "should" + message[len("Input should"):]
    elif message[:1].isupper() and not message[:2].isupper():
        message = message[0].lower() + message[1:]
    if not isinstance(given, (dict, list)):
        message += f", got {type_name(given)} {short(given)}"
    return [located(doc, loc, message, value=True)]


def _expected(ctx: dict) -> list[str]:
    text = str(ctx.get("expected", ""))
    return [part.strip(" '") for part in text.replace(" or ", ",").split(",") if part.strip(" '")]


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen, out = set(), []
    for p in problems:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out
