"""`--set key.path=value` overrides, applied to a loaded document before validation.

Values are read as YAML flow scalars (`32`, `true`, `null`, `[q_proj, v_proj]`, `{bits: 4}`);
`null` removes the key, so its default applies. Problems in an override are located as
`--set:N:COL`, N being the override's position on the command line.
"""

from __future__ import annotations

import re
from typing import Any

from ..schemas.errors import Problem, UsageError
from .load import MAX_DEPTH, MAX_VALUES, Document, Pos, type_name

_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(text: str) -> tuple:
    parts, i = [], 0
    for match in _PART.finditer(text):
        gap = text[i:match.start()]
        if gap not in ("", "."):
            raise ValueError(text)
        parts.append(int(match.group(2)) if match.group(2) is not None else match.group(1))
        i = match.end()
    if not parts or i != len(text) or isinstance(parts[0], int) or text.endswith("."):
        raise ValueError(text)
    return tuple(parts)


def parse_value(text: str) -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if text.strip() == "":
        return ""
    try:
        value = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return text
    except RecursionError:
        raise UsageError(f"--set value nested too deeply: {text[:40]}...") from None
    return value


def _within(value: Any, budget: list, depth: int) -> bool:
    """Whether a parsed value stays within a budget of values and a depth (aliases are counted again)."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        return False
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return all(_within(child, budget, depth + 1) for child in children)


def apply(doc: Document, overrides: list[str]) -> list[Problem]:
    """Apply overrides in order; a malformed one is a usage error, a misplaced one a problem."""
    problems = []
    for n, item in enumerate(overrides, start=1):
        key, sep, raw = item.partition("=")
        try:
            if not sep:
                raise ValueError(key)
            path = parse_path(key.strip())
        except ValueError:
            raise UsageError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set method.rank=32") from None
        value = parse_value(raw)
        if not _within(value, [MAX_VALUES], 0):
            raise UsageError(f"--set {key}=...: the value expands to more than {MAX_VALUES:,} values or nests more "
                             f"than {MAX_DEPTH} levels (YAML aliases?); write it out")
        col = len(key) + 2
        problem = _set(doc.data, path, value)
        if problem:
            problems.append(Problem("--set", n, 1, _dotted(path), problem))
            continue
        doc.positions = {p: pos for p, pos in doc.positions.items() if p[: len(path)] != path}
        _mark(doc, path, value, n, col)
    return problems


def _dotted(path: tuple) -> str:
    """budget.gpus[1], as the recipe's own messages name a key."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" if i else p for i, p in enumerate(path))


def _a(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _no_item(index: int, node: Any) -> str:
    if not isinstance(node, list):
        return f"no list item [{index}] here (this is {_a(type_name(node))}, not a list)"
    return (f"no list item [{index}] here (the list has {len(node)} item{'s' * (len(node) != 1)}; "
            f"[{len(node)}] appends one)")


def _set(data: dict, path: tuple, value: Any):
    node: Any = data
    for i, part in enumerate(path[:-1]):
        nxt = path[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return _no_item(part, node)
            if not isinstance(node[part], (dict, list)):
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
            continue
        if not isinstance(node, dict):
            return f"'{part}' cannot be set inside {_a(type_name(node))}"
        child = node.get(part)
        if not isinstance(child, (dict, list)):
            if child is not None:
                return f"'{part}' is {_a(type_name(child))}, not a section"
            node[part] = [] if isinstance(nxt, int) else {}
        node = node[part]
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last > len(node):
            return _no_item(last, node)
        if value is None:
            if last < len(node):
                node.pop(last)
        elif last == len(node):
            node.append(value)
        else:
            node[last] = value
        return None
    if not isinstance(node, dict):
        return f"'{last}' cannot be set inside {_a(type_name(node))}"
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return None


def _mark(doc: Document, path: tuple, value: Any, n: int, col: int) -> None:
    """Every path the override wrote now points at the override itself."""
    for depth in range(1, len(path)):
        doc.positions.setdefault(path[:depth], Pos(n, 1, n, 1, "--set"))
    doc.positions[path] = Pos(n, 1, n, col, "--set")

    def walk(node: Any, prefix: tuple) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            doc.positions[prefix + (key,)] = Pos(n, col, n, col, "--set")
            walk(child, prefix + (key,))

    walk(value, path)
