"""The GPUs a recipe may run on, with their memory, speed and price."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..schemas.recipe import BudgetSpec
from . import catalogs
from .stack import CUDA_STACK, Stack, stack_for


@dataclass(frozen=True)
class Candidate:
    name: str
    memory_bytes: int
    tflops: float  # dense tensor TFLOPS in the dtype training uses on it
    bf16_supported: bool
    nvlink: bool
    usd_per_hour: Optional[float]  # per GPU
    price_source: str  # where the price comes from, in full
    provider: Optional[str]
    price_label: str = ""  # short: "aws g6.xlarge on-demand"
    bandwidth_gbs: float = 0.0  # memory bandwidth; 0 for a custom GPU (the time model assumes one)
    interconnect: str = ""  # as in the catalog: "yes: NVLink3 600 GB/s", "no: PCIe Gen4"
    arch: str = ""  # GPU generation as in the catalog: Ampere, Hopper, ...
    stack: Stack = CUDA_STACK  # the training-stack parts known to work on it

    @property
    def speed(self):
        from .timing import GPUSpeed

        return GPUSpeed(self.name, self.tflops, self.bandwidth_gbs, self.nvlink, self.interconnect, self.arch)


def _price(name: str, budget: BudgetSpec) -> tuple[Optional[float], str, Optional[str], str]:
    for key, value in budget.prices.items():
        found = catalogs.find_gpu(key)
        if key == name or (found is not None and found.name == name):
            return value, "budget.prices in the recipe", None, "your price (budget.prices)"
    price = catalogs.cheapest_price(name, provider=budget.provider, spot=budget.spot)
    if price is None:
        return None, "no price in the catalog", None, "no price"
    kind = "spot" if budget.spot else "on-demand"
    extra = " (GPU only, no host VM)" if price.gpu_only else ""
    label = f"{price.provider} {price.instance} {kind}{extra}"
    return price.hourly(budget.spot), f"{label}; {price.source}; {price.as_of}", price.provider, label


def candidates(budget: BudgetSpec) -> list[Candidate]:
    """Pinned GPU, listed candidates, or the whole catalog (GPUs without a price left out)."""
    custom = {g.name: g for g in budget.custom_gpus}
    if budget.gpu:
        names, explicit = [budget.gpu], True
    elif budget.gpus:
        names, explicit = list(budget.gpus), True
    else:
        names = [n for n in catalogs.gpu_names() if catalogs.cheapest_price(n) is not None] + list(custom)
        explicit = False
    out = []
    for name in dict.fromkeys(names):
        if name in custom:
            g = custom[name]
            price = budget.prices.get(name, g.usd_per_hour)
            out.append(Candidate(name, int(g.memory_gb * 2**30), g.bf16_tflops, g.bf16_supported, False,
                                 price, "budget.custom_gpus in the recipe", None, "your GPU (budget.custom_gpus)"))
            continue
        gpu = catalogs.find_gpu(name)
        if gpu is None:  # validation reports unknown names; nothing to plan with
            continue
        price, source, provider, label = _price(gpu.name, budget)
        if price is None and not explicit:
            continue
        out.append(Candidate(gpu.name, gpu.memory_bytes, gpu.training_tflops, gpu.bf16_supported,
                             gpu.nvlink, price, source, provider, label, gpu.bandwidth_gbs, gpu.interconnect,
                             gpu.arch, stack=stack_for(gpu.name)))
    return out
