"""Renting GPUs: the cheapest way to get at least N GPUs of one type from a list of offers.

A catalog row prices a GPU per GPU-hour, but an instance with ``gpus_per_instance`` GPUs is rented
whole: N GPUs from it cost ceil(N / gpus_per_instance) instances x gpus_per_instance x the per-GPU
price. The user's own price (budget.prices, budget.custom_gpus) is an offer of one GPU at a time:
exactly the GPUs used are paid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class Offer:
    """One way to rent a GPU type: a catalog row at the price kind asked for, or the user's own price."""

    usd_per_gpu_hour: float
    label: str = ""  # short: "aws p4d.24xlarge on-demand"
    gpus_per_instance: int = 1
    provider: Optional[str] = None
    instance: str = ""
    source: str = ""  # in full: label; source; as of


@dataclass(frozen=True)
class Rental:
    """``used`` GPUs taken from ``instances`` whole instances of ``offer``."""

    offer: Offer
    used: int
    instances: int

    @property
    def rented(self) -> int:
        return self.instances * self.offer.gpus_per_instance

    @property
    def usd_per_hour(self) -> float:
        """What the rented GPUs cost per hour, idle ones included."""
        return self.rented * self.offer.usd_per_gpu_hour

    @property
    def idle(self) -> int:
        return self.rented - self.used

    @property
    def label(self) -> str:
        """The offer's label, and when whole instances hold more GPUs than are used, how many are rented."""
        if not self.idle:
            return self.offer.label
        whole = "whole instance" if self.instances == 1 else f"{self.instances} whole instances"
        return f"{self.offer.label}; rents {self.rented} ({whole}), uses {self.used}"

    @property
    def source(self) -> str:
        if not self.idle:
            return self.offer.source
        return (f"{self.offer.source}; {self.instances} x {self.offer.gpus_per_instance}-GPU instance"
                f"{'s' * (self.instances != 1)} rented whole for {self.used} GPU{'s' * (self.used != 1)}")


def rent(offer: Offer, count: int) -> Rental:
    """``count`` GPUs from ``offer``: as many whole instances as it takes."""
    return Rental(offer, count, math.ceil(count / max(offer.gpus_per_instance, 1)))


def cheapest(offers: Sequence[Offer], count: int) -> Optional[Rental]:
    """The cheapest way to rent at least ``count`` GPUs (ties: fewer GPUs rented, then the offers' order)."""
    rentals = [rent(o, count) for o in offers]
    if not rentals:
        return None
    return min(rentals, key=lambda r: (round(r.usd_per_hour, 9), r.rented))
