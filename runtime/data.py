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
- preference and kto: pairs and labelled completions for preference tuning (runtime/pairs.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from ..compiler import records as records_mod
from ..schemas.errors import Problem, RecipeError

ROLES = ("system", "user", "assistant")
MAX_LISTED = 20
ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"


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


def _text(row: dict, key: str, required: bool = True) -> Optional[str]:
    value = row.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing '{key}'")
        return None
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"'{key}' is empty")
    return value


def _chat(row: dict) -> list[dict]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("expected 'messages': a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's (it is what the model learns to say)")
    return out


class _Converter:
    def __init__(self, fmt: str, template=None, generation_markers: bool = True):
        self.fmt = fmt
        self.generation_markers = generation_markers
        self.templates = None
        if fmt == "template":  # sandboxed, with limits on ranges, sizes and time (compiler/templates.py)
            from ..compiler.templates import compile_pair

            self.env, *pair = compile_pair(template.prompt, template.completion)
            self.templates = tuple(pair)

    @property
    def kind(self) -> str:
        if self.fmt == "chat":
            return "messages" if self.generation_markers else "conversational_prompt_completion"
        if self.fmt in ("preference", "kto"):
            return self.fmt
        return "text" if self.fmt == "text" else "prompt_completion"

    def __call__(self, row: Any) -> dict:
        if not isinstance(row, dict):
            raise ValueError(f"expected an object, got {type(row).__name__}")
        if self.fmt == "chat":
            messages = _chat(row)
            if self.generation_markers:
                return {"messages": messages}
            return {"prompt": messages[:-1], "completion": messages[-1:]}
        if self.fmt == "alpaca":
            instruction, output = _text(row, "instruction"), _text(row, "output")
            extra = _text(row, "input", required=False) or ""
            block = f"### Input:\n{extra}\n\n" if extra.strip() else ""
            return {"prompt": ALPACA_PROMPT.format(instruction=instruction, input_block=block), "completion": output}
        if self.fmt in ("preference", "kto"):
            from . import pairs

            return pairs.preference(row) if self.fmt == "preference" else pairs.kto(row)
        if self.fmt == "prompt_completion":
            return {"prompt": _text(row, "prompt"), "completion": _text(row, "completion")}
        if self.fmt == "text":
            return {"text": _text(row, "text")}
        from jinja2 import TemplateError
        from jinja2.exceptions import SecurityError

        from ..compiler.templates import SECONDS_TOTAL, describe, render

        try:
            prompt, completion = (render(self.env, t, row) for t in self.templates)
        except SecurityError as exc:
            raise ValueError(f"template refused by the sandbox: {exc} (recipes are data: templates may not "
                             f"reach Python internals)") from None
        except TemplateError as exc:
            if self.env.clock.total > SECONDS_TOTAL:
                raise RecipeError(f"data.template: {describe(exc)}") from None
            raise ValueError(f"template: {describe(exc)}") from None
        if not completion.strip():
            raise ValueError("the completion template renders empty")
        return {"prompt": prompt, "completion": completion}


def read_records(path: Path, display: str, fmt: str, template=None, on_error: str = "fail",
                 generation_markers: bool = True) -> Records:
    """Read and convert every record; RecipeError listing the bad ones when on_error is 'fail'."""
    records_mod.check_file(path, display)
    convert = _Converter(fmt, template, generation_markers)
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
