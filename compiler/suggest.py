"""'Did you mean' for keys, enum values and catalog names."""

from __future__ import annotations

import difflib
import typing
from typing import Any, Iterable, Optional

from pydantic import BaseModel


def close(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    choices = list(choices)
    by_lower = {c.lower(): c for c in choices}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=cutoff)
    return [by_lower[f] for f in found]


def did_you_mean(word: Any, choices: Iterable[str]) -> str:
    if not isinstance(word, str):
        return ""
    found = close(word, choices, n=1)
    return f"; did you mean '{found[0]}'?" if found else ""


def model_at(model: type[BaseModel], path: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class found at a key path (list indices allowed), if any."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            current = _inner(current, list)
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _unwrap(field.annotation)
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """Strip Optional / Annotated to reach a model or a list of models."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
        lists = [a for a in args if typing.get_origin(_unwrap(a)) is list]
        return _unwrap(lists[0]) if lists else tp
    return tp


def _inner(tp: Any, container: type) -> Any:
    tp = _unwrap(tp)
    if typing.get_origin(tp) is container:
        return _unwrap(typing.get_args(tp)[0])
    return None


def literal_choices(model: type[BaseModel], path: tuple) -> list[str]:
    """The allowed values of a Literal-typed field, as strings."""
    parent = model_at(model, path[:-1])
    if parent is None or not isinstance(path[-1], str):
        return []
    field = parent.model_fields.get(path[-1])
    if field is None:
        return []
    return [str(v) for v in _literals(field.annotation)]


def _literals(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return list(typing.get_args(tp))
    if origin in (typing.Union, typing.Annotated, list) or str(origin) == "types.UnionType":
        out = []
        for arg in typing.get_args(tp):
            out += _literals(arg)
        return out
    return []
