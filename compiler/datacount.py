"""Counting records in O(bytes), and a deterministic sample of them, without parsing every record.

* JSONL: newlines counted in blocks of 4 MiB (bytes.count, C speed), less blank lines (found only in
  blocks where a line starts with whitespace), plus a last line without a newline; the sample is the
  line starting at or after each of SAMPLE evenly spaced byte offsets (so long and short lines are
  taken as often as they occur), with its line number. The same pass hashes the file.
* CSV: a streaming count with the csv module (quoted fields may hold newlines; blank rows are not
  records), keeping every k-th row (k doubles as the file grows: evenly spread, deterministic).
* Parquet: the row count from the footer's metadata; the sample from evenly spaced row groups.
* JSON arrays cannot be counted without parsing: they are read whole (compiler/records.py).

Records in the sample are parsed by compiler/records.py's own line reader, so a sampled record reads
exactly as `recipe run` reads it.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..schemas.errors import RecipeError
from . import records

BLOCK = 1 << 22
_STARTS = tuple(b"\n" + bytes([c]) for c in b" \t\r\n\x0b\x0c")  # a line that starts with whitespace


@dataclass
class Scan:
    count: int  # records (non-blank lines, CSV rows, Parquet rows)
    rows: list = field(default_factory=list)  # [(line or row number, record or None, error or None)], in file order
    digest: Optional[str] = None  # the file's sha256, where the same pass hashed it


def _blank_lines(buf: bytes, end: int) -> int:
    """Blank lines among the complete lines buf[:end] (buf starts at a line start)."""
    if not (buf[:1].isspace() or any(buf.find(s, 0, end) >= 0 for s in _STARTS)):
        return 0
    return sum(1 for line in buf[:end].split(b"\n")[:-1] if records.blank(line))


def jsonl(path: Path, sample: int, hash_it: bool = True) -> Scan:
    size = path.stat().st_size
    targets = sorted({i * size // sample for i in range(sample)}) if sample else []
    h = hashlib.sha256() if hash_it else None
    count = lines = base = ti = 0
    taken: list = []
    last_start = -1
    buf = b""
    with path.open("rb") as f:
        while True:
            block = f.read(BLOCK)
            if h is not None and block:
                h.update(block)
            if not block:
                break
            buf = buf + block if buf else block
            end = buf.rfind(b"\n") + 1  # buf[:end]: complete lines
            if not end:
                continue
            # sampled lines: the first line starting at or after each target offset
            cursor, cursor_lines = 0, 0
            while ti < len(targets) and targets[ti] < base + end:
                pos = targets[ti] - base
                start = 0 if pos <= 0 else buf.find(b"\n", pos - 1, end) + 1
                if start >= end:
                    break  # starts in the next block
                ti += 1
                if base + start == last_start:
                    continue
                last_start = base + start
                cursor_lines += buf.count(b"\n", cursor, start)
                cursor = start
                line = buf[start:buf.find(b"\n", start, end) + 1]
                if not records.blank(line):
                    taken.append((lines + cursor_lines + 1, line))
            newlines = buf.count(b"\n", 0, end)
            count += newlines - _blank_lines(buf, end)
            lines += newlines
            base += end
            buf = buf[end:]
    if buf and not records.blank(buf):  # a last line without a newline
        count += 1
        if ti < len(targets) and targets[ti] <= base and base != last_start:
            taken.append((lines + 1, buf))
    rows = []
    for lineno, line in taken:
        row, error = records.jsonl_line(line)
        rows.append((lineno, row, error))
    return Scan(count, rows, h.hexdigest() if h is not None else None)


def _csv_record(header: list, values: list) -> tuple[Any, Optional[str]]:
    """A CSV row as csv.DictReader (compiler/records.py) makes it."""
    if len(values) > len(header):
        return None, "more fields than the header has"
    return {k: (values[i] if i < len(values) else None) for i, k in enumerate(header)}, None


def csv_rows(path: Path, display: str, sample: int) -> Scan:
    kept: list = []
    stride, count = 1, 0
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            for values in reader:
                if not values:  # a blank line: no record
                    continue
                if count % stride == 0:
                    kept.append((reader.line_num, values))
                    if len(kept) >= 2 * sample:
                        kept, stride = kept[::2], stride * 2
                count += 1
        except csv.Error as exc:
            raise RecipeError(f"{display}: malformed CSV at line {reader.line_num} ({exc})") from None
    if header is None:
        return Scan(0)
    rows = []
    for lineno, values in kept[:: max(1, len(kept) // sample)] if len(kept) > sample else kept:
        row, error = _csv_record(header, values)
        rows.append((lineno, row, error))
    return Scan(count, rows)


def parquet(path: Path, display: str, sample: int) -> Scan:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RecipeError(f"{display}: reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        pf = pq.ParquetFile(path)
        total, groups = pf.metadata.num_rows, pf.metadata.num_row_groups
        picked = sorted({i * groups // min(groups, 16) for i in range(min(groups, 16))}) if groups else []
        starts, n = [], 0
        for g in range(groups):
            starts.append(n)
            n += pf.metadata.row_group(g).num_rows
        per_group = max(1, -(-sample // max(1, len(picked))))
        rows = []
        for g in picked:
            table = pf.read_row_group(g).to_pylist()
            step = max(1, len(table) // per_group)
            rows += [(starts[g] + i + 1, table[i], None) for i in range(0, len(table), step)][:per_group]
    except RecipeError:
        raise
    except Exception as exc:  # pyarrow's ArrowInvalid / OSError on a damaged file
        text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise RecipeError(f"{display}: not a readable Parquet file ({text})") from None
    return Scan(total, rows)
