"""Positions of keys and values in a TOML document that tomllib has already parsed.

tomllib gives values without positions, so this scanner walks the text once more and records, for
each key path, (key line, key col, value line, value col), all 1-based. It only needs to cope with
valid TOML; on anything it does not follow it stops and returns what it has.
"""

from __future__ import annotations

import bisect
import json

BARE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


class _Stop(Exception):
    pass


class _Scanner:
    def __init__(self, text: str):
        self.s = text
        self.i = 0
        self.starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
        self.out: dict[tuple, tuple[int, int, int, int]] = {}
        self.aot: dict[tuple, int] = {}  # array-of-tables path -> current index

    def at(self, i: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.starts, i)
        return line, i - self.starts[line - 1] + 1

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def skip_ws(self, newlines: bool = False) -> None:
        while self.i < len(self.s):
            c = self.s[self.i]
            if c in " \t\r" or (newlines and c == "\n"):
                self.i += 1
            elif c == "#":
                while self.i < len(self.s) and self.s[self.i] != "\n":
                    self.i += 1
            else:
                return

    def record(self, path: tuple, key_i: int, value_i: int | None = None) -> None:
        if path not in self.out:
            kl, kc = self.at(key_i)
            vl, vc = self.at(value_i if value_i is not None else key_i)
            self.out[path] = (kl, kc, vl, vc)

    # keys
    def key(self) -> list[tuple[str, int]]:
        parts = []
        while True:
            self.skip_ws()
            start = self.i
            c = self.peek()
            if c == '"':
                end = self.string_end()
                parts.append((json.loads(self.s[start:end]), start))
            elif c == "'":
                end = self.string_end()
                parts.append((self.s[start + 1:end - 1], start))
            else:
                while self.peek() and self.peek() in BARE:
                    self.i += 1
                if self.i == start:
                    raise _Stop
                parts.append((self.s[start:self.i], start))
            self.skip_ws()
            if self.peek() != ".":
                return parts
            self.i += 1

    def resolve(self, base: tuple, parts: list[tuple[str, int]]) -> list[tuple[tuple, int]]:
        """Full paths of each dotted part, inserting current array-of-tables indices."""
        paths, path = [], base
        for name, start in parts:
            path = path + (name,)
            paths.append((path, start))
            if path in self.aot:
                path = path + (self.aot[path],)
        return paths

    # values
    def string_end(self) -> int:
        s, i = self.s, self.i
        quote = s[i]
        if s.startswith(quote * 3, i):
            j = i + 3
            while True:
                j = s.index(quote * 3, j)
                if quote == '"' and _escaped(s, j):
                    j += 1
                    continue
                while s.startswith(quote, j + 3):  # up to two quotes may close the content
                    j += 1
                self.i = j + 3
                return self.i
        j = i + 1
        while True:
            c = s[j]
            if c == "\\" and quote == '"':
                j += 2
                continue
            if c == quote:
                self.i = j + 1
                return self.i
            if c == "\n":
                raise _Stop
            j += 1

    def value(self, path: tuple) -> None:
        c = self.peek()
        if c in "\"'":
            self.string_end()
        elif c == "[":
            self.i += 1
            index = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "]":
                    self.i += 1
                    return
                start = self.i
                self.record(path + (index,), start)
                self.value(path + (index,))
                index += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        elif c == "{":
            self.i += 1
            while True:
                self.skip_ws(newlines=True)
                if self.peek() == "}":
                    self.i += 1
                    return
                self.pair(path)
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        else:
            while self.peek() and self.peek() not in ",]}\n#":
                self.i += 1
            if self.peek() == "" and c == "":
                raise _Stop

    def pair(self, base: tuple) -> None:
        paths = self.resolve(base, self.key())
        self.skip_ws()
        if self.peek() != "=":
            raise _Stop
        self.i += 1
        self.skip_ws()
        value_i = self.i
        for path, start in paths[:-1]:
            self.record(path, start)
        self.record(paths[-1][0], paths[-1][1], value_i)
        self.value(paths[-1][0])

    def document(self) -> None:
        base: tuple = ()
        while True:
            self.skip_ws(newlines=True)
            if self.i >= len(self.s):
                return
            if self.peek() == "[":
                array = self.peek(1) == "["
                self.i += 2 if array else 1
                paths = self.resolve((), self.key())
                path, start = paths[-1]
                for p, st in paths[:-1]:
                    self.record(p, st)
                if array:
                    index = self.aot.get(path, -1) + 1
                    self.aot[path] = index
                    self.record(path, start)
                    self.record(path + (index,), start)
                    base = path + (index,)
                else:
                    self.record(path, start)
                    base = path
                self.skip_ws()
                self.i += 2 if array else 1
            else:
                self.pair(base)


def _escaped(s: str, j: int) -> bool:
    backslashes = 0
    while j - 1 - backslashes >= 0 and s[j - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


def toml_positions(text: str) -> dict[tuple, tuple[int, int, int, int]]:
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (_Stop, ValueError, IndexError):
        pass
    return scanner.out
