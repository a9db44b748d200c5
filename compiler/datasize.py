"""How much data there is to train on: examples and tokens, counted from local files.

Tokens are counted with the model's own tokenizer when a local model directory holds
`tokenizer.json` and the `tokenizers` package is installed; otherwise with a stated heuristic
(characters / 4, plus a fixed overhead per chat message for the template). Declared sizes in the
recipe (`data.examples`, `data.tokens_per_example`) take precedence: a sample file can stand for
the real data set. Only the training file is read; at most SAMPLE_ROWS rows are tokenized.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError
from ..schemas.recipe import Recipe
from . import records
from .templates import compile_pair, describe, render

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

    def packed_rows(self) -> int:
        return self._packed_rows  # simulated once per measurement, however many options ask

    @functools.cached_property
    def _packed_rows(self) -> int:
        """Rows trl's "bfd" packing makes of the training set: best-fit decreasing of the example
        lengths (each clipped to max_seq_len) into rows of max_seq_len tokens; simulated on the
        sampled lengths and scaled to all examples, or the token total over the row length when
        lengths are declared (a lower bound)."""
        if not self.examples:
            return 0
        if self.lengths and self.max_len:
            bins = best_fit_decreasing(self.lengths, self.max_len)
            return max(1, math.ceil(self.examples * bins / len(self.lengths) - 1e-9))
        row = self.max_len or self.tokens_per_example
        return max(1, math.ceil(self.examples * self.tokens_per_example / row))


def best_fit_decreasing(lengths, capacity: int) -> int:
    """Bins of `capacity` tokens that best-fit decreasing packs `lengths` into (as trl's "bfd")."""
    import bisect

    free: list[int] = []  # remaining space of each open bin, sorted
    for n in sorted((min(n, capacity) for n in lengths), reverse=True):
        i = bisect.bisect_left(free, n)
        if i < len(free):
            space = free.pop(i) - n
        else:
            space = capacity - n
        bisect.insort(free, space)
    return len(free)


def sha256(path: Path) -> Optional[str]:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def example_text(row: dict, fmt: str, template=None) -> tuple[str, int]:
    """The text an example becomes, and its count of chat messages (for template overhead)."""
    if fmt == "chat":
        messages = row.get("messages") or []
        parts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        return "\n".join(parts), len(parts)
    if fmt == "sharegpt":
        turns = row.get("conversations") or []
        parts = [str(t.get("value", "")) for t in turns if isinstance(t, dict)]
        return "\n".join(parts), len(parts)
    if fmt == "alpaca":
        return "\n".join(str(row.get(k) or "") for k in ("instruction", "input", "output")), 2
    if fmt == "prompt_completion":
        return f"{row.get('prompt', '')}{row.get('completion', '')}", 2
    if fmt == "text":
        return str(row.get("text", "")), 0
    if fmt == "template" and template is not None:
        env, prompt, completion = template
        return render(env, prompt, row) + render(env, completion, row), 2
    return json.dumps(row), 0


def _templates(recipe: Recipe):
    if recipe.data.format != "template" or recipe.data.template is None:
        return None
    return compile_pair(recipe.data.template.prompt, recipe.data.template.completion)


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
    over the file (a sample can stand for the real data set); the file is read for what is not declared.
    Lists of sources, globs, hub and saved datasets are measured by compiler/source_size.py."""
    from .sources import is_plain_file

    if not is_plain_file(recipe.data.train):
        from .source_size import measure as measure_sources

        return measure_sources(recipe, recipe_dir, model_dir)
    declared_n, declared_t = recipe.data.examples, recipe.data.tokens_per_example
    max_len = recipe.training.max_seq_len
    path = recipe_dir / recipe.data.train
    lengths: list[int] = []
    count = 0
    counted_with = "declared"
    notes = []
    if path.exists() and not (declared_n and declared_t):
        if path.suffix.lower() == ".parquet" and importlib.util.find_spec("pyarrow") is None:
            notes.append(f"could not read {recipe.data.train} (Parquet needs pyarrow, in the [train] extra); "
                         f"used declared sizes")
        else:
            count, lengths, counted_with = _count(recipe, path, model_dir)
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


def _count(recipe: Recipe, path: Path, model_dir: Optional[Path]) -> tuple[int, list[int], str]:
    """Records and sampled token lengths, read with the reader `recipe run` uses: a file it would
    refuse (empty, unreadable, bad records with data.on_error: fail) is refused here too."""
    from jinja2 import TemplateError

    display = recipe.data.train
    tokenizer = _tokenizer(model_dir)
    templates = _templates(recipe)
    from .checks import record_check, record_error

    convert = record_check(recipe.data.format)
    count, read, lengths, bad = 0, 0, [], []
    for lineno, row, error in records.raw(path, display):
        read += 1
        error = record_error(row, error, convert)
        if error is None and recipe.data.format in ("preference", "kto"):  # a pair's longer side
            from .preference import example_lengths

            def encode(text: str, messages: int) -> int:
                n = (len(tokenizer.encode(text).ids) if tokenizer is not None
                     else math.ceil(len(text) / CHARS_PER_TOKEN))
                return n + messages * MESSAGE_OVERHEAD_TOKENS + EXAMPLE_OVERHEAD_TOKENS

            try:
                if len(lengths) < SAMPLE_ROWS:
                    lengths.append(example_lengths(row, encode))
            except (ValueError, TypeError, AttributeError) as exc:
                error = f"not a {recipe.data.format} record ({exc})"
            else:
                count += 1
                continue
        elif error is None:
            try:
                text, messages = example_text(row, recipe.data.format, templates) if len(lengths) < SAMPLE_ROWS \
                    else (None, 0)
            except TemplateError as exc:
                error = f"template: {describe(exc)}"
            else:
                count += 1
                if text is not None:
                    n = (len(tokenizer.encode(text).ids) if tokenizer is not None
                         else math.ceil(len(text) / CHARS_PER_TOKEN))
                    lengths.append(n + messages * MESSAGE_OVERHEAD_TOKENS + EXAMPLE_OVERHEAD_TOKENS)
                continue
        bad.append((lineno, error))
    if bad and recipe.data.on_error == "fail":
        raise RecipeError(records.listing(display, bad, records.where_word(path), read))
    if not count:
        raise RecipeError(f"{display}: no usable records" + (f" (all {read} were bad)" if read else "")
                          + "; nothing to plan")
    return count, lengths, "tokenizer" if tokenizer is not None else "heuristic"
