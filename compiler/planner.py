"""recipe -> Plan, in passes (compile_plan reads as the list):

    resolve_model   recipe -> Resolved        the model and its architecture, the step's base shape
    size_data       Resolved -> Workload      examples and tokens: what one option trains on
    option_space    Workload -> Search        the GPU types, counts, methods and strategies to compare
    estimate        Search -> list[Option]    per option: the fastest step that fits, its hours and dollars
    choose          options -> Choice         the cheapest within budget (or the closest, with suggestions)
    price           Choice -> Pricing         the plan's cost and its economics section
    explain         Choice -> Explanation     decisions with reasons, alternatives, warnings, the build
    assemble        all of the above -> Plan
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from .. import __version__
from ..schemas.plan import (Adapter, Alternative, BuildPlan, CostPlan, DataPlan, Decision, DistributedPlan, Economics,
                            Hardware, Lock, Memory, ModelInfo, Plan, PreferencePlan, TimePlan, TrainingPlan)
from ..schemas.recipe import BudgetSpec, Recipe
from . import build as build_mod
from . import calibration, catalogs, datacache, datasize, economics, hardware, memory, models, preference, source_size, sources, timing
from .architecture import Architecture, attention_implementations, parameter_count, parameter_targets
from .choose import LORA_MARGIN, Option, price_option, rank_key
from ..schemas.errors import Problem, RecipeError
from ..schemas.money import usd
from .load import Document

EXIT_NOTHING_FITS = 3
PURE_BF16_CAVEAT = (
    "training.precision bf16-pure: weights, gradients and AdamW moments in bf16 with no fp32 master copy "
    "(8 bytes per parameter, as the HF Trainer runs a model loaded in bf16); an update smaller than bf16's "
    "resolution (about 1/256 of the weight) is rounded away, so small learning rates and long runs can stall "
    "or drift from a mixed-precision run: compare the loss curve with a bf16 run when it matters")


@dataclass(frozen=True)
class Compiled:
    plan: Plan
    exit_code: int  # 0, or 3 when nothing fits the budget
    suggestions: list[str]


def _located(doc: Optional[Document], path: tuple, message: str) -> RecipeError:
    if doc is None:
        return RecipeError(message)
    file, line, col = doc.where(path, value=True)
    key = ".".join(path)
    return RecipeError(message, [Problem(file, line, col, key, message.removeprefix(f"{key}: "))])


def _raise_all(errors: list[RecipeError]) -> None:
    """Every recipe mistake found, at once: one RecipeError carrying all their problems."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        problems = [p for e in errors for p in e.problems]
        raise RecipeError("; ".join(e.message for e in errors), problems if len(problems) == len(errors) else [])


def _targets(recipe: Recipe):
    t = recipe.method.targets
    return "all-linear" if t == "all-linear" else tuple(t)


MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja")


def model_hashes(model_dir: Optional[Path], recipe_dir: Path) -> dict:
    """sha256 of a local model's config and tokenizer files (by path relative to the recipe's folder
    where it is inside it): editing them makes a plan lock stale."""
    if model_dir is None:
        return {}
    out = {}
    for name in MODEL_FILES:
        path = Path(model_dir) / name
        if path.is_file():
            try:
                key = str(path.resolve().relative_to(recipe_dir))
            except ValueError:
                key = str(path.resolve())
            out[key] = datacache.file_sha256(path)
    return out


def compile_plan(recipe: Recipe, recipe_path: Path, doc: Optional[Document] = None,
                 overrides: tuple = ()) -> Compiled:
    """The passes in order (the module docstring lists what each takes and gives)."""
    resolved = resolve_model(recipe, recipe_path, doc)
    workload = size_data(recipe, recipe_path, resolved)
    search = option_space(recipe, recipe_path, resolved, workload, doc)
    options = estimate(search)
    choice = choose(recipe, search, options)
    pricing = price(recipe, resolved, choice)
    explanation = explain(recipe, resolved, workload, search, choice)
    plan = assemble(recipe, recipe_path, overrides, resolved, workload, search, choice, pricing, explanation)
    return Compiled(plan, 0 if choice.feasible else EXIT_NOTHING_FITS, choice.suggestions)


# --------------------------------------------------------------------------- resolve the model


@dataclass(frozen=True)
class Resolved:
    model: models.ResolvedModel
    targeted: list  # the modules the adapter wraps ([] for full fine-tuning)
    base: memory.StepShape  # the step every option starts from (micro batch and checkpointing not chosen yet)

    @property
    def arch(self) -> Architecture:
        return self.model.architecture


def resolve_model(recipe: Recipe, recipe_path: Path, doc: Optional[Document]) -> Resolved:
    """The model, the modules the method targets, and checks that need the architecture."""
    recipe_dir = recipe_path.resolve().parent
    try:
        model = models.resolve_model(recipe.model.base, recipe_dir)
    except RecipeError as exc:
        raise _located(doc, ("model", "base"), exc.message) from None
    arch = model.architecture
    errors: list[RecipeError] = []  # every mistake the architecture reveals, reported together
    if recipe.training.precision == "bf16-pure" and recipe.distributed.strategy == "deepspeed":
        errors.append(_located(doc, ("training", "precision"),
                               "training.precision bf16-pure cannot run under DeepSpeed: its bf16 mode keeps fp32 "
                               "master weights in the optimizer; use distributed.strategy fsdp (or auto), or "
                               "precision bf16"))
    targeted = []
    try:
        targeted = [] if recipe.method.name == "full" else memory.resolve_targets(arch, _targets(recipe))
        if recipe.method.name != "full" and not targeted and not parameter_targets(arch):
            # e.g. GPT-2's Conv1D projections: peft would adapt them, but nothing here sizes them, and a plan
            # of 0 trainable parameters is not the run peft would make
            errors.append(_located(doc, ("method", "name"), (
                f"method.name: a {arch.family} model has no nn.Linear module in its decoder layers for LoRA, "
                f"QLoRA or DoRA to adapt (its projections are another module type, such as GPT-2's Conv1D); use "
                f"method.name full, or another model")))
    except RecipeError as exc:
        errors.append(_located(doc, ("method", "targets"), exc.message))

    t = recipe.training
    quant = recipe.method.quantization
    try:
        _check_attention(arch, recipe, doc)
    except RecipeError as exc:
        errors.append(exc)
    methods_to_check = ["lora", "qlora"] if recipe.method.name == "auto" else [recipe.method.name]
    for m in methods_to_check:
        refused = build_mod.peft_refuses(arch, m, _targets(recipe), recipe.method.dropout)
        if refused:
            errors.append(_located(doc, tuple(refused[0].split(".")), refused[1]))
            break
    _raise_all(errors)
    base = memory.StepShape(
        method="lora", rank=recipe.method.rank, dropout=recipe.method.dropout, targets=_targets(recipe),
        seq_len=t.max_seq_len, optimizer=t.optimizer, precision=t.precision,
        attention=memory.attention_for(arch, t.attention, t.packing),
        quant_bits=quant.bits if quant else 4, double_quant=quant.double_quant if quant else True,
        zero_stage=recipe.distributed.zero_stage, cpu_offload=recipe.distributed.cpu_offload,
        **preference.settings(recipe))
    return Resolved(model, targeted, base)


# --------------------------------------------------------------------------- size the data


@dataclass(frozen=True)
class Workload:
    """The data as training will see it: examples, tokens, rows."""

    size: datasize.DataSize
    packing: bool
    epochs: float
    max_steps: Optional[int]
    batch_size: int
    max_seq_len: int
    attention: str
    packed_rows: int  # 0 unless packing
    pairs: int  # sequences per example (2 for preference pairs)

    def train_tokens(self, mbs: int) -> float:
        """Tokens computed in training. Unpacked: each example padded to the longest of its micro
        batch. Packed (trl's padding-free "bfd"): the examples' own tokens, in rows of up to
        max_seq_len; max_steps then counts rows, not examples."""
        size = self.size
        if self.packing:
            rows = self.packed_rows
            per_row = size.examples * size.tokens_per_example / max(rows, 1)
            sequences, per_sequence = rows * self.epochs, per_row
        else:
            # preference pairs: chosen and rejected (or completion and KL completion) both run
            sequences = size.examples * self.epochs * self.pairs
            per_sequence = size.padded_tokens_per_example(mbs)
        if self.max_steps:
            sequences = min(sequences, self.max_steps * self.batch_size * (1 if self.packing else self.pairs))
        return sequences * per_sequence

    def rows(self, mbs: int) -> timing.Rows:
        """The time model's rows: packed rows are full (attention per example under varlen
        flash-attention, across the row otherwise); unpacked rows padded to the micro batch's longest."""
        size = self.size
        if self.packing:  # trl's "bfd" rows: as long as the examples packed into them
            per_row = min(size.examples * size.tokens_per_example / max(self.packed_rows, 1), self.max_seq_len)
            per_example = size.tokens_per_example if self.attention == "flash_attention_2" else per_row
            return timing.Rows(per_row, min(per_example, per_row))
        length = size.padded_tokens_per_example(mbs)
        return timing.Rows(length, length)


def size_data(recipe: Recipe, recipe_path: Path, resolved: Resolved) -> Workload:
    """Count the examples and their tokens (the model's tokenizer where there is one)."""
    t = recipe.training
    size = datasize.measure(recipe, recipe_path.resolve().parent, resolved.model.path)
    return Workload(size=size, packing=t.packing, epochs=t.epochs, max_steps=t.max_steps, batch_size=t.batch_size,
                    max_seq_len=t.max_seq_len, attention=resolved.base.attention,
                    packed_rows=size.packed_rows() if t.packing else 0,
                    pairs=preference.sequences_per_example(resolved.base.objective))


# --------------------------------------------------------------------------- enumerate and estimate options


@dataclass(frozen=True)
class Search:
    """What the options range over, and how one is estimated."""

    arch: Architecture
    base: memory.StepShape
    workload: Workload
    gpus: list[hardware.Candidate]
    counts: list[int]
    methods: list[str]
    strategies: list[str]
    auto: bool  # method: auto
    pinned_mbs: Optional[int]
    pinned_gc: Optional[bool]
    budget: BudgetSpec
    calibration: Optional[calibration.Calibration]

    def option(self, gpu: hardware.Candidate, count: int, method: str, margin: float = 1.0, shape: Optional[memory.StepShape] = None,
               strategy: str = "single") -> Option:
        """One option estimated: the fastest step that fits, its hours and dollars, within budget or not."""
        b = self.budget
        return price_option(self.arch, shape or self.base, gpu, count, method, self.workload.batch_size,
                            self.workload.train_tokens, self.pinned_mbs, self.pinned_gc, b.max_cost_usd,
                            b.max_hours, margin, strategy, math.ceil(count / b.gpus_per_node), self.workload.rows,
                            self.calibration.factor if self.calibration else None)


def option_space(recipe: Recipe, recipe_path: Path, resolved: Resolved, workload: Workload,
                 doc: Optional[Document]) -> Search:
    """The candidate GPUs (catalog and budget), counts, methods and strategies; the project's calibration."""
    try:
        calib = calibration.find(recipe_path.resolve().parent)
    except RecipeError as exc:
        raise _located(doc, ("budget",), exc.message) from None
    gpus = hardware.candidates(recipe.budget)
    if not gpus:
        raise _located(doc, ("budget",), "no GPU to plan for: budget.gpus names none the catalog prices; "
                                          "give budget.prices or budget.custom_gpus")
    b, t, d = recipe.budget, recipe.training, recipe.distributed
    limit = min(b.max_gpus, b.nodes * b.gpus_per_node)
    auto = recipe.method.name == "auto"
    return Search(
        arch=resolved.arch, base=resolved.base, workload=workload, gpus=gpus,
        counts=[b.gpu_count] if b.gpu_count else [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= limit],
        methods=["lora", "qlora"] if auto else [recipe.method.name],
        strategies=["ddp", "fsdp"] if d.strategy == "auto" else [d.strategy], auto=auto,
        pinned_mbs=t.micro_batch_size if isinstance(t.micro_batch_size, int) else None,
        pinned_gc=t.gradient_checkpointing if isinstance(t.gradient_checkpointing, bool) else None,
        budget=b, calibration=calib)


def estimate(search: Search) -> list[Option]:
    """Every GPU x method x count x strategy, estimated (LoRA under `method: auto` with a margin)."""
    return [search.option(g, n, m, LORA_MARGIN if (search.auto and m == "lora") else 1.0, strategy=st)
            for g in search.gpus for m in search.methods for n in search.counts
            for st in (search.strategies if n > 1 else ["single"])]


# --------------------------------------------------------------------------- choose


@dataclass(frozen=True)
class Choice:
    chosen: Option
    options: list[Option]
    feasible: bool  # something fits within the budget; else `chosen` is the closest
    suggestions: list[str]


def choose(recipe: Recipe, search: Search, options: list[Option]) -> Choice:
    """The cheapest option within budget (`method: auto`: LoRA on that hardware when it fits with
    margin); when none is, the closest, with what would fit."""
    feasible = sorted((o for o in options if o.within_budget), key=rank_key)
    if feasible:
        return Choice(_prefer_lora(feasible) if search.auto else feasible[0], options, True, [])
    return Choice(_closest(options), options, False,
                  _suggest(recipe, search.base, search.gpus, options, search.option))


# --------------------------------------------------------------------------- price


@dataclass(frozen=True)
class Pricing:
    cost: CostPlan
    economics: Optional[Economics]


def price(recipe: Recipe, resolved: Resolved, choice: Choice) -> Pricing:
    """The chosen option's training cost, and the economics against the API it would replace."""
    chosen, rented = choice.chosen, choice.chosen.rental
    cost = CostPlan(usd=round(chosen.usd, 2) if chosen.usd is not None else None,
                    usd_per_hour=round(rented.usd_per_hour, 4) if rented is not None else None)
    total = parameter_count(resolved.arch).total
    return Pricing(cost, economics.plan_section(recipe, total, chosen.usd, choice.feasible))


# --------------------------------------------------------------------------- helpers: checks, choice, suggestions


def _check_attention(arch, recipe: Recipe, doc: Optional[Document]) -> None:
    """Only an attention the family's transformers class has; packing only where packed examples
    cannot see each other (varlen flash-attention: trl's padding-free rows)."""
    t = recipe.training
    supported = attention_implementations(arch)
    if t.attention != "auto" and t.attention not in supported:
        raise _located(doc, ("training", "attention"),
                       f"training.attention: transformers has no {t.attention} attention for {arch.family} models; "
                       f"use one of {', '.join(supported)} (or auto)")
    if t.packing and t.attention in ("sdpa", "eager"):
        raise _located(doc, ("training", "packing"),
                       f"training.packing: with {t.attention} attention a packed example attends to the examples "
                       f"packed before it in the same row (transformers builds one causal mask per row, even with "
                       f"position_ids); packing needs training.attention: flash_attention_2 (trl's padding-free rows, "
                       f"varlen kernels keep examples apart, CUDA GPU with flash-attn installed), or set "
                       f"training.packing: false")


def _prefer_lora(feasible: list[Option]) -> Option:
    """`method: auto`: the cheapest hardware, then LoRA on it when it fits with margin, else QLoRA."""
    best = feasible[0]
    same_hardware = [o for o in feasible if o.gpu == best.gpu and o.count == best.count]
    return next((o for o in same_hardware if o.method == "lora"), best)


def _distributed(recipe: Recipe, chosen: Option) -> DistributedPlan:
    count, strategy = chosen.count, chosen.strategy
    if count == 1:
        return DistributedPlan(strategy="single", processes=1)
    nodes = math.ceil(count / recipe.budget.gpus_per_node)
    return DistributedPlan(strategy=strategy, processes=count, nodes=nodes, gpus_per_node=count // nodes,
                           zero_stage=recipe.distributed.zero_stage if strategy == "deepspeed" else None,
                           cpu_offload=recipe.distributed.cpu_offload and strategy in ("fsdp", "deepspeed"))


def _closest(options: list[Option]) -> Option:
    fitting = [o for o in options if o.fits]
    if fitting:
        return sorted(fitting, key=rank_key)[0]
    runnable = [o for o in options if o.runnable] or options  # a GPU the stack cannot use is never "closest"
    return min(runnable, key=lambda o: o.memory.required_bytes - o.gpu.memory_bytes)


def _suggest(recipe: Recipe, base, gpus, options, option) -> list[str]:
    """What would fit: the knob to turn, nearest first."""
    out = []
    fitting = sorted((o for o in options if o.fits), key=rank_key)
    if fitting:
        o = fitting[0]
        if o.usd is None and (recipe.budget.max_hours is None or o.time.hours <= recipe.budget.max_hours):
            budget = recipe.budget  # only the missing price stands in the way: max_cost_usd cannot help
            price = f"{'spot ' if budget.spot else ''}price" + (f" at {budget.provider}" if budget.provider else "")
            others = [k for k, on in (("drop budget.spot", budget.spot), ("price at another budget.provider",
                                                                          budget.provider)) if on]
            out.append(f"{o.method.upper()} on {o.count} x {o.gpu.name} fits in {o.time.hours:.1f} h, but the "
                       f"catalog has no {price} for {o.gpu.name}: give budget.prices ({o.gpu.name}: USD per GPU-hour)"
                       + "".join(f", or {k}" for k in others))
        else:
            cost = "no price" if o.usd is None else usd(o.usd)
            out.append(f"{o.method.upper()} on {o.count} x {o.gpu.name} fits but takes {o.time.hours:.1f} h and "
                       f"{cost}: raise budget.max_cost_usd / budget.max_hours")
        return out
    method = recipe.method.name
    if method in ("lora", "dora", "full", "auto"):
        quantized = "qdora" if method == "dora" else "qlora"
        for g in gpus:
            o = option(g, 1, quantized)
            if o.fits:
                out.append(f"{quantized.upper()} on {g.name} fits (method.name: {quantized})")
                break
    names = {g.name for g in gpus}
    others = [c for c in hardware.candidates(recipe.budget.model_copy(update={"gpus": None, "gpu": None})) if c.name not in names]
    tried = ["qlora"] if method == "auto" else [method]
    for m in tried:
        fits = sorted((option(g, 1, m) for g in others), key=lambda o: (not o.fits, _hourly(o.gpu)))
        if fits and fits[0].fits:
            out.append(f"{m.upper()} fits on {fits[0].gpu.name}, which is not among your candidate GPUs "
                       f"(budget.gpus / budget.gpu)")
            break
    out += _offload(recipe, base, gpus, option)
    cheapest = min(gpus, key=_hourly)
    seq = recipe.training.max_seq_len // 2
    m = "qlora" if method == "auto" else method
    while seq >= 128:
        o = option(cheapest, 1, m, shape=replace(base, seq_len=seq))
        if o.fits:
            out.append(f"max_seq_len {seq} fits on {cheapest.name} with {m.upper()} (training.max_seq_len: {seq})")
            break
        seq //= 2
    if recipe.training.gradient_checkpointing is False:
        out.append("gradient_checkpointing: true would free most activation memory")
    return out or ["nothing in the catalog holds this model for training; try a smaller base model"]


def _hourly(gpu: hardware.Candidate) -> float:
    """What one GPU of this type costs per hour to rent (a whole instance where the cheapest is one)."""
    rented = gpu.rent(1)
    return rented.usd_per_hour if rented is not None else 1e9


def _offload(recipe: Recipe, base, gpus, option) -> list[str]:
    """CPU offload of the sharded optimizer states and weights (FSDP offload, ZeRO-3 offload): the
    cheapest that fits among the candidate GPUs and counts, with what it costs in time."""
    if recipe.distributed.cpu_offload:
        return []  # already asked for, and it did not fit
    b = recipe.budget
    limit = min(b.max_gpus, b.nodes * b.gpus_per_node)
    counts = [b.gpu_count] if b.gpu_count else [n for n in (2, 4, 8, 16, 32, 64) if n <= limit]
    method = "qlora" if recipe.method.name == "auto" else recipe.method.name
    shape = replace(base, cpu_offload=True, zero_stage=3)
    found = []
    for strategy, label, knobs in (("fsdp", "FSDP with CPU offload", "distributed.strategy: fsdp"),
                                   ("deepspeed", "DeepSpeed ZeRO-3 with CPU offload",
                                    "distributed.strategy: deepspeed, distributed.zero_stage: 3")):
        fits = [o for o in (option(g, n, method, shape=shape, strategy=strategy) for g in gpus for n in counts
                            if n > 1) if o.fits]
        if not fits:
            continue
        o = sorted(fits, key=rank_key)[0]
        cost = "no price" if o.usd is None else usd(o.usd)
        host = o.memory.components.get("offloaded_to_cpu", 0) * o.count
        found.append(f"{label} fits on {o.count} x {o.gpu.name} ({method.upper()}, "
                     f"{o.memory.required_bytes / 2**30:.1f} GiB per GPU, {host / 2**30:,.0f} GiB of CPU memory "
                     f"offloaded): {o.time.hours:.1f} h, {cost}; "
                     f"offload runs the optimizer on the CPU and moves weights and gradients over PCIe, "
                     f"both in the time model ({knobs}, distributed.cpu_offload: true"
                     f"{f', budget.gpu_count: {o.count}' if not b.gpu_count else ''})")
    return found


def _decisions(recipe: Recipe, chosen: Option, auto: bool, size, pinned_mbs, pinned_gc, options) -> list[Decision]:
    gib = 2**30
    d = []
    mem, gpu = chosen.memory, chosen.gpu
    share = mem.required_bytes / gpu.memory_bytes
    if auto:
        lora_here = next((o for o in options if o.gpu == gpu and o.count == chosen.count and o.method == "lora"), None)
        if chosen.method == "lora":
            reason = (f"method auto: LoRA fits {gpu.name} with margin ({share:.0%} of its memory; LoRA is taken "
                      f"up to {LORA_MARGIN:.0%}), on the cheapest hardware that fits")
        elif lora_here is not None and not lora_here.fits:
            reason = (f"method auto: LoRA would need {lora_here.memory.required_bytes / gib:.1f} GiB on {gpu.name} "
                      f"(more than {LORA_MARGIN:.0%} of {gpu.memory_bytes / gib:.0f} GiB); QLoRA's 4-bit base fits")
        else:
            reason = "method auto: LoRA on this GPU would exceed the budget; QLoRA is within it"
        d.append(Decision(what="method", choice=chosen.method, reason=reason))
    else:
        d.append(Decision(what="method", choice=chosen.method, reason="pinned by method.name"))
    compared = f"{len(options)} GPU x count x method options compared"
    if recipe.budget.gpu:
        why_gpu = "pinned by budget.gpu"
    elif not chosen.fits:  # nothing fits: the chosen option is the closest one, say so and by how much
        why_gpu = f"nothing fits; the closest option ({compared}): {chosen.note}"
    elif not chosen.within_budget:
        why_gpu = f"nothing fits within the budget; the cheapest option that fits ({compared}): {chosen.note}"
    else:
        why_gpu = f"cheapest option that fits ({compared})"
    price_label = chosen.rental.label if chosen.rental is not None else "no price"
    d.append(Decision(what="gpu", choice=gpu.name, reason=f"{why_gpu}; price: {price_label}"))
    fewer = [o for o in options if o.gpu == gpu and o.method == chosen.method and o.count < chosen.count]
    if recipe.budget.gpu_count:
        why_count = "pinned by budget.gpu_count"
    elif chosen.count == 1:
        why_count = "budget.max_gpus is 1" if recipe.budget.max_gpus == 1 else "one GPU is the cheapest option"
    elif fewer and not any(o.fits for o in fewer):
        why_count = f"the smallest count that fits ({', '.join(sorted({str(o.count) for o in fewer}))} do not)"
    elif fewer and not any(o.within_budget for o in fewer):
        why_count = "fewer GPUs would exceed the budget (max_hours / max_cost_usd)"
    else:
        why_count = "the cheapest count that fits"
        r = chosen.rental
        same_rent = sorted({o.count for o in fewer if o.fits and r is not None and o.rental is not None
                            and o.rental.offer == r.offer and o.rental.rented == r.rented})
        if same_rent:
            why_count += (f": {', '.join(map(str, same_rent))} would rent the same {r.rented} GPUs (whole "
                          f"instances) and take longer")
    d.append(Decision(what="gpu_count", choice=str(chosen.count), reason=why_count))
    if chosen.count > 1:
        single = [o for o in options if o.gpu == gpu and o.method == chosen.method and o.count == 1]
        why = ("pinned by distributed.strategy" if recipe.distributed.strategy != "auto" else
               {"ddp": "DDP: each GPU holds the whole model, the cheapest way to share the work that fits",
                "fsdp": "FSDP: the model does not fit one GPU whole, so weights, gradients and optimizer "
                        "states are sharded across the GPUs"}.get(chosen.strategy, chosen.strategy))
        if single and not single[0].fits:
            why += f"; one {gpu.name} would need {single[0].memory.required_bytes / gib:.0f} GiB"
        d.append(Decision(what="strategy", choice=chosen.strategy, reason=why))
    elif recipe.distributed.strategy != "auto":  # pinned, but one GPU: said, not silently dropped
        d.append(Decision(what="strategy", choice="single", reason=(
            f"distributed.strategy {recipe.distributed.strategy} is not used: the plan runs on one GPU "
            f"({why_count}), a single process with nothing to shard or replicate")))
    s = chosen.shape
    memory_fits = mem.required_bytes <= gpu.memory_bytes  # (an option may fit and still not run: no bitsandbytes)
    d.append(Decision(what="micro_batch_size", choice=str(s.micro_batch_size),
                      reason="pinned by training.micro_batch_size" if pinned_mbs else
                      "largest power of two that fits, up to the batch size per GPU" if memory_fits else
                      "nothing fits: the micro batch and checkpointing that need the least memory"))
    d.append(Decision(what="gradient_accumulation_steps", choice=str(s.gradient_accumulation_steps),
                      reason=f"{s.micro_batch_size} x {chosen.count} GPU(s) x {s.gradient_accumulation_steps} "
                             f"reaches batch_size {recipe.training.batch_size}"))
    d.append(Decision(what="gradient_checkpointing", choice=str(s.gradient_checkpointing).lower(),
                      reason="pinned by training.gradient_checkpointing" if pinned_gc is not None else
                      "nothing fits: the micro batch and checkpointing that need the least memory"
                      if not memory_fits else
                      ("off: the step fits without it, which saves a recomputed forward pass"
                       if not s.gradient_checkpointing else "on: the step does not fit without it")))
    d.append(Decision(what="attention", choice=s.attention,
                      reason="as asked" if recipe.training.attention != "auto" else
                      {"eager": "eager: transformers declares no sdpa attention for this family "
                                 "(Gemma 2: logit softcapping)",
                       "flash_attention_2": "flash_attention_2: packing needs varlen kernels, which keep packed "
                                            "examples from attending to each other"}.get(
                          s.attention, "sdpa: fused attention kernels, no score matrix kept")))
    if recipe.training.packing:
        rows = size.packed_rows()
        d.append(Decision(what="packing", choice=f"{size.examples} examples into about {rows} rows of "
                                                 f"{recipe.training.max_seq_len} tokens",
                          reason="trl's padding-free best-fit-decreasing rows with flash_attention_2: varlen "
                                 "kernels keep packed examples apart; steps, tokens and time count rows"))
    d.append(Decision(what="data", choice=f"{size.examples} examples x {size.tokens_per_example:.0f} tokens",
                      reason={"tokenizer": "counted with the model's tokenizer",
                              "heuristic": f"counted from {sources.describe(sources.parse(recipe.data.train, 'chat'))}: "
                                           f"characters / "
                                           f"{datasize.CHARS_PER_TOKEN:g} per token plus template overhead "
                                           f"(no local tokenizer)",
                              "declared": "declared in the recipe (data.examples / data.tokens_per_example)",
                              "assumed": "not measured: no data to count and no data.tokens_per_example"}
                      [size.counted_with] + (f"; {size.note}" if size.note else "")))
    d.append(_loss_decision(recipe))
    return d


def _loss_decision(recipe: Recipe) -> Decision:
    """What the loss is computed on, and with which chat template conversations are rendered."""
    from .mixture import kind_of

    kinds = {kind_of(s.format) for s in sources.parse(recipe.data.train, recipe.data.format)}
    template = recipe.data.chat_template or "model"
    rendered = f"the {'model' + chr(39) + 's own' if template == 'model' else repr(template)} chat template"
    if recipe.data.train_on_inputs:
        return Decision(what="loss", choice="every token", reason="data.train_on_inputs: true"
                        + (f"; conversations rendered with {rendered}" if "conversations" in kinds else ""))
    if "conversations" in kinds:
        return Decision(what="loss", choice="assistant turns",
                        reason=f"every assistant turn and its end-of-turn text, found by rendering with {rendered} "
                               f"(no {{% generation %}} markers needed); data.train_on_inputs: true trains on all")
    if kinds & {"prompt_completion"}:
        return Decision(what="loss", choice="completion", reason="the prompt is masked (trl's completion-only loss); "
                                                                 "data.train_on_inputs: true trains on all")
    if kinds & {"preference", "kto"}:
        return Decision(what="loss", choice="preference", reason="the objective's loss on the chosen / rejected (or "
                                                                 "labelled) completions")
    return Decision(what="loss", choice="every token", reason="format 'text' has no prompt to mask")


# --------------------------------------------------------------------------- explain


@dataclass(frozen=True)
class Explanation:
    decisions: list[Decision]
    alternatives: list[Alternative]
    warnings: list[str]
    build: BuildPlan  # what the runtime builds: module classes, dtypes, which are quantized
    preference: Optional[PreferencePlan]


def explain(recipe: Recipe, resolved: Resolved, workload: Workload, search: Search, choice: Choice) -> Explanation:
    """Why each choice was made, what else was compared, and what to watch for."""
    chosen, arch, t = choice.chosen, resolved.arch, recipe.training
    preference_plan, preference_decision = preference.plan_section(recipe, arch, chosen.shape, chosen.memory,
                                                                   memory.estimate)
    q = recipe.method.quantization
    build = build_mod.decide(arch, chosen.method, t.precision, chosen.shape.attention, t.packing, q.bits if q else 4,
                             q.type if q else "nf4", t.optimizer, chosen.memory.trainable_params)
    decisions = _decisions(recipe, chosen, search.auto, workload.size, search.pinned_mbs, search.pinned_gc,
                           choice.options)
    warnings = _warnings(recipe, workload.size, chosen.method, build, resolved.model.note)
    if chosen.method != "full":
        warnings += _rank_warning(recipe.method.rank, resolved.targeted)
    return Explanation(decisions + ([preference_decision] if preference_decision else []),
                       _alternatives(choice.options), warnings, build, preference_plan)


def _rank_warning(rank: int, targeted: list) -> list[str]:
    """A rank above a targeted module's smaller dimension adds adapter parameters, not capacity: the
    update B @ A of a d_out x d_in module has rank at most min(d_in, d_out)."""
    narrow = [m for m in targeted if rank > min(m.in_features, m.out_features)]
    if not narrow:
        return []
    m = min(narrow, key=lambda m: min(m.in_features, m.out_features))
    return [f"method.rank {rank} exceeds the smaller dimension of {m.name} ({m.in_features} x {m.out_features}"
            f"{f' and {len(narrow) - 1} other module type' + 's' * (len(narrow) > 2) if len(narrow) > 1 else ''}): "
            f"an update there has rank at most {min(m.in_features, m.out_features)}, so the extra rank adds "
            f"parameters and memory without capacity; lower method.rank"]


def _hardware(chosen: Option) -> Hardware:
    gpu, rented = chosen.gpu, chosen.rental
    if rented is None:
        return Hardware(gpu=gpu.name, count=chosen.count, memory_bytes=gpu.memory_bytes, bf16_tflops=gpu.tflops,
                        price_source="no price in the catalog")
    return Hardware(gpu=gpu.name, count=chosen.count, memory_bytes=gpu.memory_bytes, bf16_tflops=gpu.tflops,
                    usd_per_gpu_hour=rented.offer.usd_per_gpu_hour, price_source=rented.source,
                    provider=rented.offer.provider, gpus_rented=rented.rented)


def _alternatives(options: list[Option]) -> list[Alternative]:
    """Every option compared: within budget first, then fitting, then by rank."""
    return [Alternative(
        gpu=o.gpu.name, count=o.count, method=o.method, strategy=o.strategy, fits=o.fits,
        allocated_peak_bytes=o.memory.allocated_peak_bytes, required_bytes=o.memory.required_bytes,
        capacity_bytes=o.gpu.memory_bytes, micro_batch_size=o.shape.micro_batch_size if o.fits else None,
        gradient_checkpointing=o.shape.gradient_checkpointing if o.fits else None,
        hours=round(o.time.hours, 3) if o.time else None, usd=round(o.usd, 2) if o.usd is not None else None,
        within_budget=o.within_budget, note="; ".join(filter(None, (o.note, _rents(o)))))
        for o in sorted(options, key=lambda o: (not o.within_budget, not o.fits, rank_key(o)))]


def _rents(o: Option) -> str:
    """"rents 8 (lambda gpu_8x_a100_80gb_sxm4)" when the option's price is for more GPUs than it uses."""
    r = o.rental
    if r is None or not r.idle or o.usd is None:
        return ""
    return f"rents {r.rented} ({r.offer.provider} {r.offer.instance})"


def _warnings(recipe: Recipe, size: datasize.DataSize, method: str, build: BuildPlan,
              model_note: str | None = None) -> list[str]:
    t = recipe.training
    warnings = [model_note] if model_note else []
    if size.truncated:
        warnings.append(f"{size.truncated} of {len(size.lengths)} sampled examples are longer than max_seq_len "
                        f"{t.max_seq_len} and will be truncated")
    if t.precision == "bf16-pure":
        warnings.append(PURE_BF16_CAVEAT if method == "full" else
                        "training.precision bf16-pure only changes full fine-tuning; adapters train as with bf16")
    if recipe.model.trust_remote_code:
        warnings.append("model.trust_remote_code is on: the model's own code will run")
    if not size.examples:
        warnings.append("no training examples: the data was not found and data.examples is not declared, so "
                        "the plan's steps, time and cost are those of an empty run; declare data.examples and "
                        "data.tokens_per_example, or add the data")
    kept = [m for m in build.modules if not m.quantized and m.module_class != "Linear"]
    if method in memory.QUANTIZED and kept:
        warnings.append(f"{method}: {', '.join(m.name for m in kept)} ({kept[0].module_class}) stay in "
                        f"{t.precision}: transformers' bitsandbytes integration quantizes only exact nn.Linear "
                        f"modules; the memory plan counts them unquantized"
                        + "".join(f" ({m.reason.split(' (')[0]})" for m in kept if "expert values" in m.reason))
    return warnings


# --------------------------------------------------------------------------- assemble


def assemble(recipe: Recipe, recipe_path: Path, overrides: tuple, resolved: Resolved, workload: Workload,
             search: Search, choice: Choice, pricing: Pricing, explanation: Explanation) -> Plan:
    """The plan: the passes' results in the schema's sections, with the lock that makes it reproducible."""
    model, arch, chosen = resolved.model, resolved.arch, choice.chosen
    s, mem, gpu = chosen.shape, chosen.memory, chosen.gpu
    t, size = recipe.training, workload.size
    recipe_dir = recipe_path.resolve().parent
    data_hashes = _data_hashes(recipe, recipe_dir)
    train_name = sources.describe(sources.parse(recipe.data.train, recipe.data.format))
    eval_name = sources.describe(sources.parse(recipe.data.eval, recipe.data.format, "eval")) if recipe.data.eval \
        else None
    return Plan(
        tool_version=__version__,
        name=recipe.name or recipe_path.stem,
        task=recipe.task,
        method=chosen.method,
        fits=choice.feasible,
        model=ModelInfo(name=model.name, source=model.source, family=arch.family,
                        path=str(model.path) if model.path else None, parameters=parameter_count(arch).total,
                        published_parameters=model.published_params, trainable_parameters=mem.trainable_params,
                        hidden_size=arch.hidden_size, num_layers=arch.num_layers, vocab_size=arch.vocab_size,
                        config=model.config),
        hardware=_hardware(chosen),
        adapter=_adapter(recipe, chosen.method, resolved.targeted),
        memory=Memory(allocated_peak_bytes=mem.allocated_peak_bytes, required_bytes=mem.required_bytes,
                      capacity_bytes=gpu.memory_bytes, headroom_bytes=gpu.memory_bytes - mem.required_bytes,
                      components=mem.components),
        training=TrainingPlan(micro_batch_size=s.micro_batch_size, gradient_accumulation_steps=s.gradient_accumulation_steps,
                              effective_batch_size=s.micro_batch_size * s.gradient_accumulation_steps * chosen.count,
                              gradient_checkpointing=s.gradient_checkpointing, epochs=t.epochs,
                              steps=_steps(workload, chosen), max_seq_len=t.max_seq_len, optimizer=t.optimizer,
                              precision=t.precision, attention=s.attention, learning_rate=t.learning_rate,
                              packing=t.packing),
        data=DataPlan(train_path=train_name, train_sha256=data_hashes.get(train_name),
                      eval_path=eval_name, eval_sha256=data_hashes.get(eval_name) if eval_name else None,
                      examples=size.examples, tokens_per_example=round(size.tokens_per_example, 1),
                      counted_with=size.counted_with, truncated_examples=size.truncated, note=size.note),
        time=_time_plan(chosen, workload.train_tokens(s.micro_batch_size),
                        search.calibration.describe(gpu.name) if search.calibration else None),
        cost=pricing.cost,
        decisions=explanation.decisions,
        preference=explanation.preference,
        alternatives=explanation.alternatives,
        warnings=explanation.warnings,
        economics=pricing.economics,
        output_dir=recipe.output.dir or f"runs/{recipe.name or recipe_path.stem}",
        distributed=_distributed(recipe, chosen),
        build=explanation.build,
        recipe=recipe,
        lock=Lock(recipe_path=str(recipe_path), recipe_sha256=hashlib.sha256(recipe_path.read_bytes()).hexdigest(),
                  overrides=list(overrides), data_sha256=data_hashes,
                  model_sha256=model_hashes(model.path, recipe_dir),
                  catalogs={**catalogs.catalog_versions(), "models.json": models.catalog_version()},
                  tool_version=__version__),
    )


def _steps(workload: Workload, chosen: Option) -> int:
    """Optimizer steps: one epoch's batches (rows when packed) x epochs, capped by max_steps."""
    s = chosen.shape
    sequences = workload.size.packed_rows() if workload.packing else workload.size.examples
    steps = math.ceil(sequences * workload.epochs / max(1, s.micro_batch_size * s.gradient_accumulation_steps
                                                        * chosen.count))
    return min(steps, workload.max_steps) if workload.max_steps else steps


def _adapter(recipe: Recipe, method: str, targeted: list) -> Optional[Adapter]:
    if method == "full":
        return None
    quant = None
    if method in memory.QUANTIZED:
        q, precision = recipe.method.quantization, recipe.training.precision
        bits = q.bits if q else 4
        quant = {"bits": bits, "type": (q.type if q else "nf4") if bits == 4 else "int8",
                 "double_quant": (q.double_quant if q else True) if bits == 4 else False,
                 "compute_dtype": "bf16" if precision == "bf16-pure" else precision}
    return Adapter(rank=recipe.method.rank, alpha=recipe.method.alpha, dropout=recipe.method.dropout,
                   targets=[m.name for m in targeted], use_dora=method in ("dora", "qdora"), quantization=quant)


def _data_hashes(recipe: Recipe, recipe_dir: Path) -> dict:
    """Each source's sha256 (files: remembered by stat signature, not re-read) or fingerprint (hub commit,
    saved dataset state, glob's files)."""
    return source_size.lock_entries(recipe, recipe_dir, digest=datacache.digest)


def _time_plan(chosen: Option, tokens: float, calibrated: Optional[str]) -> TimePlan:
    est, gpu = chosen.time, chosen.gpu
    return TimePlan(hours=round(est.hours, 3) if est else 0.0,
                    train_tokens=int(tokens),
                    flops_per_token=est.flops_per_token if est else 0.0,
                    utilization=est.utilization if est else 0.0,
                    tokens_per_second=round(est.tokens_per_second, 1) if est else 0.0,
                    scaling_efficiency=est.scaling_efficiency if est else 1.0,
                    assumptions=timing.assumptions(est, gpu.name, calibrated),
                    step_seconds=est.step_seconds if est else {}, setup_hours=timing.SETUP_HOURS,
                    calibration_factor=est.calibration_factor if est else 1.0,
                    calibration=calibrated if est else None)
