"""What the live model is made of: decided here once, recorded in the plan (`Plan.build`), built by
the runtime from that record and checked against it (runtime/conformance.py) before training.

The rules are the installed libraries' own: transformers' bitsandbytes integration replaces only
modules whose type is exactly nn.Linear (never lm_head, never a subclass such as FalconLinear,
never the fused MoE expert tensors); peft keeps adapters in fp32 on a bf16 base, and trl casts them
to bf16 on a quantized base (DoRA magnitudes stay fp32); full fine-tuning keeps fp32 master weights.
"""

from __future__ import annotations

from ..schemas.plan import BuildPlan, ModuleBuild
from .architecture import (Architecture, attention_implementations, expert_class, expert_parameters, linear_modules,
                           parameter_targets)
from .memory import QUANTIZED
from .stack import needed_parts

_DTYPE = {"bf16": "bf16", "bf16-pure": "bf16", "fp16": "fp16", "fp32": "fp32"}


def quantization_label(method: str, bits: int, quant_type: str) -> str | None:
    if method not in QUANTIZED:
        return None
    return "int8" if bits == 8 else quant_type


def peft_refuses(arch: Architecture, method: str, targets, dropout: float) -> tuple[str, str] | None:
    """(recipe key, message) where peft 0.21 would refuse the adapter at run time: LoRA on MoE expert
    tensors (`target_parameters`, peft's ParamWrapper) works only without DoRA and without dropout. Only
    where 'all-linear' adapts the experts (Mixtral, Qwen3-MoE); on gpt-oss and Qwen3.5-MoE peft adapts the
    nn.Linear modules only, and dropout and DoRA work."""
    adapts_experts = any(p.num_experts > 1 for p in parameter_targets(arch))
    if method == "full" or not adapts_experts or targets not in ("all-linear", ("all-linear",)):
        return None
    if method in ("dora", "qdora"):
        return ("method.name", f"{method}: peft cannot apply DoRA to {arch.family}'s fused expert tensors "
                               f"(ParamWrapper does not work with use_dora); use lora / qlora, or list attention "
                               f"modules in method.targets (q_proj, k_proj, v_proj, o_proj)")
    if dropout > 0:
        return ("method.dropout", f"method.dropout {dropout:g}: peft's LoRA on {arch.family}'s fused expert tensors "
                                  f"(ParamWrapper) does not work with lora_dropout != 0; set method.dropout: 0, or "
                                  f"list attention modules in method.targets")
    return None


def module_rows(arch: Architecture, method: str, bits: int) -> list[ModuleBuild]:
    quantizing = method in QUANTIZED
    rows = []
    for m in linear_modules(arch):
        cls = m.module_class
        if not quantizing:
            quantized, reason = False, f"{method}: the base stays in the compute dtype"
        elif m.quantizable:
            quantized, reason = True, f"nn.Linear: bitsandbytes {bits}-bit"
        else:
            quantized, reason = False, (f"{cls} is a subclass of nn.Linear; transformers' bitsandbytes "
                                        f"integration replaces only exact nn.Linear, so it stays 16-bit")
        same = next((r for r in rows if r.name == m.name and r.module_class == cls), None)
        if same is not None:  # one name, shapes differing between layers (dense and MoE layers): one row
            rows[rows.index(same)] = same.model_copy(update={"count": same.count + m.count})
        else:
            rows.append(ModuleBuild(name=m.name, module_class=cls, count=m.count, quantized=quantized, reason=reason))
    experts = expert_parameters(arch)
    if experts:
        values = sum(p.params for p in experts)
        names = ", ".join(p.name for p in experts)
        why = (f"{values / 1e9:.2f}B expert values ({names}: fused 3-D tensors, not nn.Linear) stay in the "
               f"compute dtype: bitsandbytes quantizes only nn.Linear" if quantizing else
               f"{method}: {values / 1e9:.2f}B expert values ({names}) in the compute dtype")
        path = experts[0].path.rsplit(".", 1)[0]
        rows.append(ModuleBuild(name=path, module_class=expert_class(arch), count=experts[0].count,
                                quantized=False, reason=why))
    return rows


def decide(arch: Architecture, method: str, precision: str, attention: str, packing: bool, bits: int,
           quant_type: str, optimizer: str, trainable_parameters: int) -> BuildPlan:
    compute = _DTYPE[precision]
    if method == "full" and precision == "bf16-pure":
        weights, trainable = "bf16", "bf16"  # no fp32 master copy: weights, gradients, AdamW moments in bf16
    elif method == "full":
        weights, trainable = "fp32", "fp32"
    elif method in QUANTIZED:
        weights, trainable = compute, "bf16"  # trl casts LoRA A/B to bf16 on any quantized base
    else:
        weights, trainable = compute, "fp32"
    states = "uint8" if optimizer.endswith("8bit") else ("fp32" if optimizer == "paged_adamw_32bit" else trainable)
    return BuildPlan(
        modules=module_rows(arch, method, bits),
        quantization=quantization_label(method, bits, quant_type),
        attention=attention,
        attention_supported=list(attention_implementations(arch)),
        weights_dtype=weights,
        trainable_dtype=trainable,
        gradient_dtype=trainable,
        optimizer_state_dtype=states,
        trainable_parameters=trainable_parameters,
        packing="padding_free" if packing else "off",
        stack=needed_parts(method, bits, optimizer, attention),
    )
