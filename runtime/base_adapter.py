"""Start training from an adapter trained before (`model.adapter`, e.g. an SFT run's adapter).

- merge (default): the adapter is folded into the base weights and a new adapter trains on top. For
  preference tuning the reference (the adapter disabled) is then the SFT model, as DPO expects. On a
  quantized base the merge is done in the compute dtype on the unquantized weights, saved under the
  run directory (`base-merged/`) and loaded quantized from there: merging into 4-bit weights is lossy.
- stack: the adapter stays a separate PEFT adapter and keeps training; trl's preference trainers
  keep a frozen copy of it (adapter "ref") as the reference.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..schemas.errors import RecipeError


def _load(model, path: Path, trainable: bool):
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"model.adapter: {path} does not fit the base model {model.name_or_path} ({first}); "
                          f"was it trained on another base?") from None


def apply(plan, plan_dir: Path, model, load_model, run_dir: Path, log=print):
    """The model to train, starting from the recipe's adapter. `load_model(dir)` loads a base as the
    plan does (quantized for qlora / qdora)."""
    from .preference import adapter_path

    path = adapter_path(plan, plan_dir)
    mode = plan.recipe.model.adapter_mode
    if mode == "stack":
        log(f"model: {path} stacked on the base, trained further")
        return _load(model, path, trainable=True)
    if plan.method not in ("qlora", "qdora"):
        merged = _load(model, path, trainable=False).merge_and_unload()
        if plan.method == "full":  # PEFT froze the base's weights; full fine-tuning trains every one
            log(f"model: {path} merged into the base, every weight trained")
            return merged.requires_grad_(True)
        log(f"model: {path} merged into the base; a new adapter trains on top")
        return merged
    import torch

    from . import text_model
    from .preflight import torch_dtype

    del model
    dtype = torch_dtype(plan.training.precision) if plan.training.precision != "fp32" else torch.float32
    base_dir = plan.model.path or plan.model.name
    base = text_model.load(base_dir, dtype=dtype, trust_remote_code=plan.recipe.model.trust_remote_code,
                           revision=plan.recipe.model.revision)
    merged = _load(base, path, trainable=False).merge_and_unload()
    out = run_dir / "base-merged"
    partial = run_dir / ".base-merged.partial"
    shutil.rmtree(partial, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(partial))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    del base, merged
    log(f"model: {path} merged into the base in {plan.training.precision} ({out}), loaded quantized")
    return load_model(str(out))
