"""What bitsandbytes keeps on the GPU, measured from its own objects, for the tracer.

The tracer runs on fake tensors, which bitsandbytes cannot quantize, so it asks this module what a
quantized linear and an 8-bit optimizer hold, and allocates fake tensors of those sizes. Nothing
here is a formula for the sizes (the estimator's formulas live in compiler/memory.py, and the tracer
referees them, so it must not reuse them):

- A quantized linear: real `Params4bit` / `Int8Params` are quantized on the CPU backend at two small
  row counts of the layer's input width, every tensor they keep is measured (packed weight, absmax,
  nested absmax and code tables, row scales), and each tensor's bytes are extended linearly to the
  layer's row count (quantization works block by block along the flattened weight, so bytes are
  linear in the rows; `tests/test_bnb_sizes.py` checks the extension against full-size layers).
- Optimizer states: the real bitsandbytes AdamW (as transformers builds it for `adamw_bnb_8bit`,
  `paged_adamw_8bit`, `paged_adamw_32bit`) initialises its state for meta-device copies of the
  trainable parameters: full size, no memory. Which states bitsandbytes puts in CUDA managed memory
  (`get_paged`) is recorded by standing in for `get_paged` during the call.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass

BNB_OPTIMIZERS = {"adamw_8bit": (8, False), "paged_adamw_8bit": (8, True), "paged_adamw_32bit": (32, True)}
_SAMPLE_ELEMENTS = 1 << 14  # 64 x 256 weights: one 4-bit block of 64, 256 of them per nested absmax


@dataclass(frozen=True)
class Tensor:
    """One tensor bitsandbytes keeps: what it is, its dtype name and its size in bytes."""

    name: str
    dtype: str
    nbytes: int
    paged: bool = False


def _storages(named) -> list[tuple[str, object]]:
    """(name, tensor) with each storage once (bitsandbytes aliases some: Int8Params.CB is its data)."""
    seen, out = set(), []
    for name, t in named:
        if t is None:
            continue
        key = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        if key not in seen:
            seen.add(key)
            out.append((name, t))
    return out


def _quantized_tensors(rows: int, cols: int, bits: int, double_quant: bool) -> list[tuple[str, object]]:
    import torch
    import bitsandbytes as bnb

    weight = torch.randn(rows, cols, dtype=torch.bfloat16, device="cpu")
    if bits == 4:
        p = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", compress_statistics=double_quant,
                              blocksize=64).to("cpu")
        qs = p.quant_state
        named = [("weight", p.data), ("absmax", qs.absmax), ("code", qs.code), ("offset", qs.offset)]
        if qs.state2 is not None:
            named += [("nested_absmax", qs.state2.absmax), ("nested_code", qs.state2.code)]
    else:
        p = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False).to("cpu")
        named = [("weight", p.data), ("CB", p.CB), ("SCB", p.SCB)]
    return _storages(named)


@functools.lru_cache(maxsize=None)
def quantized_linear(out_features: int, in_features: int, bits: int = 4, double_quant: bool = True) -> tuple:
    """The tensors a bitsandbytes linear of this shape keeps on the device, as Tensor records."""
    # rows such that the sample is a whole number of blocks at both levels, within a few million weights
    step = max(1, min(_SAMPLE_ELEMENTS // math.gcd(in_features, _SAMPLE_ELEMENTS), (1 << 22) // in_features))
    r1, r2 = step, 2 * step
    import torch

    with torch.device("cpu"):  # real tensors, also when called while a model is built on the meta device
        small = _quantized_tensors(r1, in_features, bits, double_quant)
        large = dict(_quantized_tensors(r2, in_features, bits, double_quant))
    out = []
    for name, t in small:
        b1, b2 = t.untyped_storage().nbytes(), large[name].untyped_storage().nbytes()
        per_row = (b2 - b1) / (r2 - r1)
        out.append(Tensor(name, str(t.dtype).replace("torch.", ""), round(b1 + per_row * (out_features - r1))))
    return tuple(out)


@contextmanager
def _paged_on_meta(record: set):
    """bitsandbytes allocates paged states with F.get_paged (CUDA managed memory) and zeroes them with
    F.fill: on the meta device, hand back meta tensors and note which ones were paged."""
    import torch
    import bitsandbytes.functional as F

    saved = F.get_paged, F.fill

    def get_paged(*shape, dtype=torch.float32, device=None):
        t = torch.empty(shape, dtype=dtype, device="meta")
        record.add(id(t))
        return t

    F.get_paged, F.fill = get_paged, (lambda *args, **kwargs: None)
    pages = F.GlobalPageManager.get_instance()
    before = len(pages.paged_tensors)
    try:
        yield
    finally:
        F.get_paged, F.fill = saved
        del pages.paged_tensors[before:]


def optimizer_states(shapes: list[tuple[tuple[int, ...], str]], optimizer: str) -> list[list[Tensor]]:
    """For each trainable parameter (shape, dtype name): the states the bitsandbytes optimizer keeps.
    Tensors shared by all parameters (the quantization maps) are listed once, with the first."""
    import torch
    import bitsandbytes as bnb

    bits, paged = BNB_OPTIMIZERS[optimizer]
    params = [torch.nn.Parameter(torch.empty(shape, dtype=getattr(torch, dtype), device="meta"))
              for shape, dtype in shapes]
    if not params:
        return []
    opt = bnb.optim.AdamW(params, lr=1e-4, optim_bits=bits, is_paged=paged)
    paged_ids: set = set()
    seen: set = set()
    out = []
    with _paged_on_meta(paged_ids):
        for gindex, group in enumerate(opt.param_groups):
            for pindex, p in enumerate(group["params"]):
                opt.init_state(group, p, gindex, pindex)
                states = []
                for name, t in opt.state[p].items():
                    if not isinstance(t, torch.Tensor) or id(t) in seen:
                        continue
                    seen.add(id(t))
                    states.append(Tensor(name, str(t.dtype).replace("torch.", ""),
                                         t.numel() * t.element_size(), id(t) in paged_ids))
                out.append(states)
    return out
