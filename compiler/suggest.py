"""'Did you mean' for keys, enum values and catalog names."""

from __future__ import annotations

import typing
from typing import Any, Iterable, Optional

from pydantic import BaseModel


def close(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    import difflib  # only when something is misspelt

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
            current = _list_item(current)
            continue
        found = _model_of(current)
        if found is None:
            return None
        field = found.model_fields.get(part)
        if field is None:
            return None
        current = field.annotation
    return _model_of(current)


def _model_of(tp: Any) -> Optional[type[BaseModel]]:
    """The model a type holds: itself, or the model member of an Optional / Annotated / union."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _model_of(typing.get_args(tp)[0])
    if origin is typing.Union or str(origin) == "types.UnionType":
        for arg in typing.get_args(tp):
            if typing.get_origin(arg) is not list and (found := _model_of(arg)) is not None:
                return found
    return None


def _list_item(tp: Any) -> Any:
    """The item type of a list (or of the list member of a union)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _list_item(typing.get_args(tp)[0])
    if origin is list:
        return typing.get_args(tp)[0]
    if origin is typing.Union or str(origin) == "types.UnionType":
        for arg in typing.get_args(tp):
            if (item := _list_item(arg)) is not None:
                return item
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
