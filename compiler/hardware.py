"""The GPUs a recipe may run on, with their memory, speed and price."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..schemas.recipe import BudgetSpec
from . import catalogs, rental
from .rental import Offer, Rental
from .stack import CUDA_STACK, Stack, stack_for


@dataclass(frozen=True)
class Candidate:
    name: str
    memory_bytes: int
    tflops: float  # dense tensor TFLOPS in the dtype training uses on it
    bf16_supported: bool
    nvlink: bool
    offers: tuple[Offer, ...]  # the ways to rent it (catalog rows, or the user's price); none: no price
    bandwidth_gbs: float = 0.0  # memory bandwidth; 0 for a custom GPU (the time model assumes one)
    interconnect: str = ""  # as in the catalog: "yes: NVLink3 600 GB/s", "no: PCIe Gen4"
    arch: str = ""  # GPU generation as in the catalog: Ampere, Hopper, ...
    stack: Stack = CUDA_STACK  # the training-stack parts known to work on it

    @property
    def speed(self):
        from .timing import GPUSpeed

        return GPUSpeed(self.name, self.tflops, self.bandwidth_gbs, self.nvlink, self.interconnect, self.arch)

    def rent(self, count: int) -> Optional[Rental]:
        """The cheapest way to rent at least ``count`` of it (whole instances); None: no price."""
        return rental.cheapest(self.offers, count)


def offers(name: str, budget: BudgetSpec) -> tuple[Offer, ...]:
    """budget.prices for this GPU (per GPU-hour, exactly the GPUs used), else every catalog row the
    budget allows (provider, spot; GPU-only rows only when nothing else is listed)."""
    for key, value in budget.prices.items():
        found = catalogs.find_gpu(key)
        if key == name or (found is not None and found.name == name):
            return (Offer(value, "your price (budget.prices)", source="budget.prices in the recipe"),)
    kind = "spot" if budget.spot else "on-demand"
    out = []
    for price in catalogs.rentable_prices(name, provider=budget.provider, spot=budget.spot):
        extra = " (GPU only, no host VM)" if price.gpu_only else ""
        label = f"{price.provider} {price.instance} {kind}{extra}"
        out.append(Offer(price.hourly(budget.spot), label, price.gpus_per_instance, price.provider, price.instance,
                         f"{label}; {price.source}; {price.as_of}"))
    return tuple(out)


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
            offer = Offer(price, "your GPU (budget.custom_gpus)", source="budget.custom_gpus in the recipe")
            out.append(Candidate(name, int(g.memory_gb * 2**30), g.bf16_tflops, g.bf16_supported, False, (offer,)))
            continue
        gpu = catalogs.find_gpu(name)
        if gpu is None:  # validation reports unknown names; nothing to plan with
            continue
        found = offers(gpu.name, budget)
        if not found and not explicit:
            continue
        out.append(Candidate(gpu.name, gpu.memory_bytes, gpu.training_tflops, gpu.bf16_supported,
                             gpu.nvlink, found, gpu.bandwidth_gbs, gpu.interconnect,
                             gpu.arch, stack=stack_for(gpu.name)))
    return out
