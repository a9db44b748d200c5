"""Choose method, GPU type and count, micro batch and checkpointing: the cheapest option that fits."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

from ..schemas.money import usd as format_usd
from ..schemas.recipe import KTO_MIN_MICRO_BATCH
from .architecture import Architecture
from .hardware import Candidate
from .memory import MemoryEstimate, StepShape, estimate
from .rental import Rental
from .stack import missing_note, needed_parts
from .timing import Rows, TimeEstimate, estimate as estimate_time

LORA_MARGIN = 0.90  # `method: auto` takes LoRA only when it needs at most this share of the card


@dataclass(frozen=True)
class Option:
    gpu: Candidate
    count: int
    method: str
    shape: StepShape  # with the micro batch and checkpointing chosen for this GPU
    memory: MemoryEstimate
    fits: bool
    time: Optional[TimeEstimate] = None
    usd: Optional[float] = None
    within_budget: bool = False
    note: str = ""
    runnable: bool = True  # False: the GPU lacks a part of the stack the plan needs (bf16, bitsandbytes, ...)
    rental: Optional[Rental] = None  # the cheapest way to rent `count` of the GPU (whole instances); None: no price

    @property
    def accumulation(self) -> int:
        return self.shape.gradient_accumulation_steps

    @property
    def strategy(self) -> str:
        return self.shape.strategy


def _powers_of_two(limit: int) -> list[int]:
    out, n = [], 1
    while n <= limit:
        out.append(n)
        n *= 2
    return out


def fit_step(base: StepShape, arch: Architecture, gpu: Candidate, count: int, batch_size: int,
             pinned_mbs: Optional[int], pinned_gc: Optional[bool], margin: float = 1.0
             ) -> tuple[StepShape, MemoryEstimate, bool]:
    """The fastest (micro batch, checkpointing) that fits: no checkpointing if any micro batch fits
    without it, then the largest micro batch. Falls back to the smallest configuration (not fitting)."""
    per_device = max(1, batch_size // count)
    sizes = [pinned_mbs] if pinned_mbs else list(reversed(_powers_of_two(per_device)))
    least = KTO_MIN_MICRO_BATCH if base.objective == "kto" else 1  # KTO's KL term needs a neighbour in the batch
    sizes = [s for s in sizes if s >= least] or [least]
    checkpointing = [pinned_gc] if pinned_gc is not None else [False, True]
    capacity = gpu.memory_bytes * margin
    smallest = None
    for gc in checkpointing:
        for mbs in sizes:
            accumulation = math.ceil(batch_size / (mbs * count))
            shape = replace(base, micro_batch_size=mbs, gradient_checkpointing=gc,
                            gradient_accumulation_steps=accumulation)
            mem = estimate(arch, shape)
            if mem.required_bytes <= capacity:
                return shape, mem, True
            if smallest is None or mem.required_bytes < smallest[1].required_bytes:
                smallest = (shape, mem)
    return smallest[0], smallest[1], False


def price_option(arch: Architecture, base: StepShape, gpu: Candidate, count: int, method: str,
             batch_size: int, train_tokens_for, pinned_mbs, pinned_gc, max_cost, max_hours,
             margin: float = 1.0, strategy: str = "single", nodes: int = 1, rows_for=None,
             calibration=None) -> Option:
    """`rows_for(micro_batch)` gives the time model's Rows (default: full rows of seq_len);
    `calibration(gpu_name)` a factor on the modelled speed from the project's own runs (default 1)."""
    shape0 = replace(base, method=method, processes=count, strategy=strategy if count > 1 else "single")
    shape, mem, fits = fit_step(shape0, arch, gpu, count, batch_size, pinned_mbs, pinned_gc, margin)
    note = ""
    rental = gpu.rent(count)
    if not gpu.bf16_supported and base.precision in ("bf16", "bf16-pure"):
        return Option(gpu, count, method, shape, mem, False, note="no bf16 on this GPU (use precision fp16)",
                      runnable=False, rental=rental)
    missing = gpu.stack.missing(needed_parts(method, base.quant_bits, base.optimizer, base.attention))
    if missing:
        return Option(gpu, count, method, shape, mem, False, note=missing_note(gpu.name, missing, gpu.stack),
                      runnable=False, rental=rental)
    if not fits:
        over = mem.required_bytes - gpu.memory_bytes * margin
        note = f"needs {over / 2**30:.1f} GiB more" if margin == 1.0 else "no margin for LoRA"
        return Option(gpu, count, method, shape, mem, False, note=note, rental=rental)
    tokens = train_tokens_for(shape.micro_batch_size)
    rows = rows_for(shape.micro_batch_size) if rows_for else Rows(shape.seq_len, shape.seq_len)
    t = estimate_time(arch, shape, gpu.speed, count, tokens, rows, nodes, mem.trainable_params,
                      calibration(gpu.name) if calibration else 1.0)
    usd = None if rental is None else t.hours * rental.usd_per_hour  # every GPU rented, idle ones included
    within = (max_cost is None or (usd is not None and usd <= max_cost)) and (max_hours is None or t.hours <= max_hours)
    if not within:
        parts = []
        if max_cost is not None and (usd is None or usd > max_cost):
            parts.append("no price" if usd is None else f"{format_usd(usd)} > max_cost_usd {max_cost:g}")
        if max_hours is not None and t.hours > max_hours:
            parts.append(f"{t.hours:.1f} h > max_hours {max_hours:g}")
        note = "; ".join(parts)
    return Option(gpu, count, method, shape, mem, True, t, usd, within, note, rental=rental)


def rank_key(option: Option) -> tuple:
    """Cheapest, then fastest; LoRA before QLoRA, fewer GPUs first."""
    usd = option.usd if option.usd is not None else math.inf
    return (usd, option.time.hours if option.time else math.inf,
            {"lora": 0, "dora": 1, "full": 2, "qlora": 3, "qdora": 4}.get(option.method, 9), option.count,
            ["single", "ddp", "deepspeed", "fsdp"].index(option.strategy))
