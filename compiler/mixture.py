"""Mixing sources: how many examples each gives, which ones, and reading them all with located errors.

Without weights every usable example of every source is used (each capped at its `max_examples`,
the first ones of the source). With weights, the mixture has as many examples as the sources
together, shared in proportion to the weights: a source with more than its share is subsampled, one
with fewer is repeated (whole passes, then a sample). Which examples is decided by the seed alone,
so the same recipe and data give the same mixture; the plan and the run report the counts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError
from . import records as records_mod
from .convert import CONVERSATIONAL, Converter
from .sources import Source, check_columns, mapped, open_source


def draw_counts(available: list[int], weights: list[Optional[float]]) -> list[int]:
    """Examples drawn from each source (largest-remainder rounding of the weighted shares)."""
    if not weights or any(w is None for w in weights):
        return list(available)
    top = max(weights)
    shares = [w / top for w in weights]  # at most 1 each: huge weights (1e308) neither overflow nor vanish
    total, share_sum = sum(available), sum(shares)
    exact = [total * s / share_sum for s in shares]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))[: total - sum(counts)]:
        counts[i] += 1
    return [c if a else 0 for c, a in zip(counts, available)]


def pick(available: int, drawn: int, seed: int, index: int) -> list[int]:
    """Which of a source's examples are drawn (indices, in order, repeated when drawn > available)."""
    if drawn == available:
        return list(range(available))
    if not available:
        return []
    rng = random.Random(f"mixture:{seed}:{index}")
    whole, rest = divmod(drawn, available)
    return sorted(list(range(available)) * whole + rng.sample(range(available), rest))


def kind_of(fmt: str) -> str:
    """What a format's records become for training; sources of different kinds cannot be mixed."""
    if fmt in CONVERSATIONAL:
        return "conversations"
    return {"template": "prompt_completion"}.get(fmt, fmt)


def check_kinds(sources: list[Source]) -> Optional[tuple[Source, str]]:
    first = sources[0]
    for s in sources[1:]:
        if kind_of(s.format) != kind_of(first.format):
            return s, (f"{s.display}: format '{s.format}' cannot be mixed with {first.display} (format "
                       f"'{first.format}'): chat, sharegpt and alpaca mix (all are conversations); the others only "
                       f"with their own format")
    return None


@dataclass
class SourceRows:
    source: Source
    rows: list = field(default_factory=list)  # converted, in trl's format
    read: int = 0
    problems: list = field(default_factory=list)  # (location, message)

    def report(self, drawn: int) -> dict:
        return {"source": self.source.display, "format": self.source.format, "read": self.read,
                "skipped": len(self.problems), "usable": len(self.rows), "drawn": drawn,
                "weight": self.source.weight}


def location(display: str, word: str, number: int) -> str:
    return f"{display}:{number}" if word == "line" else f"{display} {word} {number}"


def read_source(source: Source, recipe_dir: Path, converter_for, on_error: str, limit: Optional[int] = None,
                allow_download: bool = True) -> SourceRows:
    """Every record of a source, mapped and converted; bad ones located. RecipeError when on_error is
    fail and some are bad, or when none is usable."""
    opened = open_source(source, recipe_dir, allow_download)
    if opened.columns is not None:
        problem = check_columns(source, opened.columns)
        if problem:
            raise RecipeError(f"{source.display}: {problem}")
    convert: Converter = converter_for(source)
    out = SourceRows(source)
    cap = source.max_examples
    for display, word, number, row, error in opened.rows():
        if limit is not None and out.read >= limit:
            break
        if cap is not None and len(out.rows) >= cap:
            break
        out.read += 1
        if error is None and opened.columns is None and isinstance(row, dict):  # a file: its first record's keys
            opened.columns = list(row)
            if source.columns and (problem := check_columns(source, opened.columns)):
                raise RecipeError(f"{source.display}: {problem} (in {location(display, word, number)})")
        if error is None:
            try:
                out.rows.append(convert(mapped(row, source)))
                continue
            except ValueError as exc:
                error = str(exc)
        out.problems.append((location(display, word, number), error))
    if out.problems and on_error == "fail":
        shown = [f"{where}: {message}" for where, message in out.problems[: records_mod.MAX_LISTED]]
        if len(out.problems) > len(shown):
            shown.append(f"... and {len(out.problems) - len(shown)} more")
        raise RecipeError(f"{source.display}: {len(out.problems)} bad record(s) of {out.read} (set data.on_error: "
                          f"skip to leave them out)\n" + "\n".join(shown))
    if not out.rows:
        first = f"; {out.problems[0][0]}: {out.problems[0][1]}" if out.problems else ""
        sampled = " in the first" if limit is not None and out.read >= limit else ""
        raise RecipeError(f"{source.display}: no usable records" +
                          (f" (all{sampled} {out.read} were bad{first})" if out.read else ""))
    return out


def mix(parts: list[SourceRows], seed: int) -> tuple[list, list[dict]]:
    """The mixture's rows (sources in order) and what each source gave."""
    counts = draw_counts([len(p.rows) for p in parts], [p.source.weight for p in parts])
    rows, report = [], []
    for i, (part, n) in enumerate(zip(parts, counts)):
        rows += [part.rows[j] for j in pick(len(part.rows), n, seed, i)]
        report.append(part.report(n))
    if not rows:
        raise RecipeError("the data mixture is empty: no source gave an example")
    return rows, report
