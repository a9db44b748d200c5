"""The live model against its plan: checked after trl has wrapped it, before the first step.

The plan's `build` record says what the model is made of (compiler/build.py). Here the runtime walks
the model it actually built and compares: which modules bitsandbytes quantized and which it left in
16 bits, their classes and dtypes, the trainable parameters (count and dtype), the attention
implementation, and the packing mode. Any difference stops the run with the modules named; the
result goes into the run report either way.
"""

from __future__ import annotations

from ..schemas.errors import RecipeError

QUANTIZED_CLASSES = ("Linear4bit", "Linear8bitLt")
SHOWN = 4  # module names quoted per problem


class ConformanceError(RecipeError):
    """The built model differs from the plan."""


def _names(names: list[str]) -> str:
    more = len(names) - SHOWN
    return ", ".join(names[:SHOWN]) + (f" and {more} more" if more > 0 else "")


def _dtype(name: str, precision: str, planned_precision: str) -> str:
    """A plan dtype name on this device: the device may run fp16 plans in fp32 (CPU)."""
    return precision if name == planned_precision else name


def _torch_name(dtype) -> str:
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32", torch.uint8: "uint8",
            torch.int8: "int8"}.get(dtype, str(dtype).replace("torch.", ""))


def _is_experts(name: str) -> bool:
    """The plan's row of fused MoE expert tensors ("mlp.experts"), matched by its path in a layer."""
    return "." in name and name.rsplit(".", 1)[-1] == "experts"


def _format(module) -> str:
    """int8, or a 4-bit module's quant type (nf4 / fp4) as bitsandbytes stored it."""
    if type(module).__name__ == "Linear8bitLt":
        return "int8"
    return str(getattr(getattr(module, "weight", None), "quant_type", None))


def _own_name(path: str) -> str:
    """A module's name in its layer ("q_proj"), the LoRA wrapper's base_layer read as the module it wraps."""
    parts = path.split(".")
    if parts[-1] == "base_layer" and len(parts) > 1:
        parts = parts[:-1]
    return parts[-1]


def _modules_named(base, name: str) -> list[tuple[str, object]]:
    """(path, module) of each instance of a decoder-layer module; peft's LoRA wrapper unwrapped."""
    found = []
    for path, module in base.named_modules():
        if _is_experts(name):
            if path.endswith("." + name):
                found.append((path, module))
        else:
            parts = path.split(".")
            if parts[-1] == name and any(p.isdigit() for p in parts[:-1]):  # inside a numbered decoder layer
                found.append((path, getattr(module, "base_layer", module)))
    return found


def check(plan, trainer, precision: str) -> dict:
    """Compare the trainer's model with `plan.build`; returns {"ok", "checked", "problems"}."""
    build = plan.build
    if build is None:
        return {"ok": True, "checked": [], "problems": [],
                "note": "plan made before schema 1.1 has no build record: re-plan to have the model checked"}
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    planned_precision = plan.training.precision
    weights_dtype = _dtype(build.weights_dtype, precision, planned_precision)
    problems, checked = [], []

    for row in build.modules:
        found = _modules_named(base, row.name)
        checked.append(f"{row.name}: {row.count} x {'quantized' if row.quantized else row.module_class}")
        if len(found) != row.count:
            problems.append(f"{row.name}: the plan has {row.count} of them, the model {len(found)}")
            continue
        if _is_experts(row.name):
            live_quantized = [p for p, m in found if any(t.dtype in _int_dtypes() for t in m.parameters())]
            if live_quantized:
                problems.append(f"{_names(live_quantized)}: quantized, the plan keeps them in {weights_dtype}")
            continue
        quantized = [p for p, m in found if type(m).__name__ in QUANTIZED_CLASSES]
        plain = [p for p, m in found if type(m).__name__ not in QUANTIZED_CLASSES]
        if row.quantized and plain:
            classes = sorted({type(m).__name__ for p, m in found if p in plain})
            problems.append(f"{_names(plain)}: planned quantized ({build.quantization}), built as "
                            f"{'/'.join(classes)} in 16 bits")
        other_format = [p for p, m in found if p in quantized and _format(m) != build.quantization]
        if row.quantized and other_format:
            live = _format(dict(found)[other_format[0]])
            problems.append(f"{_names(other_format)}: quantized as {live}, the plan has {build.quantization}")
        if not row.quantized and quantized:
            problems.append(f"{_names(quantized)}: built quantized ({type(found[0][1]).__name__}), the plan keeps "
                            f"them as {row.module_class} in {weights_dtype} ({row.reason})")
        if not row.quantized:
            wrong_class = [p for p, m in found if type(m).__name__ != row.module_class
                           and type(m).__name__ not in QUANTIZED_CLASSES]
            if wrong_class:
                problems.append(f"{_names(wrong_class)}: built as {type(dict(found)[wrong_class[0]]).__name__}, "
                                f"the plan has {row.module_class}")
            wrong_dtype = [p for p, m in found if getattr(m, "weight", None) is not None
                           and not m.weight.requires_grad and _torch_name(m.weight.dtype) != weights_dtype]
            if wrong_dtype:
                live = _torch_name(dict(found)[wrong_dtype[0]].weight.dtype)
                problems.append(f"{_names(wrong_dtype)}: weights in {live}, the plan has {weights_dtype}")

    # a quantized module in none of the plan's rows (the loop above visits only those): named, not passed
    planned = {row.name for row in build.modules if row.quantized}
    stray = [path for path, module in base.named_modules() if type(module).__name__ in QUANTIZED_CLASSES
             and _own_name(path) not in planned]
    if stray:
        problems.append(f"{_names(stray)}: quantized ({type(base.get_submodule(stray[0])).__name__}), not in the "
                        f"plan's quantized modules ({', '.join(sorted(planned)) or 'none'})")

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    count = sum(p.numel() for _, p in trainable)
    model_spec = getattr(getattr(plan, "recipe", None), "model", None)
    stacked = getattr(model_spec, "adapter", None) is not None and getattr(model_spec, "adapter_mode", "") == "stack"
    if stacked:  # the stacked adapter keeps its own rank and targets; the plan sized method.rank's
        checked.append(f"trainable parameters: {count:,} (a stacked model.adapter: not compared with the plan)")
    else:
        checked.append(f"trainable parameters: {count:,}")
    if not stacked and count != build.trainable_parameters:
        problems.append(f"trainable parameters: the plan has {build.trainable_parameters:,}, the model {count:,}")
    want = _dtype(build.trainable_dtype, precision, planned_precision)
    wrong = [n for n, p in trainable if "lora_magnitude_vector" not in n and _torch_name(p.dtype) != want]
    checked.append(f"trainable dtype: {want}")
    if wrong:
        live = _torch_name(dict(trainable)[wrong[0]].dtype)
        problems.append(f"{_names(wrong)}: trainable in {live}, the plan has {want}")

    if precision != planned_precision:  # a CPU trains an fp16 plan in fp32: said, not passed for the plan
        checked.append(f"precision: {precision} (the plan's {planned_precision} does not train on this device; "
                       f"weights and activations take the room of {precision})")
    else:
        checked.append(f"precision: {precision}")

    attention = getattr(base.config, "_attn_implementation", None)
    checked.append(f"attention: {attention}")
    if attention != build.attention:
        problems.append(f"attention: the model runs {attention}, the plan has {build.attention}")

    args = trainer.args
    packing = "padding_free" if getattr(args, "packing", False) else "off"
    if packing != "off" and not getattr(trainer, "padding_free", getattr(args, "padding_free", False)):
        packing = "padded rows"
    checked.append(f"packing: {packing}")
    if packing != build.packing:
        problems.append(f"packing: the trainer packs as {packing!r}, the plan has {build.packing!r}")
    if packing != "off" and attention != "flash_attention_2":
        problems.append(f"packing with {attention} attention would let packed examples attend to each other; "
                        f"only flash_attention_2 keeps them apart")
    return {"ok": not problems, "checked": checked, "problems": problems}


def _int_dtypes():
    import torch

    return (torch.uint8, torch.int8)


def enforce(result: dict) -> None:
    if result["problems"]:
        raise ConformanceError(
            "the model built for this run differs from its plan, so the plan's memory, time and cost would not "
            "hold; stopped before the first step:\n  - " + "\n  - ".join(result["problems"])
            + "\nRe-plan with this version of recipe (`recipe plan`), or report a bug if the plan is fresh")
