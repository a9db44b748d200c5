"""Load a YAML or TOML recipe into plain data plus the position of every key and value."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..schemas.errors import Problem, RecipeError, UsageError
from .records import BOM, UTF16, UTF16_BOMS
from .toml_positions import toml_positions

Path_ = tuple  # a key path: ("method", "rank") or ("budget", "gpus", 1)

SUFFIXES = (".yaml", ".yml", ".toml")
MAX_BYTES = 1 << 20  # a recipe is a page or two; a megabyte is not a recipe
MAX_DEPTH = 64  # nesting of mappings and lists
MAX_VALUES = 100_000  # keys and values after YAML aliases are expanded (an alias bomb has billions)


@dataclass(frozen=True)
class Pos:
    """1-based positions of a key and of its value, and the file they are in."""

    line: int
    col: int
    vline: int
    vcol: int
    file: str


@dataclass
class Document:
    file: str  # the path as the user gave it, used in messages
    data: dict
    positions: dict[Path_, Pos] = field(default_factory=dict)
    text: str = ""

    def where(self, path: Path_, value: bool = False) -> tuple[str, int, int]:
        """The closest known position of `path`: its value's, or its key's."""
        p = tuple(path)
        while p:
            pos = self.positions.get(p)
            if pos is not None:
                return (pos.file, pos.vline, pos.vcol) if value else (pos.file, pos.line, pos.col)
            p = p[:-1]
            value = False  # for an ancestor, point at its key
        return (self.file, 1, 1)


def read(path: Path, display: str | None = None) -> Document:
    """Read a recipe file. Syntax errors raise RecipeError with located problems."""
    display = display or str(path)
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"{display}: not a recipe file (expected .yaml, .yml or .toml)")
    if path.exists() and not path.is_file() and not path.is_dir():  # a named pipe or a device: it may never end
        raise UsageError(f"{display}: not a regular file; give a recipe file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{display}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{display}: is a directory") from None
    except OSError as exc:
        raise UsageError(f"{display}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise RecipeError("invalid recipe", [Problem(display, 1, 1, "", f"the file is {len(raw):,} bytes; a recipe "
                                                                      f"is at most {MAX_BYTES:,} (put data in data files)")])
    raw = raw.removeprefix(BOM)  # a UTF-8 byte-order mark (Windows editors): not part of the text
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        message = (UTF16 if raw.startswith(UTF16_BOMS) else
                   f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x}): save it as UTF-8")
        raise RecipeError("invalid recipe", [Problem(display, line, col, "", message)]) from None
    deep = too_deep(text)
    if deep:
        raise RecipeError("invalid recipe", [Problem(display, deep[0], deep[1], "", f"nested more than {MAX_DEPTH} "
                                                                                  f"levels deep; a recipe is not")])
    try:
        if path.suffix.lower() == ".toml":
            return loads_toml(text, display)
        return loads_yaml(text, display)
    except RecursionError:
        raise RecipeError("invalid recipe", [Problem(display, 1, 1, "", f"nested too deeply to read (a recipe "
                                                                      f"nests at most {MAX_DEPTH} levels)")]) from None


def too_deep(text: str) -> tuple[int, int] | None:
    """(line, col) where brackets nest deeper than MAX_DEPTH, outside strings and comments; a quick
    scan before a parser recurses into them."""
    depth, quote, line, col, escaped, comment = 0, "", 1, 0, False, False
    previous = "\n"
    for ch in text:
        col += 1
        if ch == "\n":
            line, col, comment, escaped = line + 1, 0, False, False
            if quote == "'":  # single-quoted scalars rarely span lines; do not let one odd quote hide the rest
                quote = ""
        elif comment:
            pass
        elif quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and previous in " \t\n":
            comment = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line, col
        elif ch in "]}":
            depth = max(0, depth - 1)
        previous = ch
    return None


def _not_a_mapping(file: str, data: Any) -> RecipeError:
    what = "empty" if data is None else f"a {type_name(data)}"
    return RecipeError("invalid recipe", [Problem(
        file, 1, 1, "", f"a recipe is a mapping of keys (task, model, data, ...); this document is {what}")])


# --- YAML ---------------------------------------------------------------------------------------

def loads_yaml(text: str, file: str) -> Document:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    try:
        node = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and "quoted scalar" in (exc.context or "") and "end of stream" in (exc.problem or ""):
            mark = exc.context_mark  # where the string opens, not the end of the file
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = _yaml_message(exc)
        raise RecipeError("invalid recipe", [Problem(file, line, col, "", message)]) from None
    except YAMLError as exc:  # errors without a mark
        raise RecipeError("invalid recipe", [Problem(file, 1, 1, "", f"YAML error: {exc}")]) from None
    doc = Document(file=file, data={}, text=text)
    budget = [MAX_VALUES]
    if not _is_map(node):
        raise _not_a_mapping(file, _plain(node, (), doc, budget))
    doc.data = _plain(node, (), doc, budget)
    return doc


def _too_big(doc: Document, path: Path_) -> RecipeError:
    file, line, col = doc.where(path)
    return RecipeError("invalid recipe", [Problem(
        file, line, col, "", f"the document expands to more than {MAX_VALUES:,} values (YAML aliases `*name` "
                             f"repeat anchored `&name` content; nested ones multiply): write the values out")])


def _yaml_message(exc) -> str:
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    if "quoted scalar" in context and "end of stream" in problem:
        return "YAML syntax error: the quoted string that starts here is never closed; add the closing quote"
    if "found character '\\t'" in problem or "found character '\t'" in problem:
        return "YAML syntax error: a tab character; YAML indents with spaces only: replace the tab with spaces"
    if problem == "mapping values are not allowed here" and not context:
        return (f"YAML syntax error: {problem} (check the indentation of this line and the one above; a value "
                f"that holds \": \" needs quotes)")
    if "found duplicate key" in problem or "duplicate key" in context:
        key = re.search(r'duplicate key "?([^"]*)"?', problem + " " + context)
        name = key.group(1) if key else ""
        return f"YAML syntax error: duplicate key '{name}'".replace(" ''", "")
    if problem and context:
        return f"YAML syntax error: {problem} ({context})"
    return f"YAML syntax error: {problem or context or 'malformed document'}"


def _is_map(node: Any) -> bool:
    from ruamel.yaml.comments import CommentedMap

    return isinstance(node, CommentedMap)


def _plain(node: Any, path: Path_, doc: Document, budget: list) -> Any:
    """Convert ruamel's round-trip nodes to plain Python, recording positions; aliases are expanded
    within a budget of values and a depth."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    budget[0] -= 1
    if budget[0] < 0:
        raise _too_big(doc, path)
    if len(path) > MAX_DEPTH:
        file, line, col = doc.where(path)
        raise RecipeError("invalid recipe", [Problem(file, line, col, "", f"nested more than {MAX_DEPTH} levels "
                                                                          f"deep; a recipe is not")])
    if isinstance(node, CommentedMap):
        out = {}
        for key in node:
            name = key if isinstance(key, str) else _key_text(key)
            kl, kc, vl, vc = _key_position(node, key)
            doc.positions[path + (name,)] = Pos(kl + 1, kc + 1, vl + 1, vc + 1, doc.file)
            out[name] = _plain(node[key], path + (name,), doc, budget)
        return out
    if isinstance(node, CommentedSeq):
        out = []
        for i, item in enumerate(node):
            il, ic = node.lc.item(i)
            doc.positions[path + (i,)] = Pos(il + 1, ic + 1, il + 1, ic + 1, doc.file)
            out.append(_plain(item, path + (i,), doc, budget))
        return out
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    from ruamel.yaml.comments import TaggedScalar

    if isinstance(node, TaggedScalar):  # `!custom 16`: no tag means anything in a recipe; the schema reports it
        tag = str(node.tag.value if hasattr(node.tag, "value") else node.tag)
        return Tagged(tag.replace("tag:yaml.org,2002:", "!!"), node.value)
    return node  # dates and other YAML types: the schema reports them


@dataclass(frozen=True)
class Tagged:
    """A YAML scalar with a tag (`!custom 16`), as messages show it."""

    tag: str
    value: Any

    def __repr__(self) -> str:
        return f"{self.tag} {self.value!r}"


def _key_position(node: Any, key: Any) -> tuple[int, int, int, int]:
    """0-based line and column of a mapping key and its value; a key merged in by `<<: *anchor` is where
    the anchored mapping writes it."""
    from ruamel.yaml.comments import merge_attrib

    if key in node.lc.data:
        return (*node.lc.key(key), *node.lc.value(key))
    for merged in getattr(node, merge_attrib, None) or ():
        merged = merged[1] if isinstance(merged, tuple) else merged  # older ruamel: (index, mapping) pairs
        if key in merged and hasattr(merged, "lc"):
            return _key_position(merged, key)
    return node.lc.line, node.lc.col, node.lc.line, node.lc.col


def _key_text(key: Any) -> str:
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


# --- TOML ---------------------------------------------------------------------------------------

_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def loads_toml(text: str, file: str) -> Document:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc.args[0]) if exc.args else str(exc)
        line = getattr(exc, "lineno", None)
        col = getattr(exc, "colno", None)
        found = _TOML_AT.search(message)
        if found:
            line, col = line or int(found.group(1)), col or int(found.group(2))
            message = message[: found.start()]
        elif line is None:
            line, col = _end_of(text)
        message = _TOML_HINTS.get(message, message)
        twice = _TOML_TWICE.fullmatch(message)
        if twice:  # tomllib names the table as a Python tuple: ('model',)
            name = ".".join(re.findall(r"'((?:[^'\\]|\\.)*)'", twice.group(1))) or twice.group(1)
            message = f"table [{name}] is declared twice; merge the two into one"
            header = text.split("\n")[line - 1] if line and line <= text.count("\n") + 1 else ""
            col = header.find("[") + 1 or col
        raise RecipeError("invalid recipe", [Problem(
            file, line, col or 1, "", f"TOML syntax error: {message}")]) from None
    doc = Document(file=file, data=data, text=text)
    for key_path, (kl, kc, vl, vc) in toml_positions(text).items():
        doc.positions[key_path] = Pos(kl, kc, vl, vc, file)
    return doc


_TOML_TWICE = re.compile(r"Cannot declare (\(.*\)) twice")
_TOML_HINTS = {
    "Illegal character '\\n'": "a string is not closed on its line: add the closing quote",
    "Cannot overwrite a value": "a key or table is defined twice",
    "Invalid value": "invalid or missing value after '='",
}


def _end_of(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


def type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "integer", float: "number",
            bool: "boolean", type(None): "null", Tagged: "YAML-tagged value"}.get(type(value), type(value).__name__)
