"""Which parts of the training stack are known to work on each catalog GPU, and which a plan needs.

A plan is only placed on a GPU where every part it needs is known to work: bitsandbytes 4-bit for
QLoRA / QDoRA, bitsandbytes 8-bit for an 8-bit base or an 8-bit / paged optimizer, FlashAttention-2
for `flash_attention_2` attention (and so for packing). The facts live in data/gpu_stack.csv with
their sources; a GPU the user describes in budget.custom_gpus is taken to have the CUDA stack.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

from . import catalogs

STACK_FILE = "gpu_stack.csv"

PART_LABELS = {
    "bnb_4bit": "bitsandbytes 4-bit",
    "bnb_8bit": "bitsandbytes 8-bit",
    "flash_attention_2": "FlashAttention-2",
}


@dataclass(frozen=True)
class Stack:
    torch_build: str  # "cuda" | "rocm": the torch build the GPU needs
    parts: frozenset  # of PART_LABELS keys known to work
    note: str = ""

    def missing(self, needed: list[str]) -> list[str]:
        return [p for p in needed if p not in self.parts]


CUDA_STACK = Stack("cuda", frozenset(PART_LABELS))


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Stack]:
    known = set(catalogs.gpu_names())
    out: dict[str, Stack] = {}
    for line, row in catalogs._read(STACK_FILE):
        where = f"{STACK_FILE}:{line}"
        if row["gpu"] not in known:
            raise catalogs.CatalogError(f"{where}: GPU {row['gpu']!r} is not in {catalogs.GPUS_FILE}")
        if row["torch_build"] not in ("cuda", "rocm"):
            raise catalogs.CatalogError(f"{where}: torch_build must be cuda or rocm, got {row['torch_build']!r}")
        parts = frozenset(p for p in PART_LABELS if catalogs._flag(row, p, where))
        out[row["gpu"]] = Stack(row["torch_build"], parts, row.get("note", ""))
    missing = known - set(out)
    if missing:
        raise catalogs.CatalogError(f"{STACK_FILE}: no row for {', '.join(sorted(missing))}")
    return out


def stack_for(gpu_name: str) -> Stack:
    """The catalog GPU's stack; a GPU outside the catalog (budget.custom_gpus) gets the CUDA stack."""
    return _table().get(gpu_name, CUDA_STACK)


def needed_parts(method: str, quant_bits: int, optimizer: str, attention: str) -> list[str]:
    parts = []
    if method in ("qlora", "qdora"):
        parts.append("bnb_4bit" if quant_bits == 4 else "bnb_8bit")
    if optimizer != "adamw" and "bnb_8bit" not in parts:  # bitsandbytes optimizers (8-bit, paged)
        parts.append("bnb_8bit")
    if attention == "flash_attention_2":
        parts.append("flash_attention_2")
    return parts


def missing_note(gpu_name: str, missing: list[str], stack: Optional[Stack] = None) -> str:
    stack = stack or stack_for(gpu_name)
    what = " / ".join(PART_LABELS[p] for p in missing)
    return f"{what} not known to work on {gpu_name}" + (f" ({stack.torch_build} build of torch)"
                                                          if stack.torch_build != "cuda" else "")
