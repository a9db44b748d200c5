"""Read and check training data; turn each record into what trl's SFTTrainer trains on.

Every record is checked before anything is loaded; a bad one is reported as `file:line: what is
wrong` (`row N` for Parquet). With `data.on_error: fail` (the default) any bad record stops the run
with all of them listed; with `skip` they are left out and counted.

Formats, and what the loss is computed on:
- chat: {"messages": [{"role": system|user|assistant, "content": ...}, ...]}: the assistant turns
  (trl's `assistant_only_loss`, which needs a chat template with `{% generation %}` markers); with a
  template that has none, the last assistant turn is the completion of a conversational prompt.
- alpaca: {"instruction", "input" (optional), "output"}: the output.
- prompt_completion: {"prompt", "completion"}: the completion.
- text: {"text"}: every token.
- template: any columns, rendered by the recipe's Jinja2 prompt and completion templates in a
  sandbox: the completion.
- preference and kto: pairs and labelled completions for preference tuning (compiler/pairs.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ..compiler import records as records_mod
from ..compiler.convert import Converter
from ..schemas.errors import Problem, RecipeError

MAX_LISTED = 20


@dataclass
class Records:
    rows: list[dict]  # in trl's format
    read: int = 0
    skipped: int = 0
    problems: list[Problem] = field(default_factory=list)
    kind: str = ""  # "messages" | "prompt_completion" | "conversational_prompt_completion" | "text"


def _raw(path: Path, display: str) -> Iterator[tuple[int, Any, Optional[str]]]:
    """(line or row number, record or None, parse error or None): the reader `validate` and `plan` use."""
    return records_mod.raw(path, display)


def read_records(path: Path, display: str, fmt: str, template=None, on_error: str = "fail",
                 generation_markers: bool = True) -> Records:
    """Read and convert every record; RecipeError listing the bad ones when on_error is 'fail'."""
    records_mod.check_file(path, display)
    convert = Converter(fmt, template, generation_markers)
    records = Records(rows=[], kind=convert.kind)
    for lineno, row, error in _raw(path, display):
        records.read += 1
        if error is None:
            try:
                records.rows.append(convert(row))
                continue
            except ValueError as exc:
                error = str(exc)
        records.skipped += 1
        records.problems.append(Problem(display, lineno, 1, "", error))
    if records.problems and on_error == "fail":
        raise RecipeError(records_mod.listing(display, [(p.line, p.message) for p in records.problems],
                                              records_mod.where_word(path), records.read))
    if not records.rows:
        raise RecipeError(f"{display}: no usable records" + (f" (all {records.read} were bad)" if records.read else ""))
    return records


def split_eval(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A deterministic held-out split: the same rows for the same data and seed, never overlapping."""
    def key(i: int) -> str:
        return hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()

    order = sorted(range(len(rows)), key=key)
    n_eval = max(1, round(len(rows) * fraction)) if len(rows) > 1 else 0
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def duplicates(train: list[dict], held_out: list[dict]) -> int:
    """How many held-out records also appear in the training data."""
    seen = {json.dumps(r, sort_keys=True) for r in train}
    return sum(1 for r in held_out if json.dumps(r, sort_keys=True) in seen)
