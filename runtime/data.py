"""Read and check training data; turn each record into what trl's SFTTrainer trains on.

Records come from the recipe's sources (compiler/sources.py: files, globs, saved and hub datasets),
mixed with the seed (compiler/mixture.py). Every record is checked before anything is loaded; a bad
one is reported as `source:line: what is wrong` (`row N` for Parquet and datasets). With
`data.on_error: fail` (the default) any bad record stops the run with all of them listed; with
`skip` they are left out and counted.

Formats, and what the loss is computed on:
- chat: {"messages": [{"role": system|user|assistant|tool, "content": ...}, ...]}, sharegpt
  ({"conversations": [{"from", "value"}, ...]}) and alpaca ({"instruction", "input" (optional),
  "output"}) are conversations: tokenized here with the chat template, the loss on every assistant
  turn (masks derived by rendering, runtime/masks.py, with or without `{% generation %}` markers),
  or on every token with `data.train_on_inputs`.
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
    held_out: list[dict] = field(default_factory=list)  # data.eval_fraction's share, split per source before mixing


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


def converter_for(recipe, markers: bool = True):
    """The Converter of each source: its format, the recipe's template, system prompt and the source's roles."""
    def make(source):
        return Converter(source.format, recipe.data.template, markers, recipe.data.system_prompt, dict(source.roles))
    return make


def read_sources(recipe, recipe_dir: Path, key: str = "train", markers: bool = True,
                 allow_download: bool = True) -> tuple[Records, list[dict]]:
    """Every source of data.train (or data.eval), read, converted and mixed with the seed; with what
    each source gave. Bad records are located per source (`source:line: what`). With
    data.eval_fraction, each source's held-out share is split off before mixing (Records.held_out), so
    a source repeated by its weight never repeats a held-out example into training."""
    from ..compiler import mixture, sources

    listed = sources.parse(getattr(recipe.data, key), recipe.data.format, key)
    clash = mixture.check_kinds(listed)
    if clash:
        raise RecipeError(f"data.{key}: {clash[1]}")
    parts = [mixture.read_source(s, recipe_dir, converter_for(recipe, markers), recipe.data.on_error,
                                 allow_download=allow_download) for s in listed]
    held = []
    if key == "train" and recipe.data.eval_fraction:
        for i, p in enumerate(parts):
            p.rows, out = split_eval(p.rows, recipe.data.eval_fraction, recipe.training.seed + i)
            held += out
    rows, report = mixture.mix(parts, recipe.training.seed)
    kind = Converter(listed[0].format, recipe.data.template, markers).kind
    problems = [Problem(where, 0, 0, "", message) for p in parts for where, message in p.problems]
    return Records(rows=rows, read=sum(p.read for p in parts), skipped=len(problems), problems=problems,
                   kind=kind, held_out=held), report


def trainer_dataset(rows: list[dict], kind: str, tokenizer, train_on_inputs: bool):
    """What the trainer takes: conversations tokenized here with their loss masks (runtime/masks.py),
    other kinds as rows trl tokenizes."""
    from datasets import Dataset

    if kind != "messages":
        return Dataset.from_list(rows)
    from .masks import tokenize_rows

    return Dataset.from_list(tokenize_rows(tokenizer, rows, train_on_inputs))
