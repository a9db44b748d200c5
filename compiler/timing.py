"""Training time: FLOPs per token for the method, the GPU's peak and a stated utilization."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .architecture import Architecture, parameter_count

# Model FLOPs utilization (achieved / peak dense bf16) assumed per method for a transformers + peft
# + trl run: adapters train at lower MFU than full fine-tuning (small matmuls, dropout, casts);
# QLoRA dequantizes every weight twice per step (forward and backward), DoRA recomputes weight norms.
UTILIZATION = {"full": 0.40, "lora": 0.35, "dora": 0.25, "qlora": 0.25, "qdora": 0.18}
SCALING_PER_DOUBLING = {True: 0.95, False: 0.90}  # data parallel efficiency, NVLink or PCIe
ACROSS_NODES = 0.85  # a further factor per doubling of machines (the network is slower than NVLink)
STRATEGY_EFFICIENCY = {"single": 1.0, "ddp": 1.0, "deepspeed2": 0.95, "fsdp": 0.90, "deepspeed3": 0.85}
OFFLOAD_EFFICIENCY = 0.6  # optimizer steps on the CPU, transfers over PCIe
SETUP_HOURS = 0.1  # loading the model, the baseline and final evaluations


@dataclass(frozen=True)
class TimeEstimate:
    hours: float
    flops_per_token: float
    utilization: float
    tokens_per_second: float
    scaling_efficiency: float


def forward_flops_per_token(arch: Architecture, seq_len: int) -> float:
    """2 x matmul parameters (embedding lookups are free), plus causal attention scores."""
    counts = parameter_count(arch)
    matmul = counts.decoder_linear + counts.experts * arch.experts_per_token / max(arch.num_experts, 1)
    head = arch.vocab_size * arch.hidden_size
    attention = 2 * arch.num_layers * seq_len * arch.num_heads * arch.head_dim  # QK^T and AV, causal half
    return 2 * (matmul + head) + attention


def flops_per_token(arch: Architecture, method: str, seq_len: int, checkpointing: bool,
                    reference_passes: float = 0.0) -> float:
    """Forward, backward (adapters: gradients of activations only; full: also of weights), recompute;
    preference tuning adds the reference model's forward passes (compiler/preference.py)."""
    fwd = forward_flops_per_token(arch, seq_len)
    backward = 2 * fwd if method == "full" else fwd
    return fwd + backward + (fwd if checkpointing else 0) + reference_passes * fwd


def scaling(count: int, nvlink: bool, nodes: int = 1, strategy: str = "single", offload: bool = False) -> float:
    eff = SCALING_PER_DOUBLING[bool(nvlink)] ** math.log2(count) if count > 1 else 1.0
    if nodes > 1:
        eff *= ACROSS_NODES ** math.log2(nodes)
    eff *= STRATEGY_EFFICIENCY.get(strategy, 1.0)
    return eff * (OFFLOAD_EFFICIENCY if offload else 1.0)


def estimate(arch: Architecture, method: str, seq_len: int, checkpointing: bool, train_tokens: float,
             tflops: float, count: int, nvlink: bool, nodes: int = 1, strategy: str = "single",
             offload: bool = False, reference_passes: float = 0.0) -> TimeEstimate:
    per_token = flops_per_token(arch, method, seq_len, checkpointing, reference_passes)
    util = UTILIZATION[method]
    eff = scaling(count, nvlink, nodes, strategy, offload)
    tokens_per_second = tflops * 1e12 * util * count * eff / per_token
    hours = train_tokens / tokens_per_second / 3600 + SETUP_HOURS
    return TimeEstimate(hours, per_token, util, tokens_per_second, eff)


def assumptions(method: str) -> list[str]:
    return [
        f"model FLOPs utilization {UTILIZATION[method]:.0%} of the GPU's dense bf16 peak for {method}",
        "FLOPs per token: forward 2 x matmul parameters + causal attention; backward 1x forward for "
        "adapters (activation gradients), 2x for full fine-tuning; +1 forward with gradient checkpointing",
        f"data parallel efficiency {SCALING_PER_DOUBLING[True]:.0%} (NVLink) / {SCALING_PER_DOUBLING[False]:.0%} "
        f"(PCIe) per doubling of GPUs",
        f"{SETUP_HOURS * 60:.0f} minutes for loading and evaluation",
        f"strategy efficiency: DDP 100%, ZeRO-2 95%, FSDP 90%, ZeRO-3 85%; CPU offload {OFFLOAD_EFFICIENCY:.0%}; "
        f"{ACROSS_NODES:.0%} per doubling of machines",
    ]
