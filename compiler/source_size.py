"""How much data a recipe's sources hold, for planning: hub, saved and mixed sources.

One plain local file is measured by compiler/datasize.py; a list of sources, a glob, a mapping or a
hub / save_to_disk dataset comes here. Local files without a column mapping are measured by
datasize's own per-file count. Hub and saved datasets are sized from their metadata (rows in the
split) and a deterministic sample of SAMPLE_ROWS records, tokenized with the model's tokenizer when
it is local, else characters / 4 (the plan says which). Those measurements are cached under the
source's fingerprint (hub commit, saved dataset state, files' sha256) with the tokenizer's and the
format's settings, so a second plan reads a small JSON file instead of the dataset. `recipe plan`
never downloads: a hub dataset missing from the cache falls back to declared sizes, or is an error.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError
from ..schemas.recipe import Recipe
from . import datacache, datasize, mixture, sources
from .sources import Source

CACHE_VERSION = 2  # 2: max_examples counts usable records, as `recipe run` does
SAMPLE_SEED = 0  # the planning sample does not depend on the training seed


def _tokenizer_id(model_dir: Optional[Path]) -> str:
    path = Path(model_dir) / "tokenizer.json" if model_dir else None
    if path is None or not path.is_file():
        return "heuristic"
    return "tokenizer:" + (datacache.file_sha256(path) or "")


def tokenizer_dir(recipe: Recipe, model_dir: Optional[Path]) -> Optional[Path]:
    """Where the model's tokenizer.json is: the local model directory, or the model's snapshot in the
    local hub cache (a hub id downloaded before); None: count characters / 4."""
    if model_dir is not None:
        return Path(model_dir)
    name = recipe.model.base
    if name.count("/") != 1:
        return None
    found, _ = sources.hub_snapshot(Source("hub", name, name, "chat", ()), repo_type="models",
                                    revision=recipe.model.revision)
    return found if found is not None and (found / "tokenizer.json").is_file() else None


def _encoder(tokenizer):
    def encode(text: str, messages: int) -> int:
        n = len(tokenizer.encode(text).ids) if tokenizer is not None else math.ceil(len(text) / datasize.CHARS_PER_TOKEN)
        return n + messages * datasize.MESSAGE_OVERHEAD_TOKENS + datasize.EXAMPLE_OVERHEAD_TOKENS
    return encode


def converted_length(row: dict, encode) -> int:
    """Tokens of one converted record (what trl trains on)."""
    if "chosen" in row or "label" in row:
        from .preference import example_lengths

        return example_lengths(row, encode)
    if "messages" in row:
        return encode("\n".join(m["content"] for m in row["messages"]), len(row["messages"]))
    if "prompt" in row:
        return encode(f"{row['prompt']}{row['completion']}", 2)
    return encode(row.get("text", ""), 0)


def _cache_key(source: Source, fp: str, recipe: Recipe, tokenizer_id: str) -> str:
    """The measurement's name in the tool's cache (datacache): everything the sampled size depends on."""
    return datacache.key(kind="source-size", v=CACHE_VERSION, fingerprint=fp, format=source.format,
                         columns=source.columns, roles=source.roles, max_examples=source.max_examples,
                         split=source.split, subset=source.subset, data_files=source.data_files,
                         system_prompt=recipe.data.system_prompt, on_error=recipe.data.on_error,
                         template=recipe.data.template.model_dump() if recipe.data.template else None,
                         tokenizer=tokenizer_id, sample=datasize.SAMPLE_ROWS)


def _sampled(source: Source, recipe: Recipe, recipe_dir: Path, tokenizer) -> dict:
    """Count and sampled lengths of a source that datasize does not read by itself."""
    from .convert import Converter

    encode = _encoder(tokenizer)
    convert = Converter(source.format, recipe.data.template, True, recipe.data.system_prompt, dict(source.roles))
    if source.local:  # a glob or a mapped file: read it all (the count is exact), tokenize a sample
        part = mixture.read_source(source, recipe_dir, lambda s: convert, recipe.data.on_error)
        rows = part.rows if len(part.rows) <= datasize.SAMPLE_ROWS else \
            random.Random(SAMPLE_SEED).sample(part.rows, datasize.SAMPLE_ROWS)
        return {"count": len(part.rows), "lengths": [converted_length(r, encode) for r in rows], "sampled": len(rows)}
    opened = sources.open_source(source, recipe_dir, allow_download=False)
    problem = sources.check_columns(source, opened.columns)
    if problem:
        raise RecipeError(f"{source.display}: {problem}")
    total = opened.count if source.max_examples is None else min(opened.count, source.max_examples)
    indices = sorted(random.Random(SAMPLE_SEED).sample(range(total), min(total, datasize.SAMPLE_ROWS)))
    lengths, bad = [], []
    for display, word, number, row, error in opened.rows(indices):
        try:
            lengths.append(converted_length(convert(sources.mapped(row, source)), encode))
        except ValueError as exc:
            bad.append(f"{mixture.location(display, word, number)}: {exc}")
    if bad and recipe.data.on_error == "fail":
        raise RecipeError(f"{source.display}: {len(bad)} bad record(s) in a sample of {len(indices)} (set "
                          f"data.on_error: skip to leave them out)\n" + "\n".join(bad[:20]))
    if not lengths:
        raise RecipeError(f"{source.display}: no usable records in a sample of {len(indices)}")
    usable = round(total * len(lengths) / max(1, len(indices)))
    if source.max_examples is not None and bad:  # `recipe run` reads on past bad records until it has max_examples
        usable = min(source.max_examples, round(opened.count * len(lengths) / max(1, len(indices))))
    return {"count": usable, "lengths": lengths, "sampled": len(indices)}


def _measure_source(source: Source, recipe: Recipe, recipe_dir: Path, model_dir: Optional[Path], tokenizer_id: str,
                    fp: Optional[str]) -> dict:
    if source.kind == "file" and not source.columns and not source.roles and source.format != "sharegpt":
        # datasize's own count of a local file (issue 16 caches and speeds it up)
        data = recipe.data.model_copy(update={"train": source.location, "format": source.format})
        count, lengths, counted_with = datasize._count(recipe.model_copy(update={"data": data}),
                                                       recipe_dir / source.location, model_dir)
        if source.max_examples is not None and count > source.max_examples:
            lengths, count = lengths[: source.max_examples], source.max_examples
        return {"count": count, "lengths": lengths, "counted_with": counted_with, "cached": False}
    name = _cache_key(source, fp, recipe, tokenizer_id) if fp else None
    found = datacache.get(name) if name is not None else None
    if found is not None:
        return {**found, "cached": True}
    tokenizer = datasize._tokenizer(model_dir)
    found = {**_sampled(source, recipe, recipe_dir, tokenizer),
             "counted_with": "tokenizer" if tokenizer is not None else "heuristic"}
    if name is not None:
        datacache.put(name, found)
    return {**found, "cached": False}


def lock_entries(recipe: Recipe, recipe_dir: Path, digest=None) -> dict[str, Optional[str]]:
    """What the lock records per source: a local file's sha256 (as before; `digest`: how it is computed,
    by default by reading the file), or the source's fingerprint (`revision:<commit>`, `saved:<hash>`,
    `files:<hash>`); None when it cannot be found here."""
    digest = digest or datacache.file_sha256
    out = {}
    for key in ("train", "eval"):
        for s in sources.parse(getattr(recipe.data, key), recipe.data.format, key):
            out[s.display] = digest(recipe_dir / s.location) if s.kind == "file" else \
                sources.fingerprint(s, recipe_dir, digest)
    return out


def stale(recipe: Recipe, recipe_dir: Path, recorded: dict) -> list[str]:
    """Sources whose content differs from what the lock recorded."""
    now = lock_entries(recipe, recipe_dir)
    out = []
    for name, digest in recorded.items():
        if name in now and now[name] != digest:
            out.append(f"the data source {name} changed since the plan was made" if ":" in (digest or now[name] or "")
                       else f"the data file {name} changed since the plan was made")
    return out


def measure(recipe: Recipe, recipe_dir: Path, model_dir: Optional[Path]) -> datasize.DataSize:
    """Examples and tokens per example of the training sources, mixed as `recipe run` mixes them."""
    listed = sources.parse(recipe.data.train, recipe.data.format)
    clash = mixture.check_kinds(listed)
    if clash:
        raise RecipeError(f"data.train: {clash[1]}")
    declared_n, declared_t = recipe.data.examples, recipe.data.tokens_per_example
    max_len = recipe.training.max_seq_len
    if declared_n and declared_t:
        return datasize.DataSize(declared_n, float(min(declared_t, max_len)), "declared", 0,
                                 f"declared sizes for {sources.describe(listed)}", (), max_len)
    model_dir = tokenizer_dir(recipe, model_dir)
    tokenizer_id = _tokenizer_id(model_dir)
    measured, notes = [], []
    for s in listed:
        fp = sources.fingerprint(s, recipe_dir, datacache.digest)  # a file remembered by its stat signature
        try:
            measured.append(_measure_source(s, recipe, recipe_dir, model_dir, tokenizer_id, fp))
        except RecipeError as exc:
            if s.kind == "hub" and declared_n and "not in the local hub cache" in exc.message:
                notes.append(exc.message)
                measured.append(None)
                continue
            raise
    if any(m is None for m in measured):
        mean = float(min(declared_t or datasize.DEFAULT_TOKENS_PER_EXAMPLE, max_len))
        if not declared_t:
            notes.append(f"no data.tokens_per_example: assumed {datasize.DEFAULT_TOKENS_PER_EXAMPLE} tokens per "
                         f"example")
        return datasize.DataSize(declared_n, mean, "declared", 0, "; ".join(notes), (), max_len)
    available = [m["count"] for m in measured]
    if recipe.data.eval_fraction:  # held out per source before mixing, as `recipe run` splits
        available = [n - held_out(n, recipe.data.eval_fraction) for n in available]
    drawn = mixture.draw_counts(available, [s.weight for s in listed])
    lengths = _mixed_lengths([m["lengths"] for m in measured], drawn)
    count = sum(drawn)
    how = {m["counted_with"] for m in measured}
    counted_with = how.pop() if len(how) == 1 else "tokenizer" if "tokenizer" in how else "heuristic"
    parts = []
    for s, m, n in zip(listed, measured, drawn):
        sampled = f", sampled {m['sampled']}" if m.get("sampled") else ""
        parts.append(f"{s.display}: {n} of {m['count']}{sampled}{' (cached)' if m.get('cached') else ''}")
    if len(listed) > 1 or not sources.is_plain_file(recipe.data.train):
        notes.append("examples drawn per source: " + "; ".join(parts))
    if declared_n and declared_n != count:
        notes.append(f"data.examples declares {declared_n}; the sources have {count}")
    clipped = [min(n, max_len) for n in lengths]
    if declared_t:
        mean, counted_with, clipped = float(min(declared_t, max_len)), "declared", []
    else:
        mean = sum(clipped) / len(clipped) if clipped else float(min(datasize.DEFAULT_TOKENS_PER_EXAMPLE, max_len))
    return datasize.DataSize(declared_n or count, mean, counted_with, sum(1 for n in lengths if n > max_len),
                             "; ".join(notes), tuple(clipped), max_len)


def held_out(n: int, fraction: float) -> int:
    """Examples runtime.data.split_eval holds out of n."""
    return max(1, round(n * fraction)) if n > 1 else 0


def _mixed_lengths(per_source: list[list[int]], drawn: list[int]) -> list[int]:
    """A sample of the mixture's lengths: each source's sample, in proportion to what it gives."""
    total = sum(drawn)
    if not total:
        return []
    size = min(datasize.SAMPLE_ROWS, total)
    out = []
    for i, (lengths, n) in enumerate(zip(per_source, drawn)):
        k = round(size * n / total)
        if lengths and k:
            out += [lengths[j] for j in mixture.pick(len(lengths), k, SAMPLE_SEED, i)]
    return out
