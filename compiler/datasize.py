"""How much data there is to train on: examples and tokens, counted from local files.

Tokens are counted with the model's own tokenizer when a local model directory holds
`tokenizer.json` and the `tokenizers` package is installed; otherwise with a stated heuristic
(characters / 4, plus a fixed overhead per chat message for the template). Declared sizes in the
recipe (`data.examples`, `data.tokens_per_example`) take precedence: a sample file can stand for
the real data set. Only the training file is read; at most SAMPLE_ROWS rows are tokenized.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from ..schemas.recipe import Recipe

SAMPLE_ROWS = 2000
CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD_TOKENS = 5  # role header and end-of-turn tokens per chat message
EXAMPLE_OVERHEAD_TOKENS = 8  # BOS, template scaffolding, EOS
DEFAULT_TOKENS_PER_EXAMPLE = 512
DECLARED_PADDING = 1.25  # padding to the longest of a micro batch, when lengths are declared, not sampled


@dataclass(frozen=True)
class DataSize:
    examples: int
    tokens_per_example: float  # mean, after truncation to max_seq_len
    counted_with: str  # tokenizer | heuristic | declared
    truncated: int = 0
    note: str = ""
    lengths: tuple = field(default=(), repr=False, compare=False)  # a sample, clipped to max_seq_len
    max_len: int = 0

    def padded_tokens_per_example(self, micro_batch: int) -> float:
        """Tokens computed per example when each micro batch is padded to its longest sequence:
        simulated from the sampled lengths, or a stated 25% on the mean when there are none."""
        if micro_batch <= 1:
            return self.tokens_per_example
        if len(self.lengths) < 2:
            return min(self.tokens_per_example * DECLARED_PADDING, self.max_len or self.tokens_per_example)
        rng = random.Random(0)
        trials = 200
        return sum(max(rng.choice(self.lengths) for _ in range(micro_batch)) for _ in range(trials)) / trials


def sha256(path: Path) -> Optional[str]:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rows(path: Path) -> Iterator[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # `recipe run` reports malformed records with their line
                    if isinstance(row, dict):
                        yield row
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        for row in data if isinstance(data, list) else []:
            if isinstance(row, dict):
                yield row
    elif suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq  # only with the [train] extra; callers catch ImportError

        for batch in pq.ParquetFile(path).iter_batches():
            yield from batch.to_pylist()


def example_text(row: dict, fmt: str, template=None) -> tuple[str, int]:
    """The text an example becomes, and its count of chat messages (for template overhead)."""
    if fmt == "chat":
        messages = row.get("messages") or []
        parts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        return "\n".join(parts), len(parts)
    if fmt == "alpaca":
        return "\n".join(str(row.get(k) or "") for k in ("instruction", "input", "output")), 2
    if fmt == "prompt_completion":
        return f"{row.get('prompt', '')}{row.get('completion', '')}", 2
    if fmt == "text":
        return str(row.get("text", "")), 0
    if fmt == "template" and template is not None:
        return template[0].render(**row) + template[1].render(**row), 2
    return json.dumps(row), 0


def _templates(recipe: Recipe):
    if recipe.data.format != "template" or recipe.data.template is None:
        return None
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment()
    return env.from_string(recipe.data.template.prompt), env.from_string(recipe.data.template.completion)


def _tokenizer(model_dir: Optional[Path]):
    if model_dir is None or not (model_dir / "tokenizer.json").is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    try:
        return Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    except Exception:  # a tokenizer file this version cannot read: fall back to the heuristic
        return None


def measure(recipe: Recipe, recipe_dir: Path, model_dir: Optional[Path]) -> DataSize:
    """Examples and tokens per example for planning, with how they were counted. Declared sizes win
    over the file (a sample can stand for the real data set); the file is read for what is not declared."""
    declared_n, declared_t = recipe.data.examples, recipe.data.tokens_per_example
    max_len = recipe.training.max_seq_len
    path = recipe_dir / recipe.data.train
    lengths: list[int] = []
    count = 0
    counted_with = "declared"
    notes = []
    if path.is_file() and not (declared_n and declared_t):
        try:
            tokenizer = _tokenizer(model_dir)
            templates = _templates(recipe)
            for row in _rows(path):
                count += 1
                if len(lengths) < SAMPLE_ROWS:
                    def encode(text: str, messages: int) -> int:
                        n = (len(tokenizer.encode(text).ids) if tokenizer is not None
                             else math.ceil(len(text) / CHARS_PER_TOKEN))
                        return n + messages * MESSAGE_OVERHEAD_TOKENS + EXAMPLE_OVERHEAD_TOKENS

                    if recipe.data.format in ("preference", "kto"):  # a pair's longer side
                        from .preference import example_lengths

                        lengths.append(example_lengths(row, encode))
                        continue
                    lengths.append(encode(*example_text(row, recipe.data.format, templates)))
            counted_with = "tokenizer" if tokenizer is not None else "heuristic"
        except (ImportError, OSError, ValueError, UnicodeDecodeError) as exc:
            notes.append(f"could not read {recipe.data.train} ({exc.__class__.__name__}); used declared sizes")
            lengths, count = [], 0
    if recipe.data.eval_fraction and count:
        count -= math.floor(count * recipe.data.eval_fraction)
    if declared_n and count and declared_n != count:
        notes.append(f"data.examples declares {declared_n}; the file has {count}")
    clipped = [min(n, max_len) for n in lengths]
    if declared_t:
        mean, counted_with, clipped = float(min(declared_t, max_len)), "declared", []
    elif clipped:
        mean = sum(clipped) / len(clipped)
    else:
        mean, counted_with = float(min(DEFAULT_TOKENS_PER_EXAMPLE, max_len)), "declared"
        notes.append(f"no data file and no data.tokens_per_example: assumed {DEFAULT_TOKENS_PER_EXAMPLE} "
                     f"tokens per example")
    examples = declared_n or count
    if not examples:
        notes.append("no examples counted and none declared (data.examples)")
    return DataSize(examples, mean, counted_with, sum(1 for n in lengths if n > max_len), "; ".join(notes),
                    tuple(clipped), max_len)
