"""How much data there is to train on: examples and tokens, counted from local files.

Tokens are counted with the model's own tokenizer when a local model directory holds
`tokenizer.json` and the `tokenizers` package is installed; otherwise with a stated heuristic
(characters / 4, plus a fixed overhead per chat message for the template). Declared sizes in the
recipe (`data.examples`, `data.tokens_per_example`) take precedence: a sample file can stand for
the real data set. Only the training file is read; at most SAMPLE_ROWS rows are tokenized.

Cost: O(bytes), not O(records x parse). Files up to FULL_CHECK_BYTES are read whole and every record
is checked as `recipe run` checks it (a file the run would refuse is refused here too). Larger files are
counted structurally (compiler/datacount.py) and a deterministic sample is checked and tokenized; the
full per-record check happens once, in `recipe run`, which parses every record anyway before it loads
the model. Measurements are cached by the file's and the tokenizer's sha256 (compiler/datacache.py).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError
from ..schemas.recipe import Recipe
from . import datacache, datacount, records

SAMPLE_ROWS = 2000
FULL_CHECK_BYTES = 8 << 20  # files up to 8 MiB: every record checked at plan time; larger: a sample
CACHE_VERSION = 2  # bump when a measurement's meaning changes (2: templates checked as `recipe run` renders them)
CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD_TOKENS = 5  # role header and end-of-turn tokens per chat message
EXAMPLE_OVERHEAD_TOKENS = 8  # BOS, template scaffolding, EOS
DEFAULT_TOKENS_PER_EXAMPLE = 512
DECLARED_PADDING = 1.25  # padding to the longest of a micro batch, when lengths are declared, not sampled


@dataclass(frozen=True)
class DataSize:
    examples: int
    tokens_per_example: float  # mean, after truncation to max_seq_len
    counted_with: str  # tokenizer | heuristic | declared | assumed (nothing counted or declared)
    truncated: int = 0
    note: str = ""
    lengths: tuple = field(default=(), repr=False, compare=False)  # a sample, clipped to max_seq_len
    max_len: int = 0

    _padded: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def padded_tokens_per_example(self, micro_batch: int) -> float:
        """Tokens computed per example when each micro batch is padded to its longest sequence:
        simulated from the sampled lengths, or a stated 25% on the mean when there are none. Simulated
        once per micro-batch size, however many options ask."""
        if micro_batch <= 1:
            return self.tokens_per_example
        if len(self.lengths) < 2:
            return min(self.tokens_per_example * DECLARED_PADDING, self.max_len or self.tokens_per_example)
        if micro_batch not in self._padded:
            rng = random.Random(0)
            trials = 200
            self._padded[micro_batch] = sum(max(rng.choice(self.lengths) for _ in range(micro_batch))
                                            for _ in range(trials)) / trials
        return self._padded[micro_batch]

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


def example_text(row: dict, fmt: str, template=None, system_prompt: Optional[str] = None) -> tuple[str, int]:
    """The text an example becomes, and its count of chat messages (for template overhead); a
    conversation with data.system_prompt where it has no system message, as `recipe run` trains it."""
    if system_prompt and fmt in ("chat", "sharegpt", "alpaca"):
        from .convert import Converter

        messages = Converter(fmt, system_prompt=system_prompt)(row)["messages"]
        return "\n".join(str(m.get("content", "")) for m in messages), len(messages)
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
        from .templates import render  # jinja2: imported only for template recipes

        return render(env, prompt, row) + render(env, completion, row), 2
    return json.dumps(row), 0


def _templates(recipe: Recipe):
    if recipe.data.format != "template" or recipe.data.template is None:
        return None
    from .templates import compile_pair

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
    over the file (a sample can stand for the real data set); the file is read for what is not
    declared: not at all when both are, and not tokenized when data.tokens_per_example is.
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
            counted = count_file(recipe, path, model_dir, need_lengths=not declared_t)
            count, lengths, counted_with = counted.count, counted.lengths, counted.counted_with
            if not counted.complete:
                notes.append(f"{recipe.data.train}: records counted in full, {counted.checked:,} sampled "
                             f"records checked and measured; `recipe run` checks every record")
    if recipe.data.eval_fraction and count:  # as runtime.data.split_eval holds out
        from .source_size import held_out

        count -= held_out(count, recipe.data.eval_fraction)
    if declared_n and count and declared_n != count:
        notes.append(f"data.examples declares {declared_n}; the file has {count}")
    clipped = [min(n, max_len) for n in lengths]
    if declared_t:
        mean, counted_with, clipped = float(min(declared_t, max_len)), "declared", []
    elif clipped:
        mean = sum(clipped) / len(clipped)
    else:
        mean = float(min(DEFAULT_TOKENS_PER_EXAMPLE, max_len))
        counted_with = "declared" if declared_n else "assumed"
        notes.append(f"no data file and no data.tokens_per_example: assumed {DEFAULT_TOKENS_PER_EXAMPLE} "
                     f"tokens per example")
    examples = declared_n or count
    if not examples:
        notes.append("no examples counted and none declared (data.examples)")
    return DataSize(examples, mean, counted_with, sum(1 for n in lengths if n > max_len), "; ".join(notes),
                    tuple(clipped), max_len)


def _count(recipe: Recipe, path: Path, model_dir: Optional[Path]) -> tuple[int, list[int], str]:
    """Records and sampled token lengths of one data file (see count_file)."""
    counted = count_file(recipe, path, model_dir)
    return counted.count, counted.lengths, counted.counted_with


@dataclass
class Counted:
    count: int  # usable records (estimated from the sample's bad fraction when only a sample was checked)
    lengths: list  # token lengths of up to SAMPLE_ROWS records, unclipped
    counted_with: str  # tokenizer | heuristic
    checked: int  # records read and checked as `recipe run` checks them
    complete: bool  # every record was checked (else a deterministic sample of them)


def _tokenizer_file(model_dir: Optional[Path]) -> Optional[Path]:
    if model_dir is None or not (Path(model_dir) / "tokenizer.json").is_file():
        return None
    return Path(model_dir) / "tokenizer.json" if importlib.util.find_spec("tokenizers") is not None else None


def count_file(recipe: Recipe, path: Path, model_dir: Optional[Path], display: Optional[str] = None,
               need_lengths: bool = True) -> Counted:
    """Records and sampled token lengths of one data file, read with the reader `recipe run` uses.

    Files up to FULL_CHECK_BYTES are read whole and every record is checked: a file `recipe run` would
    refuse (bad records with data.on_error: fail) is refused here too. Larger ones are counted in
    O(bytes) (compiler/datacount.py) and a deterministic sample of SAMPLE_ROWS records is checked and
    tokenized; `recipe run` checks every record before it loads the model. The result is cached on disk
    by the file's sha256, the tokenizer's and the settings that change it (compiler/datacache.py)."""
    display = display or recipe.data.train
    records.check_file(path, display)
    tokenizer_file = _tokenizer_file(model_dir)
    template = recipe.data.template
    settings = dict(version=CACHE_VERSION, format=recipe.data.format, on_error=recipe.data.on_error,
                    system_prompt=recipe.data.system_prompt,
                    template=[template.prompt, template.completion] if template is not None else None,
                    tokenizer=datacache.digest(tokenizer_file) if tokenizer_file else None,
                    sample=SAMPLE_ROWS, full_bytes=FULL_CHECK_BYTES, lengths=need_lengths)
    signature = datacache._signature(path)
    digest = datacache.known_digest(path)
    if digest is not None:
        hit = datacache.get(datacache.key(file=digest, **settings))
        if hit is not None:
            try:
                return Counted(**hit)
            except TypeError:
                pass
    suffix = path.suffix.lower()
    if path.stat().st_size <= FULL_CHECK_BYTES or suffix == ".json":
        scan = None
        rows = records.raw(path, display)
    else:
        if suffix == ".jsonl":
            scan = datacount.jsonl(path, SAMPLE_ROWS, hash_it=digest is None)
        elif suffix == ".csv":
            scan = datacount.csv_rows(path, display, SAMPLE_ROWS)
        else:
            scan = datacount.parquet(path, display, SAMPLE_ROWS)
        rows = scan.rows
        digest = digest or scan.digest
    tokenizer = _tokenizer(model_dir) if need_lengths else None
    good, read, lengths, bad = _check(recipe, rows, tokenizer, need_lengths)
    lengths = lengths if need_lengths else []
    if bad and recipe.data.on_error == "fail":
        where = records.where_word(path)
        message = records.listing(display, bad, where, read)
        if scan is not None:
            message += (f"\n(found in a sample of {read:,} of {scan.count:,} {where}s; `recipe run` checks them all)")
        raise RecipeError(message)
    if scan is None:
        count, complete = good, True
    else:  # the sample's share of bad records, of the whole file's count
        count, complete = scan.count - round(scan.count * len(bad) / max(read, 1)), False
    if not count:
        raise RecipeError(f"{display}: no usable records" + (f" (all {read} were bad)" if read else "")
                          + "; nothing to plan")
    counted = Counted(count, lengths, "tokenizer" if tokenizer_file is not None and need_lengths else "heuristic",
                      read, complete)
    if digest is None:
        digest = datacache.digest(path)
    else:
        datacache.remember_digest(path, digest, signature)
    datacache.put(datacache.key(file=digest, **settings), counted.__dict__)
    return counted


def _check(recipe: Recipe, rows, tokenizer, need_lengths: bool) -> tuple[int, int, list[int], list]:
    """(good records, records read, token lengths of the first SAMPLE_ROWS good ones, [(where, why)] bad)."""
    from .checks import record_check, record_error

    templates = _templates(recipe)
    if templates is not None:
        from jinja2 import TemplateError
    else:
        class TemplateError(Exception):  # jinja2 stays unimported when no template renders
            pass
    convert = record_check(recipe.data.format)
    if templates is not None:  # rendered as `recipe run` renders them: a sandbox refusal or an empty completion is bad
        from .convert import Converter

        convert = Converter("template", recipe.data.template)
    system_prompt = recipe.data.system_prompt
    sample = SAMPLE_ROWS

    def encode(text: str, messages: int) -> int:
        n = (len(tokenizer.encode(text).ids) if tokenizer is not None
             else math.ceil(len(text) / CHARS_PER_TOKEN))
        return n + messages * MESSAGE_OVERHEAD_TOKENS + EXAMPLE_OVERHEAD_TOKENS

    count, read, lengths, bad = 0, 0, [], []
    for lineno, row, error in rows:
        read += 1
        error = record_error(row, error, convert)
        if error is None and recipe.data.format in ("preference", "kto"):  # a pair's longer side
            from .preference import example_lengths

            try:
                if len(lengths) < sample:
                    lengths.append(example_lengths(row, encode) if need_lengths else 0)
            except (ValueError, TypeError, AttributeError) as exc:
                error = f"not a {recipe.data.format} record ({exc})"
            else:
                count += 1
                continue
        elif error is None:
            try:
                text, messages = example_text(row, recipe.data.format, templates, system_prompt) \
                    if len(lengths) < sample and (need_lengths or templates is not None) else (None, 0)
            except TemplateError as exc:
                from .templates import describe

                error = f"template: {describe(exc)}"
            else:
                count += 1
                if text is not None:
                    lengths.append(encode(text, messages) if need_lengths else 0)
                continue
        bad.append((lineno, error))
    return count, read, lengths, bad
