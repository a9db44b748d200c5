"""Training time, per micro batch on one GPU: matmul and attention FLOPs over the GPU's peak at a
utilization calibrated per GPU generation, memory-bound parts over its bandwidth, communication
over its interconnect. Every constant here is stated in the plan's `time.assumptions`.

Per micro batch (tokens = micro batch x row length):

- compute: forward FLOPs (2 x matmul parameters incl. the LM head, causal attention over the
  attention length, LoRA's A and B, DoRA's base re-run on dropped-out inputs), backward FLOPs (full
  fine-tuning: activation and weight gradients, 2x the matmuls; a frozen base: activation gradients
  only, 1x; attention 2.5x its forward with flash / sdpa kernels, 2x eager; adapters 2x), and one
  more forward of the decoder layers under gradient checkpointing; each pass takes the larger of
  its FLOPs at the calibrated utilization and reading its weights from memory (small micro batches
  are memory-bound);
- memory-bound: peft's adapter path per token (the input cast to fp32 adapters, dropout, rank-r
  matmuls that stream their inputs, the scaling and the add), bitsandbytes dequantisation of every quantized weight in each pass (read the packed
  weight, write bf16), DoRA's weight norm in each forward (W + BA built and reduced), autocast's bf16
  copies of fp32 master weights, gradient accumulation, the optimizer step (AdamW reads and writes
  parameters, gradients and both moments), shared over the micro batches of an optimizer step;
- communication: FSDP / ZeRO-3 gather the weights in forward and backward and reduce-scatter the
  gradients each micro batch; ZeRO-2 reduce-scatters gradients and gathers updated parameters;
  DDP all-reduces the trainable gradients once per optimizer step; NVLink, PCIe or the network
  across machines, not overlapped with compute (the published FSDP rows lose more than the bare
  transfer time);
- CPU offload: gradients and parameters over PCIe and AdamW at host memory bandwidth.

The utilization per GPU generation is fitted by `benchmarks/time_accuracy.py --fit` to published
throughput of the same training stack (benchmarks/data/published_throughput.csv) and kept in
data/time_model.json; a project's own run reports refine it per GPU (`recipe calibrate`).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .architecture import Architecture, linear_modules, parameter_count

MODEL_FILE = Path(__file__).parent / "data" / "time_model.json"
SETUP_HOURS = 0.1  # loading the model, the baseline and final evaluations

BANDWIDTH_EFFICIENCY = 0.8  # share of the spec-sheet memory bandwidth streaming kernels reach
LINK_EFFICIENCY = 0.8  # share of a link's one-direction bandwidth NCCL reaches
PCIE_GBS = {"Gen3": 16.0, "Gen4": 32.0, "Gen5": 64.0}  # x16, one direction
NETWORK_GBS = 25.0  # across machines: 200 Gb/s (InfiniBand HDR / EFA) per node, one direction
HOST_GBS = 50.0  # CPU offload: host memory bandwidth AdamW streams at
ATTENTION_BACKWARD = {"eager": 2.0}  # x forward; flash / sdpa kernels recompute the scores: 2.5
FLASH_BACKWARD = 2.5
CUSTOM_BYTES_PER_FLOP = 2039 / 312  # a custom GPU without a bandwidth: an A100's ratio (GB/s per TFLOPS)


@functools.lru_cache(maxsize=1)
def time_model() -> dict:
    with MODEL_FILE.open(encoding="utf-8") as f:
        return json.load(f)


def generation(arch_text: str) -> str:
    """'Ampere (GA102)' -> 'Ampere'; 'Blackwell Ultra' -> 'Blackwell'."""
    return (arch_text or "").split(" ")[0].split("(")[0]


def utilization_for(gen: str) -> tuple[float, str]:
    """(matmul utilization, where it comes from) for a GPU generation."""
    model = time_model()
    fitted = model["utilization"]
    if gen in fitted:
        entry = fitted[gen]
        return entry["value"], f"fitted to {entry['rows']} published same-stack rows on {gen}"
    base = model["uncalibrated_from"]
    return fitted[base]["value"], f"no published same-stack rows on {gen or 'this GPU'}: {base}'s figure"


@dataclass(frozen=True)
class GPUSpeed:
    name: str
    tflops: float
    bandwidth_gbs: float = 0.0
    nvlink: bool = False
    interconnect: str = ""
    arch: str = ""

    @property
    def bandwidth(self) -> float:
        """Bytes per second memory-bound kernels reach."""
        gbs = self.bandwidth_gbs or self.tflops * CUSTOM_BYTES_PER_FLOP
        return gbs * 1e9 * BANDWIDTH_EFFICIENCY

    def link(self, count: int, nodes: int) -> float:
        """Bytes per second one GPU sends in a collective: the slowest link of the ring."""
        if nodes > 1:
            return NETWORK_GBS * 1e9 * LINK_EFFICIENCY
        if self.nvlink:
            m = re.search(r"([\d.]+)\s*(TB|GB)/s", self.interconnect)
            total = float(m.group(1)) * (1000 if m.group(2) == "TB" else 1) if m else 600.0
            return total / 2 * 1e9 * LINK_EFFICIENCY
        if "bridge" in self.interconnect and count == 2:
            return 56.0 * 1e9 * LINK_EFFICIENCY  # a 2-way NVLink bridge, one direction
        gen = next((g for g in PCIE_GBS if g in self.interconnect), "Gen4")
        return PCIE_GBS[gen] * 1e9 * LINK_EFFICIENCY


@dataclass(frozen=True)
class Rows:
    """What a micro batch holds: rows of `length` tokens (padded, or packed to max_seq_len), whose
    attention spans `attention` tokens (the row, or one example under varlen flash-attention)."""

    length: float
    attention: float


@dataclass(frozen=True)
class TimeEstimate:
    hours: float
    flops_per_token: float
    utilization: float
    tokens_per_second: float
    scaling_efficiency: float
    step_seconds: dict = field(default_factory=dict)  # per optimizer step on one GPU, by part
    utilization_source: str = ""
    calibration_factor: float = 1.0


def _targets(arch: Architecture, shape):
    from .memory import resolve_targets

    return [] if shape.method == "full" else resolve_targets(arch, shape.targets)


def flop_parts(arch: Architecture, shape, attention_len: float) -> dict[str, float]:
    """FLOPs per token of each pass: forward, backward, recompute (checkpointing)."""
    counts = parameter_count(arch)
    matmul = counts.decoder_linear + counts.experts * arch.experts_per_token / max(arch.num_experts, 1)
    head = 2 * arch.vocab_size * arch.hidden_size
    decoder = 2 * matmul
    # QK^T and AV, causal half, in the layers with softmax attention (not linear-attention layers)
    attention = 2 * arch.softmax_attention_layers * attention_len * arch.num_heads * arch.head_dim
    targeted = _targets(arch, shape)
    adapter = sum(2 * shape.rank * (m.in_features + m.out_features) * m.count for m in targeted)
    dora = shape.method in ("dora", "qdora")
    # peft's DoRA runs the base layer again on the dropped-out input when dropout > 0
    dora_rerun = sum(2 * m.in_features * m.out_features * m.count for m in targeted) \
        if dora and shape.dropout > 0 else 0
    layers_fwd = decoder + attention + adapter + dora_rerun
    att_back = ATTENTION_BACKWARD.get(shape.attention, FLASH_BACKWARD)
    if shape.method == "full":
        backward = 2 * (decoder + head) + att_back * attention
    else:
        backward = decoder + head + att_back * attention + 2 * adapter + dora_rerun
    # preference tuning: the reference model's forward passes per trained token (compiler/preference.py)
    reference = getattr(shape, "reference_passes", 0.0) * (decoder + attention + head)
    return {"forward": layers_fwd + head, "backward": backward,
            "recompute": layers_fwd if shape.gradient_checkpointing else 0.0, "reference": reference}


def flops_per_token(arch: Architecture, shape, attention_len: float) -> float:
    return sum(flop_parts(arch, shape, attention_len).values())


def _weight_read_bytes(arch: Architecture) -> float:
    """What the matmuls of one pass read: every weight in the compute dtype (a quantized one after
    dequantisation)."""
    counts = parameter_count(arch)
    return (counts.decoder_linear + counts.experts + counts.lm_head + (
        counts.embedding if arch.tied_embeddings else 0)) * 2


def _optimizer_bytes_per_param(shape) -> tuple[float, float, float]:
    """(parameter, gradient, moment) bytes of the trainable tensors."""
    if shape.method == "full":
        p = 2 if shape.precision == "bf16-pure" else 4
    else:
        p = 2 if shape.method in ("qlora", "qdora") else 4
    m = 1 if shape.optimizer.endswith("8bit") else (4 if shape.optimizer == "paged_adamw_32bit" else p)
    return p, p, m


def adapter_bytes_per_token(arch: Architecture, shape) -> float:
    """What peft's adapter path streams per token in one forward, over all targeted modules: the input
    cast to the adapters' dtype (fp32 on a bf16 base), dropout (read, write, mask), LoRA A reading its
    input (a rank-r matmul is memory-bound), B writing its output, the scaling and the add."""
    if shape.method == "full":
        return 0.0
    width = 4 if shape.method in ("lora", "dora") else 2
    total = 0.0
    for m in _targets(arch, shape):
        per_in = width + (2 * width + 1 if shape.dropout > 0 else 0) + (2 + width if width == 4 else 0)
        total += (m.in_features * per_in + m.out_features * 8) * m.count
    return total


def memory_seconds(arch: Architecture, shape, gpu: GPUSpeed, trainable: int, tokens: float = 0.0) -> dict[str, float]:
    """Memory-bound work: per micro batch (adapter paths, dequantisation, DoRA norms, casts,
    accumulation) and per optimizer step (the optimizer)."""
    bw = gpu.bandwidth
    n = shape.processes if shape.shards_states else 1
    forward_passes = 2 if shape.gradient_checkpointing else 1
    passes = forward_passes + 1
    out = {}
    if tokens and shape.method != "full":  # forward passes, and a backward that streams twice as much
        out["adapter_elementwise"] = (forward_passes + 2) * tokens * adapter_bytes_per_token(arch, shape) / bw
    if shape.method in ("qlora", "qdora"):
        quantized = sum(m.weight_params for m in linear_modules(arch) if m.quantizable)
        packed = 0.5 if shape.quant_bits == 4 else 1.0
        # read the packed weight and its constants, write the bf16 weight the matmul reads
        out["dequantization"] = passes * quantized * (packed + 1 / 32 + 2) / bw
    if shape.method in ("dora", "qdora"):
        targeted = sum(m.in_features * m.out_features * m.count for m in _targets(arch, shape))
        built = 4 if shape.method == "dora" else 2  # W + BA in fp32 (dora) / bf16 (qdora)
        out["dora_norm"] = forward_passes * targeted * (2 + 2 * built) / bw
    p, g, m = _optimizer_bytes_per_param(shape)
    per_rank = trainable / n
    if shape.method == "full" and shape.precision != "bf16-pure":
        # autocast's bf16 copy of each fp32 weight in every forward; fp32 gradients accumulate
        out["master_weight_casts"] = forward_passes * trainable / (shape.processes if shape.shards_weights else 1) \
            * (4 + 2) / bw
    if shape.gradient_accumulation_steps > 1:
        out["gradient_accumulation"] = per_rank * 2 * g / bw
    optimizer = per_rank * (2 * p + g + 4 * m) / bw  # read p, g, m, v; write p, m, v
    if shape.cpu_offload and shape.shards_states:
        optimizer = per_rank * (g + p) / (PCIE_GBS["Gen4"] * 1e9 * LINK_EFFICIENCY) \
            + per_rank * (2 * 4 + g + 4 * 4) / (HOST_GBS * 1e9)
    out["optimizer_step"] = optimizer / shape.gradient_accumulation_steps
    return out


def communication_seconds(arch: Architecture, shape, gpu: GPUSpeed, count: int, nodes: int,
                          trainable: int) -> float:
    """Per micro batch: collectives of the strategy, one GPU's share of a ring over the slowest link."""
    if count <= 1:
        return 0.0
    link = gpu.link(count, nodes)
    share = (count - 1) / count
    counts = parameter_count(arch)
    grads = trainable * _optimizer_bytes_per_param(shape)[1]
    stored = {4: 0.5, 8: 1.0}.get(shape.quant_bits, 2) if shape.method in ("qlora", "qdora") else 2
    weights = (counts.total - counts.embedding * (not arch.tied_embeddings)) * stored
    gas = shape.gradient_accumulation_steps
    if shape.strategy == "ddp":
        return 2 * share * grads / link / gas  # one all-reduce per optimizer step
    if shape.shards_weights:  # FSDP full shard, ZeRO-3: gather in forward and backward, reduce-scatter
        return share * (2 * weights + grads) / link
    # ZeRO-2: reduce-scatter gradients each micro batch, gather updated parameters each step
    return share * grads / link + share * weights / link / gas


def estimate(arch: Architecture, shape, gpu: GPUSpeed, count: int, train_tokens: float, rows: Rows,
             nodes: int = 1, trainable: Optional[int] = None, calibration_factor: float = 1.0) -> TimeEstimate:
    """Hours to compute `train_tokens` (padding included) with this step shape on `count` GPUs."""
    if trainable is None:
        from .memory import adapter_tensors

        trainable = sum(numel * c for numel, _, c in adapter_tensors(arch, shape))
    util, source = utilization_for(generation(gpu.arch))
    peak = gpu.tflops * 1e12 * util
    tokens = shape.micro_batch_size * rows.length
    parts = flop_parts(arch, shape, rows.attention)
    weight_read = _weight_read_bytes(arch) / gpu.bandwidth
    compute = 0.0
    for name, per_token in parts.items():
        if per_token:  # roofline of the pass; the reference runs reference_passes of them
            passes = getattr(shape, "reference_passes", 0.0) if name == "reference" else 1.0
            compute += max(per_token * tokens / peak, weight_read * passes)
    mem = memory_seconds(arch, shape, gpu, trainable, tokens)
    comm = communication_seconds(arch, shape, gpu, count, nodes, trainable)
    micro = compute + sum(mem.values()) + comm
    gas = shape.gradient_accumulation_steps
    step = {"compute": compute * gas, **{k: v * gas for k, v in mem.items()}, "communication": comm * gas}
    per_gpu = tokens / micro * calibration_factor
    total = per_gpu * count
    ideal = tokens / (compute + sum(mem.values())) * count * calibration_factor
    hours = train_tokens / total / 3600 + SETUP_HOURS
    return TimeEstimate(hours, sum(parts.values()), util, total, total / ideal if ideal else 1.0,
                        {k: round(v, 4) for k, v in step.items() if v}, source, calibration_factor)


def assumptions(est: Optional[TimeEstimate], gpu_name: str, calibration: Optional[str] = None) -> list[str]:
    out = [
        f"matmul utilization {est.utilization:.0%} of the {gpu_name}'s dense bf16 peak ({est.utilization_source}; "
        f"benchmarks/time_accuracy.py)" if est else
        f"time not estimated: no step of this plan runs on the {gpu_name}",
        "FLOPs per token: forward 2 x matmul parameters (LM head included) + causal attention over the attention "
        "length in the layers with softmax attention (a linear-attention layer's recurrence, such as Qwen3.5's "
        "gated delta net, is not counted) + LoRA A/B (+ DoRA's base re-run on dropped-out inputs); backward 2x the matmuls for full "
        "fine-tuning, 1x for a frozen base (activation gradients only), attention 2.5x its forward (2x eager); "
        "+1 forward of the decoder layers with gradient checkpointing",
        f"memory-bound parts at {BANDWIDTH_EFFICIENCY:.0%} of the GPU's bandwidth: peft's adapter path per token "
        "(input cast, dropout, LoRA A and B, scale and add), 4-bit dequantisation of every "
        "quantized weight in each pass, DoRA's weight norm in each forward, fp32 master weights cast to bf16 "
        "in each forward, the AdamW step (parameters, gradients, moments read and written), small micro batches "
        "bound by reading the weights",
        f"communication at {LINK_EFFICIENCY:.0%} of one direction of the link (NVLink as listed, PCIe Gen3/4/5 "
        f"{PCIE_GBS['Gen3']:.0f}/{PCIE_GBS['Gen4']:.0f}/{PCIE_GBS['Gen5']:.0f} GB/s, {NETWORK_GBS:.0f} GB/s "
        "across machines), not overlapped: FSDP / ZeRO-3 gather weights in forward and backward and "
        "reduce-scatter gradients each micro batch; DDP all-reduces gradients each optimizer step",
        "unpacked rows are padded to the longest of each micro batch (the padding is computed); packed rows "
        "are full and attend across the row (one example each under flash_attention_2)",
        f"{SETUP_HOURS * 60:.0f} minutes for loading and evaluation",
    ]
    if est and est.step_seconds:
        out.append("seconds per optimizer step on one GPU as modelled (before any calibration): " + ", ".join(
            f"{k.replace('_', ' ')} {v:.3g}" for k, v in est.step_seconds.items()))
    if calibration:
        out.append(calibration)
    return out
