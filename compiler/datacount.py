"""Counting records in O(bytes), and a deterministic sample of them, without parsing every record.

* JSONL: newlines counted in blocks of 4 MiB by one regex pass that also sees whether a line starts
  with whitespace (bytes.count and a search where lines are short; only then are the block's blank
  lines looked for), plus a last line without a newline; the sample is the line starting at or after
  each of SAMPLE evenly spaced byte offsets (so long and short lines are taken as often as they
  occur), with its line number. The same pass hashes the file (in a second thread, so hashing
  overlaps counting where there are two cores).
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
import queue
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..schemas.errors import RecipeError
from . import records

BLOCK = 1 << 22
PIECE = 1 << 18  # newlines are counted in pieces of 256 KiB: the list of matches stays small
WHITE = frozenset(b" \t\n\r\x0b\x0c")  # ASCII whitespace, as bytes.strip (records.blank) strips it
# A newline, with the whitespace byte after it if there is one: findall gives b"\n" (one shared object)
# for every newline of a line that does not start with whitespace, so one pass counts the newlines and
# says whether a blank line can be there. Each match costs about 50 ns: for lines shorter than
# SHORT_LINE bytes (on average, in the block) bytes.count and a search for a newline followed by
# whitespace (two passes without a list) are cheaper.
_NEWLINE = re.compile(rb"\n[ \t\n\r\x0b\x0c]?")
_WHITE_START = re.compile(rb"\n[ \t\n\r\x0b\x0c]")
SHORT_LINE = 128
PROBE = 1 << 16  # the bytes of each block whose newlines say which way it is counted


@dataclass
class Scan:
    count: int  # records (non-blank lines, CSV rows, Parquet rows)
    rows: list = field(default_factory=list)  # [(line or row number, record or None, error or None)], in file order
    digest: Optional[str] = None  # the file's sha256, where the same pass hashed it


def _newlines(block: bytes, a: int, b: int, end: int, short: bool) -> tuple[int, bool]:
    """Newlines in block[a:b], and whether a line after one of them starts with whitespace (the line
    at block[end], which continues in the next block, is not looked at). `short`: the block's lines are
    short (see SHORT_LINE)."""
    count, white = 0, False
    for i in range(a, b, PIECE):
        j = min(i + PIECE, b)
        if short:
            count += block.count(b"\n", i, j)
            white = white or _WHITE_START.search(block, i, j) is not None
        else:
            found = _NEWLINE.findall(block, i, j)
            plain = found.count(b"\n")
            if plain == len(found):
                count += plain
            else:  # a match is b"\n" or b"\n" + one whitespace byte: only b"\n\n" holds two newlines
                white = True
                count += len(found) + found.count(b"\n\n")
        if j < end and block[j - 1] == 10 and block[j] in WHITE:  # the piece ends on a newline
            white = True
    return count, white


def _blank_lines(block: bytes, a: int, end: int) -> int:
    """Blank lines among the whole lines block[a:end] (a is a line start, block[end - 1] a newline)."""
    return sum(1 for line in block[a:end].split(b"\n")[:-1] if records.blank(line))


class _Hasher:
    """sha256 fed from a second thread: hashlib releases the GIL on large updates, so on a host with two
    cores the file is hashed while its lines are counted (the blocks are immutable bytes, shared, not
    copied; at most 4 wait)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._blocks: queue.Queue = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, name="recipe-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (block := self._blocks.get()) is not None:
            self._h.update(block)

    def update(self, block: bytes) -> None:
        self._blocks.put(block)

    def close(self) -> None:
        """Stop the thread (also when counting failed); idempotent."""
        if self._thread.is_alive():
            self._blocks.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._h.hexdigest()


def jsonl(path: Path, sample: int, hash_it: bool = True) -> Scan:
    """Count the records of a JSONL file, sample up to `sample` of them, hash it: one pass, no block
    copied (only a line that spans two blocks is joined)."""
    size = path.stat().st_size
    targets = deque(sorted({i * size // sample for i in range(sample)}) if sample else [])
    h = _Hasher() if hash_it else None
    count = lines = offset = 0  # records; newlines before `offset`; file offset of the block
    tail = b""  # the start of a line that continues in the next block
    taken: list = []

    def one_line(line: bytes, start: int) -> None:
        """A line (with its newline, if any) that starts at file offset `start`."""
        nonlocal count, lines
        lines += 1
        empty = records.blank(line)
        count += not empty
        picked = False
        while targets and targets[0] <= start:
            targets.popleft()
            picked = True
        if picked and not empty:
            taken.append((lines, line))

    try:
        with path.open("rb") as f:
            while block := f.read(BLOCK):
                if h is not None:
                    h.update(block)
                first = block.find(b"\n")
                if first < 0:
                    tail += block
                    offset += len(block)
                    continue
                one_line(tail + block[:first + 1], offset - len(tail))
                a, end = first + 1, block.rfind(b"\n") + 1  # block[a:end]: whole lines
                cursor, before = a, 0  # newlines in block[a:cursor]
                white = a < end and block[a] in WHITE  # a line in block[a:end] starts with whitespace
                short = block.count(b"\n", 0, PROBE) * SHORT_LINE > min(len(block), PROBE)
                while targets and targets[0] < offset + end:  # the first line starting at or after each target
                    pos = targets[0] - offset
                    start = a if pos <= a else block.find(b"\n", pos - 1, end) + 1
                    if start >= end:
                        break  # the line starts in the tail
                    while targets and targets[0] <= offset + start:
                        targets.popleft()
                    newlines, w = _newlines(block, cursor, start, end, short)
                    before, white, cursor = before + newlines, white or w, start
                    line = block[start:block.find(b"\n", start, end) + 1]
                    if not records.blank(line):
                        taken.append((lines + before + 1, line))
                newlines, w = _newlines(block, cursor, end, end, short)
                newlines += before
                count += newlines - (_blank_lines(block, a, end) if white or w else 0)
                lines += newlines
                tail = block[end:]
                offset += len(block)
    except BaseException:
        if h is not None:
            h.close()
        raise

    if tail:  # a last line without a newline
        one_line(tail, offset - len(tail))
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
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:  # -sig: as records.py, past a BOM
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
    if len(kept) > sample:  # evenly spread over what was kept
        kept = [kept[i * len(kept) // sample] for i in range(sample)]
    for lineno, values in kept:
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
