"""`recipe plan --compare`: the same recipe across 2-4 sizes of its model family.

Each size is the recipe with ``model.base`` overridden (as ``--set model.base=...`` would), planned
in full: training method, GPU and cost within the recipe's budget, then serving cost and break-even
from its ``economics:`` section. The recipe's own model takes the place of the rung of its size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError, UsageError
from ..schemas.money import usd
from ..schemas.plan import Economics
from . import models

# (family, how its catalog names look, the rungs: 1B, 3B, 8B and 70B class where the family has them)
LADDERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Qwen3", r"^Qwen/Qwen3-", (
        "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-32B")),
    ("Llama 3", r"^meta-llama/(Meta-)?Llama-3", (
        "meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
        "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct")),
    ("Gemma 3", r"^google/gemma-3-", (
        "google/gemma-3-1b-it", "google/gemma-3-4b-it", "google/gemma-3-12b-it", "google/gemma-3-27b-it")),
    ("gpt-oss", r"^openai/gpt-oss-", ("openai/gpt-oss-20b", "openai/gpt-oss-120b")),
    ("Mistral", r"^mistralai/(Mistral|Ministral)-", (
        "mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Ministral-8B-Instruct-2410",
        "mistralai/Mistral-Small-24B-Instruct-2501")),
    ("Phi-4", r"^microsoft/(P|p)hi-4", ("microsoft/Phi-4-mini-instruct", "microsoft/phi-4")),
    ("OLMo 2", r"^allenai/O(LMo|lmo)-", (
        "allenai/OLMo-2-0425-1B", "allenai/OLMo-2-1124-7B", "allenai/OLMo-2-1124-13B", "allenai/OLMo-2-0325-32B")),
    ("Granite 3", r"^ibm-granite/granite-3", (
        "ibm-granite/granite-3.3-2b-instruct", "ibm-granite/granite-3.3-8b-instruct")),
    ("Qwen2.5", r"^Qwen/Qwen2\.5-", (
        "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
        "Qwen/Qwen2.5-72B-Instruct")),
    ("Gemma 2", r"^google/gemma-2-", ("google/gemma-2-2b-it", "google/gemma-2-9b-it", "google/gemma-2-27b-it")),
    ("Phi-3", r"^microsoft/Phi-3-", ("microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3-medium-4k-instruct")),
    ("Llama 2", r"^meta-llama/Llama-2-", (
        "meta-llama/Llama-2-7b-chat-hf", "meta-llama/Llama-2-13b-chat-hf", "meta-llama/Llama-2-70b-chat-hf")),
)
SAME_CLASS = 0.30  # the recipe's model replaces a rung within 30% of its parameter count


@dataclass(frozen=True)
class Row:
    model: str
    parameters: Optional[int] = None
    own: bool = False  # the recipe's own model
    fits: bool = False  # training fits the recipe's budget
    memory_fits: bool = True  # some option holds the training step, within budget or not
    method: Optional[str] = None
    training_gpu: Optional[str] = None  # "1 x L4"
    training_hours: Optional[float] = None
    training_usd: Optional[float] = None
    economics: Optional[Economics] = None
    error: Optional[str] = None

    def to_dict(self) -> dict:
        e = self.economics
        s = e.serving if e else None
        return {
            "model": self.model, "parameters": self.parameters, "recipe_model": self.own, "fits_budget": self.fits,
            "training_fits_memory": self.memory_fits,
            "method": self.method, "training_gpu": self.training_gpu, "training_hours": self.training_hours,
            "training_usd": self.training_usd,
            "serving": None if s is None else {"gpu": s.gpu, "gpus_per_replica": s.gpus_per_replica,
                                               "replicas": s.replicas, "quantization": s.quantization,
                                               "usd_per_mtok_at_capacity": s.usd_per_mtok_at_capacity},
            "self_hosted_monthly_usd": e.self_hosted_monthly_usd if e else None,
            "api_monthly_usd": e.api_monthly_usd if e else None,
            "one_time_usd": e.one_time_usd if e else None,
            "monthly_saving_usd": e.monthly_saving_usd if e else None,
            "break_even_days": e.break_even_days if e else None,
            "verdict": e.verdict if e else None,
            "error": self.error,
        }


@dataclass(frozen=True)
class Comparison:
    recipe: str
    name: str
    family: str
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)

    @property
    def api(self) -> Optional[Economics]:
        return next((r.economics for r in self.rows if r.economics is not None), None)

    def to_dict(self) -> dict:
        e = self.api
        return {"recipe": self.recipe, "name": self.name, "family": self.family,
                "api": None if e is None else {"model": e.api.model, "monthly_usd": e.api_monthly_usd,
                                               "usd_per_mtok": e.api.usd_per_mtok,
                                               "requests_per_day": e.requests_per_day},
                "rows": [r.to_dict() for r in self.rows], "warnings": self.warnings}


def ladder_for(model_name: str) -> tuple[str, list[str]]:
    """The family and its rungs, with the recipe's own model in place of the rung of its size."""
    for family, pattern, rungs in LADDERS:
        if re.search(pattern, model_name):
            break
    else:
        names = ", ".join(f for f, _, _ in LADDERS)
        raise UsageError(f"--compare: no size ladder for '{model_name}'; it knows the catalog families "
                         f"{names}. Compare other models with `recipe plan --set model.base=...`")
    own = _params(model_name)
    out = list(rungs)
    if model_name not in out:
        nearest = min(range(len(out)), key=lambda i: abs(math.log(_params(out[i]) / own)))
        if abs(_params(out[nearest]) - own) <= SAME_CLASS * own:
            out[nearest] = model_name
        else:
            out = sorted(out + [model_name], key=_params)
    return family, out


def _params(name: str) -> float:
    entry = models.catalog_entry(name)
    if entry is None or not entry.get("published_params"):
        raise UsageError(f"--compare: '{name}' is not in the model catalog")
    return float(entry["published_params"])


def _compile(path: str, overrides: list[str], source=None):
    """compile_file without printing validation warnings (they would repeat once per size). `source`:
    the recipe as read once (compiler/load.py's Document), copied for each size so that the file is
    read and parsed once however many sizes are planned."""
    import copy

    from .load import read
    from .overrides import apply
    from .planner import compile_plan
    from .validate import problem_order, validate

    doc = copy.deepcopy(source if source is not None else read(Path(path), display=path))
    misplaced = apply(doc, list(overrides))
    result = validate(doc, base_dir=Path(path).resolve().parent)
    problems = sorted(misplaced + result.problems, key=problem_order)
    if misplaced or not result.ok:
        raise RecipeError(f"{path}: invalid recipe", problems)
    return compile_plan(result.recipe, Path(path), doc, tuple(overrides)), [str(w) for w in result.warnings]


def _row(compiled, own: bool) -> Row:
    p = compiled.plan
    return Row(model=p.model.name, parameters=p.model.parameters, own=own, fits=compiled.exit_code == 0,
               memory_fits=p.memory.required_bytes <= p.memory.capacity_bytes,
               method=p.method, training_gpu=f"{p.hardware.count} x {p.hardware.gpu}", training_hours=p.time.hours,
               training_usd=p.cost.usd, economics=p.economics)


def compare(path: str, overrides: list[str] = ()) -> Comparison:
    """Plan the recipe at each size of its family. Raises RecipeError when the recipe itself is invalid."""
    from .load import read

    overrides = list(overrides)
    source = read(Path(path), display=path)  # read and parsed once, for every size
    first, warnings = _compile(path, overrides, source)
    plan = first.plan
    if plan.economics is None:
        raise UsageError("--compare needs an economics: section in the recipe (api_model, requests_per_day, "
                         "input_tokens_per_request, output_tokens_per_request) to price serving and break-even")
    if plan.model.source != "catalog":
        raise UsageError(f"--compare needs a catalog model; model.base is the local directory {plan.model.name}")
    family, rungs = ladder_for(plan.model.name)
    rows = []
    for name in rungs:
        if name == plan.model.name:
            rows.append(_row(first, own=True))
            continue
        try:
            compiled, _ = _compile(path, overrides + [f"model.base={name}"], source)
        except RecipeError as exc:
            detail = "; ".join(f"{p.key}: {p.message}" for p in exc.problems) or exc.message
            rows.append(Row(model=name, parameters=int(_params(name)), error=detail))
            continue
        rows.append(_row(compiled, own=False))
    return Comparison(recipe=path, name=plan.name, family=family, rows=rows, warnings=warnings)


# --------------------------------------------------------------------------- rendering


def _params_label(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 1e9:.1f}B"


def serving_label(e: Optional[Economics]) -> str:
    """"L4", "3 x L4", "4 x RTX-A6000", "2 x (4 x RTX-A6000)", plus the quantization when not bf16."""
    if e is None or e.serving is None:
        return "none holds it"
    s = e.serving
    label = s.gpu if s.gpus_per_replica == 1 else f"{s.gpus_per_replica} x {s.gpu}"
    if s.replicas > 1:
        label = f"{s.replicas} x " + (label if s.gpus_per_replica == 1 else f"({label})")
    return label + ("" if s.quantization == "none" else f", {s.quantization}")


def _break_even(e: Optional[Economics]) -> str:
    if e is None or e.break_even_days is None:
        return "never"
    d = e.break_even_days
    return f"{d:.2f} days" if d < 1 else f"{d:,.1f} days"


def _verdict(r: Row) -> str:
    e = r.economics
    if r.error:
        return f"error: {r.error}"
    if e is None:
        return "-"
    if e.serving is None:
        return "cannot self-host"
    if e.break_even_days is None:
        return "never pays back"
    days = e.break_even_days
    when = "under a day" if days < 1 else f"{math.ceil(days - 1e-9)} days"
    return f"pays back in {when}" + ("" if days <= 60 else " (over 60)")


def _at_load(e: Optional[Economics]) -> str:
    if e is None or e.serving is None:
        return "-"
    return usd(e.serving.usd_per_mtok_at_capacity)


HEADERS = ("model", "params", "method", "training on", "training $", "serving on", "serving $/month",
           "$/M tok at full load", "break-even", "verdict")
RIGHT = ("params", "training $", "serving $/month", "$/M tok at full load", "break-even")


def table_rows(c: Comparison) -> list[tuple[str, ...]]:
    out = []
    for r in c.rows:
        e = r.economics
        name = r.model.split("/")[-1] + (" (recipe)" if r.own else "")
        if r.error:
            out.append((name, _params_label(r.parameters), "-", "-", "-", "-", "-", "-", "-", _verdict(r)))
            continue
        method = (r.method or "-") + ("" if r.fits else " (over budget)" if r.memory_fits else " (nothing fits)")
        out.append((name, _params_label(r.parameters), method, r.training_gpu if r.memory_fits else "-",
                    usd(r.training_usd), serving_label(e), usd(e.self_hosted_monthly_usd if e else None),
                    _at_load(e), _break_even(e), _verdict(r)))
    return out


def header_line(c: Comparison) -> str:
    e = c.api
    return (f"{c.name}: {c.family} sizes, {e.requests_per_day:,} requests/day x ({e.input_tokens_per_request:,} in + "
            f"{e.output_tokens_per_request:,} out) tokens; API {e.api.model} {usd(e.api_monthly_usd)}/month "
            f"({usd(e.api.usd_per_mtok)} per M tokens)")


FOOTNOTE = ("each row is the recipe with model.base set to that model, planned within its budget; serving, "
            "one-time cost and break-even as in `recipe plan` (assumptions: --format json, economics.assumptions)")


def render_text(c: Comparison) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    console.print(header_line(c))
    table = Table(show_edge=False, pad_edge=False)
    for h in HEADERS:
        table.add_column(h, justify="right" if h in RIGHT else "left")
    for row in table_rows(c):
        table.add_row(*row)
    console.print(table)
    console.print(FOOTNOTE)


def render_markdown(c: Comparison) -> str:
    lines = [f"### Compare: `{c.name}`", "", header_line(c), "", "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join("---:" if h in RIGHT else "---" for h in HEADERS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(c)]
    lines += ["", FOOTNOTE]
    return "\n".join(lines) + "\n"
