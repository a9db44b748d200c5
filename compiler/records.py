"""The one reader of data files, shared by `recipe validate`, `recipe plan` and `recipe run`.

It yields every record with its line (JSONL, CSV), its index (JSON array) or its row (Parquet), or
the reason the record cannot be read: invalid JSON, a byte that is not UTF-8 (located by line and
column; `data.on_error: skip` leaves the line out). Problems with the whole file (a directory, an
unreadable or empty file, a file that is not the Parquet or JSON it claims to be) raise RecipeError
everywhere, so no command plans or runs on nothing.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterator, Optional

from ..schemas.errors import RecipeError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
MAX_LISTED = 20
BOM = b"\xef\xbb\xbf"  # a UTF-8 byte-order mark (Excel's "CSV UTF-8", Windows editors): not part of the data


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
UTF16 = "the file is UTF-16 (it starts with a UTF-16 byte-order mark): save it as UTF-8"


def _utf8(raw: bytes) -> tuple[Optional[str], Optional[str]]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        if exc.start == 0 and raw.startswith(UTF16_BOMS):
            return None, UTF16
        return None, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"


def check_file(path: Path, display: str) -> None:
    """File-level problems, before any record is read."""
    if path.is_dir():
        raise RecipeError(f"{display}: is a directory, not a data file (point data.train / data.eval at a "
                          f"{', '.join(SUFFIXES)} file)")
    if not path.exists():
        raise RecipeError(f"{display}: no such data file")
    if not path.is_file():
        raise RecipeError(f"{display}: not a regular file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RecipeError(f"{display}: unsupported data file type '{suffix}' (use .jsonl, .json, .csv or .parquet)")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise RecipeError(f"{display}: cannot read it ({exc.strerror})") from None
    if not head:
        raise RecipeError(f"{display}: the file is empty (no records)")
    if suffix == ".parquet" and head != b"PAR1":
        raise RecipeError(f"{display}: not a Parquet file (it does not start with PAR1); save it as Parquet "
                          f"or give it the suffix of its real format")


def raw(path: Path, display: str) -> Iterator[tuple[int, Any, Optional[str]]]:
    """(line or row number, record or None, why it cannot be read or None) for every record."""
    check_file(path, display)
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            yield from _jsonl(path)
        elif suffix == ".json":
            yield from _json(path)
        elif suffix == ".csv":
            yield from _csv(path)
        else:
            yield from _parquet(path, display)
    except OSError as exc:
        raise RecipeError(f"{display}: cannot read it ({exc.strerror})") from None


def blank(line: bytes) -> bool:
    """A line that holds no record (ASCII whitespace only): skipped by the reader, not counted."""
    return not line.strip()


def jsonl_line(line: bytes) -> tuple[Any, Optional[str]]:
    """One JSONL line (not blank) as (record, None) or (None, why it cannot be read)."""
    text, error = _utf8(line.removeprefix(BOM))  # only a file's first line can start with one
    if error:
        return None, error
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON ({exc.msg} at column {exc.colno})"
    except RecursionError:
        return None, "invalid JSON (nested too deeply)"


def _jsonl(path: Path):
    with path.open("rb") as f:
        for lineno, line in enumerate(f, start=1):
            if blank(line):
                continue
            row, error = jsonl_line(line)
            yield lineno, row, error


def _json(path: Path):
    data = path.read_bytes().removeprefix(BOM)
    text, error = _utf8(data)
    if error:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            yield line, None, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column})"
        return
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _json_lines(text):
            yield 1, None, ("holds JSON Lines (one record per line), not a JSON array of records: rename it "
                            f"{path.stem}.jsonl")
            return
        yield exc.lineno, None, f"invalid JSON ({exc.msg})"
        return
    except RecursionError:
        yield 1, None, "invalid JSON (nested too deeply)"
        return
    if not isinstance(records, list):
        yield 1, None, "expected a JSON array of records"
        return
    for i, row in enumerate(records, start=1):
        yield i, row, None


def _json_lines(text: str) -> bool:
    """Whether a .json file's text is JSON Lines: its first line a whole JSON object."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except (json.JSONDecodeError, RecursionError):
        return False


def _csv(path: Path):
    numbers: list[int] = []
    bad: list[tuple[int, str]] = []

    def lines():
        with path.open("rb") as f:
            for lineno, line in enumerate(f, start=1):
                text, error = _utf8(line.removeprefix(BOM) if lineno == 1 else line)
                if error:
                    bad.append((lineno, error))
                    continue
                numbers.append(lineno)
                yield text

    reader = csv.DictReader(lines())
    try:
        for row in reader:
            while bad:
                lineno, error = bad.pop(0)
                yield lineno, None, error
            lineno = numbers[reader.line_num - 1] if 0 < reader.line_num <= len(numbers) else reader.line_num
            if None in row:
                yield lineno, None, "more fields than the header has"
            else:
                yield lineno, dict(row), None
    except csv.Error as exc:
        yield numbers[-1] if numbers else 1, None, f"malformed CSV ({exc})"
    for lineno, error in bad:
        yield lineno, None, error



def _parquet(path: Path, display: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RecipeError(f"{display}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        batches = pq.ParquetFile(path).iter_batches()
        i = 0
        for batch in batches:
            for row in batch.to_pylist():
                i += 1
                yield i, row, None
    except RecipeError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid / OSError on a damaged file
        text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise RecipeError(f"{display}: not a readable Parquet file ({text})") from None


def listing(display: str, problems: list[tuple[int, str]], where: str, read: int) -> str:
    """The message for bad records: how many, and the first MAX_LISTED located."""
    shown = problems[:MAX_LISTED]
    lines = [f"{display}:{n}: {m}" if where == "line" else f"{display}: {where} {n}: {m}" for n, m in shown]
    if len(problems) > len(shown):
        lines.append(f"... and {len(problems) - len(shown)} more")
    return (f"{display}: {len(problems)} bad record(s) of {read} (set data.on_error: skip to leave them out)\n"
            + "\n".join(lines))


def where_word(path: Path) -> str:
    return {".parquet": "row", ".json": "record"}.get(path.suffix.lower(), "line")
