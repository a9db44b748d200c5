"""The memory estimate: what one GPU holds at the peak of a training step, by component.

It models what the project's runtime (transformers + peft + trl's SFTTrainer) allocates:

- weights: the base model in the compute dtype (bf16), fp32 master weights for full fine-tuning, or
  bitsandbytes 4-bit / 8-bit linears (packed weights plus absmax constants; double quant stores them
  in 8 bits with a second-level fp32 absmax per 256) with embeddings, lm_head and norms unquantized;
- adapters (LoRA A and B, DoRA magnitude vectors): fp32 on a bf16 base (peft's default), bf16 on a
  quantized base (trl casts them, the DoRA magnitude stays fp32); their gradients alike;
- optimizer states: AdamW's two moments in the parameter dtype; bitsandbytes 8-bit AdamW keeps
  uint8 moments with an fp32 absmax per 256 values for tensors of 4096 values or more; paged
  optimizers keep the moments of tensors of 1e5 values or more in CUDA managed memory, outside the
  caching allocator, so those are in `required_bytes` but not in `allocated_peak_bytes`;
- activations: per decoder layer and token, a linear model over the layer's shapes (hidden,
  intermediate, attention sizes, the inputs of targeted modules, rank, dropout, DoRA, eager
  attention's score matrices) whose coefficients are fitted to the tracer (`recipe plan --trace`,
  see benchmarks/calibrate_activations.py) and kept in data/activation_model.json; gradient
  checkpointing keeps one hidden state per layer plus one recomputed layer; MoE layers with LoRA on
  the fused expert tensors keep the folded expert weights; DoRA's weight-sized temporaries are a
  forward phase, before the LM head's working set exists (`dora_excess_bytes`);
- logits and loss: trl's fused LM head never builds the (batch, seq, vocab) logits; it holds a
  (min(tokens, 4096), 32768) tile in the compute dtype and an fp32 gradient of the last hidden state;
- CUDA context and allocator overhead, for `required_bytes`.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..schemas.errors import RecipeError
from .architecture import (Architecture, Linear, attention_implementations, linear_modules, parameter_count,
                           parameter_targets, quantizable_linears)
from .suggest import close

MODEL_FILE = Path(__file__).parent / "data" / "activation_model.json"
GIB = 1024**3

# trl.kernels.chunked_logprob: TOKEN_CHUNK_SIZE and _CHUNKED_LOGPROB_CHUNK_SIZE (trl 1.16)
HEAD_TOKEN_CHUNK = 4096
HEAD_VOCAB_CHUNK = 32768

CUDA_CONTEXT_BYTES = int(0.75 * GIB)  # CUDA context, cuBLAS/cuDNN handles; outside the allocator
ALLOCATOR_OVERHEAD = 0.10  # reserved beyond allocated (fragmentation, rounding), of the peak

QUANTIZED = ("qlora", "qdora")


@dataclass(frozen=True)
class StepShape:
    """Everything the estimate depends on besides the architecture."""

    method: str
    rank: int = 16
    dropout: float = 0.05
    targets: tuple = ("all-linear",)
    micro_batch_size: int = 1
    seq_len: int = 2048
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    optimizer: str = "adamw"
    precision: str = "bf16"
    attention: str = "sdpa"
    quant_bits: int = 4
    double_quant: bool = True
    processes: int = 1  # data-parallel ranks
    strategy: str = "single"  # single | ddp | fsdp | deepspeed
    zero_stage: int = 3
    cpu_offload: bool = False
    objective: str = "sft"  # sft | dpo | orpo | kto (compiler/preference.py)
    reference: str = "none"  # preference: adapter_disabled | second_model | precomputed | none
    reference_passes: float = 0.0  # the reference's forward passes per trained token (timing only)

    @property
    def shards_weights(self) -> bool:
        """FSDP full shard and ZeRO-3 divide the weights across ranks; DDP and ZeRO-2 replicate them."""
        return self.processes > 1 and (self.strategy == "fsdp" or (self.strategy == "deepspeed" and self.zero_stage == 3))

    @property
    def shards_states(self) -> bool:
        """FSDP and ZeRO (2 and 3) divide gradients and optimizer states across ranks."""
        return self.processes > 1 and self.strategy in ("fsdp", "deepspeed")

    @property
    def tokens(self) -> int:
        return self.micro_batch_size * self.seq_len


@dataclass(frozen=True)
class MemoryEstimate:
    components: dict  # name -> bytes
    allocated_peak_bytes: int
    required_bytes: int
    trainable_params: int

    def fits(self, capacity_bytes: int) -> bool:
        return self.required_bytes <= capacity_bytes


def attention_for(arch: Architecture, requested: str, packing: bool = False) -> str:
    """`auto` is sdpa where the family's transformers class supports it (Gemma 2 does not: eager);
    with packing, flash_attention_2, whose varlen kernels keep packed examples apart."""
    if requested != "auto":
        return requested
    if packing:
        return "flash_attention_2"
    return "sdpa" if "sdpa" in attention_implementations(arch) else "eager"


# --- targets ------------------------------------------------------------------------------------

def resolve_targets(arch: Architecture, targets) -> list[Linear]:
    """The linear modules LoRA adapts: 'all-linear' (peft's meaning: all but lm_head) or names."""
    modules = linear_modules(arch)
    if targets == "all-linear" or targets == ("all-linear",):
        return modules
    names = {m.name: m for m in modules}
    wanted = list(targets)
    unknown = [t for t in wanted if t not in names]
    if unknown:
        hints = []
        for t in unknown:
            found = close(t, list(names), n=1)
            hints.append(f"'{t}'" + (f" (did you mean '{found[0]}'?)" if found else ""))
        raise RecipeError(
            f"method.targets: no module named {', '.join(hints)} in a {arch.family} model; "
            f"its linear modules are: {', '.join(names)}")
    return [names[t] for t in dict.fromkeys(wanted)]


# --- static parts ---------------------------------------------------------------------------------

def _dtype_bytes(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def weight_bytes(arch: Architecture, shape: StepShape) -> tuple[int, int]:
    """(weights, quantization constants) of the base model as loaded."""
    counts = parameter_count(arch)
    if shape.method == "full":  # fp32 master weights, or bf16 ones under bf16-pure
        return counts.total * (2 if shape.precision == "bf16-pure" else 4), 0
    compute = _dtype_bytes(shape.precision)
    if shape.method not in QUANTIZED:
        return counts.total * compute, 0
    replaced = quantizable_linears(arch)  # only exact nn.Linear modules: Falcon's stay 16-bit
    quantized = sum(m.weight_params for m in replaced)
    rest = counts.total - quantized
    if shape.quant_bits == 8:
        rows = sum(m.out_features * m.count for m in replaced)
        return quantized + rest * compute, rows * 4
    constants = 0
    for m in replaced:
        blocks = math.ceil(m.in_features * m.out_features / 64)
        per = blocks + math.ceil(blocks / 256) * 4 if shape.double_quant else blocks * 4
        constants += per * m.count
    return math.ceil(quantized / 2) + rest * compute, constants


def adapter_tensors(arch: Architecture, shape: StepShape) -> list[tuple[int, int, int]]:
    """(numel, bytes per value, instances) of each trainable tensor kind."""
    if shape.method == "full":  # bf16-pure: bf16 weights, gradients and AdamW moments (8 bytes / parameter)
        return [(parameter_count(arch).total, 2 if shape.precision == "bf16-pure" else 4, 1)]
    lora_dtype = 2 if shape.method in QUANTIZED else 4
    r = shape.rank
    out = []
    for m in resolve_targets(arch, shape.targets):
        out.append((r * m.in_features, lora_dtype, m.count))
        out.append((m.out_features * r, lora_dtype, m.count))
        if shape.method in ("dora", "qdora"):
            out.append((m.out_features, 4, m.count))
    if shape.targets in ("all-linear", ("all-linear",)):
        for p in parameter_targets(arch):
            rank = r * p.lora_rank_multiplier * p.num_experts
            out.append((rank * p.in_features, lora_dtype, p.count))
            out.append((p.out_features * rank, lora_dtype, p.count))
    return out


# bitsandbytes' paged optimizers put a state in CUDA managed memory only for tensors of this many
# values or more (Optimizer8bit.get_state_buffer); smaller ones, and every absmax, are ordinary allocations
PAGED_MIN_NUMEL = 100_000


def optimizer_bytes(tensors: list[tuple[int, int, int]], optimizer: str) -> tuple[int, int]:
    """(optimizer states on the device, states in paged managed memory)."""
    on_device = paged = 0
    paging = optimizer.startswith("paged_")
    for numel, size, count in tensors:
        absmax = 0
        if optimizer.endswith("8bit") and numel >= 4096:
            moments, absmax = 2 * numel, 2 * 4 * math.ceil(numel / 256)
        elif optimizer.endswith("8bit") or optimizer == "paged_adamw_32bit":
            moments = 2 * 4 * numel
        else:
            moments = 2 * size * numel
        if paging and numel >= PAGED_MIN_NUMEL:
            paged += moments * count
            on_device += absmax * count
        else:
            on_device += (moments + absmax) * count
    return on_device, paged


# --- activations ----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def activation_model() -> dict:
    with MODEL_FILE.open(encoding="utf-8") as f:
        return json.load(f)


def layer_features(arch: Architecture, shape: StepShape) -> dict[str, float]:
    """Per decoder layer and token: the quantities saved activations scale with."""
    n = arch.num_layers
    targeted = resolve_targets(arch, shape.targets) if shape.method != "full" else []
    fp32_adapters = shape.method in ("lora", "dora")
    drop = shape.dropout > 0
    sum_in = sum(m.in_features * m.count for m in targeted) / n
    sum_out = sum(m.out_features * m.count for m in targeted) / n
    modules = sum(m.count for m in targeted) / n
    mlp = arch.intermediate_size * (arch.experts_per_token if arch.num_experts > 1 else 1)
    all_in = sum(m.in_features * m.count for m in linear_modules(arch)) / n
    dora = shape.method in ("dora", "qdora")
    gelu = arch.hidden_act.startswith("gelu")
    full = shape.method == "full"
    layer_weights = sum(m.in_features * m.out_features for m in linear_modules(arch))
    moe = arch.num_experts > 1
    scored = arch.softmax_attention_layers / n  # score matrices only in the layers with softmax attention
    return {
        "norm": arch.norms_per_layer * arch.hidden_size,
        "hidden": arch.hidden_size,
        "q": arch.num_heads * arch.head_dim,
        "kv": arch.num_kv_heads * arch.head_dim,
        "mlp_gated_silu": mlp if arch.gated_mlp and not gelu else 0,
        "mlp_gated_gelu": mlp if arch.gated_mlp and gelu else 0,
        "mlp_plain": 0 if arch.gated_mlp else mlp,
        # transformers' NewGELUActivation (phi) is written in Python ops: each keeps its intermediate
        "mlp_gelu_new": mlp if arch.hidden_act == "gelu_new" else 0,
        "lora_in_fp32": sum_in if fp32_adapters else 0,
        "lora_in_bf16": 0 if fp32_adapters else sum_in,
        "dropout_in_fp32": sum_in if (drop and fp32_adapters) else 0,
        "dropout_in_bf16": sum_in if (drop and not fp32_adapters) else 0,
        "lora_rank": modules * shape.rank,
        "dora_out_fp32": sum_out if dora and fp32_adapters else 0,
        "dora_out_bf16": sum_out if dora and not fp32_adapters else 0,
        "dora_dropout_out": sum_out if dora and drop and fp32_adapters else 0,
        # QDoRA with dropout: peft recomputes the base output from the dequantized weight
        # (F.linear(dropout(x), W)), which the matmul keeps for backward: each quantized targeted
        # module's weight in the compute dtype, per layer (per token here)
        "qdora_dequantized_per_token": _dequantized_kept(arch, shape) / shape.tokens if dora and drop else 0,
        "full_in": all_in if full else 0,
        # autocast's bf16 copies of each layer's fp32 weights, kept for backward (per token)
        "full_weights_per_token": layer_weights / shape.tokens if full and shape.precision != "bf16-pure" else 0,
        "full_norm": arch.norms_per_layer * arch.hidden_size if full else 0,
        "full_mlp": mlp if full else 0,
        "eager_scores": scored * arch.num_heads * shape.seq_len if shape.attention == "eager" else 0,
        "softcap_scores": scored * arch.num_heads * shape.seq_len if shape.attention == "eager"
        and arch.attn_logit_softcapping else 0,
        "sdpa_math_scores": scored * arch.num_heads * shape.seq_len if _sdpa_math(arch, shape) else 0,
        "int8_inputs": int8_kept_inputs(arch, shape),
        # MoE: the routed copies of each token's hidden state (one per chosen expert: gathered input,
        # expert output, weighted output)
        "moe_routed": arch.experts_per_token * arch.hidden_size if moe else 0,
        # LoRA on the fused expert tensors (peft's ParamWrapper) folds W + B A into one expert-stack-sized
        # tensor per forward (a parametrization, baddbmm); the expert matmul keeps it for backward: a
        # whole copy of the layer's expert weights, in the compute dtype, per layer (per token here)
        "expert_lora_weights_per_token": expert_lora_weights(arch, shape) / shape.tokens,
    }


def _dequantized_kept(arch: Architecture, shape: StepShape) -> float:
    """Per layer: the weight values of the targeted modules that are really quantized (QDoRA)."""
    if shape.method not in QUANTIZED:
        return 0
    replaced = {m.name for m in quantizable_linears(arch)}
    return sum(m.in_features * m.out_features * m.count for m in resolve_targets(arch, shape.targets)
               if m.name in replaced) / arch.num_layers


def expert_lora_weights(arch: Architecture, shape: StepShape) -> int:
    """Per layer: the values of the fused expert tensors LoRA adapts through peft's ParamWrapper."""
    if shape.method == "full" or shape.targets not in ("all-linear", ("all-linear",)):
        return 0
    return sum(p.params for p in parameter_targets(arch) if p.num_experts > 1) // arch.num_layers


_OUTPUT_SIDE = {"o_proj", "dense", "down_proj", "fc2", "dense_4h_to_h"}


def int8_kept_inputs(arch: Architecture, shape: StepShape) -> int:
    """Per layer and token: the values of the inputs bitsandbytes' 8-bit matmul keeps for backward
    (MatMul8bitLt saves its input A), one per distinct input tensor (q/k/v share theirs), less those
    LoRA already keeps itself (a targeted module without dropout saves the very same tensor)."""
    if shape.method not in QUANTIZED or shape.quant_bits != 8:
        return 0
    n = arch.num_layers
    targeted = {m.name for m in resolve_targets(arch, shape.targets)}
    groups: dict[tuple, tuple[int, bool]] = {}
    for m in quantizable_linears(arch):
        key = (m.group, m.name in _OUTPUT_SIDE)
        if arch.parallel_block and arch.norms_per_layer == 1 and not key[1]:
            key = ("shared", False)  # attention and MLP read one normed input
        kept_by_lora = m.name in targeted and shape.dropout == 0
        dim, kept = groups.get(key, (m.in_features * m.count // n, False))
        groups[key] = (dim, kept or kept_by_lora)
    return sum(dim for dim, kept in groups.values() if not kept)


def _sdpa_math(arch: Architecture, shape: StepShape) -> bool:
    return shape.attention == "sdpa" and arch.sdpa_materializes_scores


def dora_forward_bytes(arch: Architecture, shape: StepShape) -> int:
    """DoRA's weight-sized temporaries, one targeted module at a time, in its forward (peft 0.21
    DoraLinearLayer: `get_lora_weight` builds B A from `torch.eye(in)`, which the graph keeps in the
    compute dtype; `get_weight_norm` adds `scaling * B A` to the (dequantized, for QDoRA) weight).
    Measured with the tracer per module (phi-3-mini, llama, falcon shapes, in the module's forward):
    2 bytes per in x in value, and per in x out value 16 bytes with fp32 adapters (DoRA), 8 with bf16
    adapters on a quantized weight (QDoRA), 6 on a weight left 16-bit (Falcon's FalconLinear).
    The largest module's count."""
    if shape.method not in ("dora", "qdora"):
        return 0
    compute = _dtype_bytes(shape.precision)
    quantized = shape.method in QUANTIZED
    replaced = {m.name for m in quantizable_linears(arch)} if quantized else set()
    worst = 0
    for m in resolve_targets(arch, shape.targets):
        per_weight = 8 if m.name in replaced else 6 if quantized else 16
        worst = max(worst, m.in_features * m.in_features * compute + m.in_features * m.out_features * per_weight)
    return worst


def dora_excess_bytes(arch: Architecture, shape: StepShape) -> int:
    """DoRA's temporaries live in the forward, before the LM head's working set exists (and, with
    checkpointing, in a recomputed layer's forward, after it is gone): they raise the peak only by
    what they exceed that working set by."""
    return max(0, dora_forward_bytes(arch, shape) - head_bytes(arch, shape))


def transient_features(arch: Architecture, shape: StepShape) -> dict[str, float]:
    """What the step holds at its peak beyond the kept layers and the LM head, by cause (bytes
    before their coefficient): full fine-tuning's weight gradient temporaries (an untied LM head's,
    one layer's), a recomputed layer's MLP gradients, sdpa's math-path scores. (DoRA's weight-sized
    temporaries are a phase of their own: `dora_excess_bytes`.)"""
    layer_weights = sum(m.in_features * m.out_features for m in linear_modules(arch))
    return {
        "full_vocab_untied": arch.vocab_size * arch.hidden_size
        if shape.method == "full" and not arch.tied_embeddings else 0,
        "full_layer": layer_weights if shape.method == "full" else 0,
        # recomputing a checkpointed layer in backward: its MLP's intermediate gradients
        "checkpoint_mlp": shape.tokens * arch.intermediate_size * max(1, arch.experts_per_token)
        if shape.gradient_checkpointing else 0,
        # sdpa's math path: one layer's score-sized temporaries in its backward
        "sdpa_math_backward": shape.tokens * arch.num_heads * shape.seq_len if _sdpa_math(arch, shape) else 0,
    }


def checkpoint_bytes_per_token(arch: Architecture, shape: StepShape) -> int:
    """Gradient checkpointing keeps each layer's input hidden state: bf16, fp32 under full fine-tuning."""
    fp32 = (shape.method == "full" and shape.precision != "bf16-pure") or shape.precision == "fp32"
    return arch.hidden_size * (4 if fp32 else 2)


def layer_bytes_per_token(arch: Architecture, shape: StepShape) -> float:
    coef = activation_model()["layer"]
    return sum(coef.get(k, 0.0) * v for k, v in layer_features(arch, shape).items())


def head_bytes(arch: Architecture, shape: StepShape) -> int:
    """trl's fused LM head: the logits tile and the fp32 gradient of the last hidden state."""
    tokens = shape.tokens
    tile = min(tokens, HEAD_TOKEN_CHUNK) * HEAD_VOCAB_CHUNK * _dtype_bytes(shape.precision)
    return tile + tokens * arch.hidden_size * 4


def activation_bytes(arch: Architecture, shape: StepShape) -> tuple[int, int]:
    """(activations of the decoder layers at the peak, the LM head's working set)."""
    coef = activation_model()["transient"]
    t = shape.tokens
    per_layer = layer_bytes_per_token(arch, shape)
    transient = sum(coef.get(k, 0.0) * v for k, v in transient_features(arch, shape).items())
    if shape.gradient_checkpointing:
        layers = arch.num_layers * checkpoint_bytes_per_token(arch, shape) * t
        transient += coef.get("recomputed_layer", 1.0) * per_layer * t
    else:
        layers = arch.num_layers * per_layer * t
    total = layers + transient + dora_excess_bytes(arch, shape)
    if shape.method == "full" and arch.tied_embeddings:
        # the tied embedding's gradient arrives last in backward, when activations are freed: a phase
        # of its own (fp32 gradient temporaries of vocab x hidden), the larger of the two is the peak
        total = max(total, activation_model()["phases"]["full_tied_vocab"] * arch.vocab_size * arch.hidden_size)
    return int(total), head_bytes(arch, shape)


# --- the whole estimate ---------------------------------------------------------------------------

def communication_bytes(arch: Architecture, shape: StepShape, gradients: int) -> int:
    """Per rank: DDP's gradient buckets (a copy of the gradients); for sharded weights, the gathered
    root module (embeddings and LM head, never quantized, in the compute dtype) and two decoder
    layers as stored (4-bit / 8-bit packed, else the compute dtype: mixed precision gathers bf16 even
    for fp32 master weights); two layers' unsharded gradients (FSDP's reduce-scatter) or ZeRO's bucket
    (about hidden^2 values); NCCL's own buffers."""
    if shape.processes == 1:
        return 0
    nccl = 256 * 2**20
    if shape.strategy == "ddp":
        return gradients + nccl
    counts = parameter_count(arch)
    compute = _dtype_bytes(shape.precision)
    layer = (counts.decoder_linear + counts.experts) / arch.num_layers
    stored = {4: 0.5, 8: 1.0}.get(shape.quant_bits, compute) if shape.method in QUANTIZED else compute
    gathered = 0.0
    if shape.shards_weights:
        gathered = (counts.embedding + counts.lm_head) * compute + 2 * layer * stored
    reduce = arch.hidden_size ** 2 * 4 if shape.strategy == "deepspeed" else 2 * gradients / arch.num_layers
    return int(gathered + reduce + nccl)


def estimate(arch: Architecture, shape: StepShape, context_bytes: int = CUDA_CONTEXT_BYTES) -> MemoryEstimate:
    if shape.objective != "sft":
        from . import preference

        return preference.estimate(arch, shape, lambda a, s: estimate(a, s, context_bytes))
    weights, constants = weight_bytes(arch, shape)
    tensors = adapter_tensors(arch, shape)
    trainable = sum(numel * count for numel, _, count in tensors)
    adapter = sum(numel * size * count for numel, size, count in tensors)
    states, paged = optimizer_bytes(tensors, shape.optimizer)
    activations, head = activation_bytes(arch, shape)
    full = shape.method == "full"  # the whole model is trainable: its weights are the trainable ones
    n = shape.processes
    comm = communication_bytes(arch, shape, adapter)
    offloaded = 0
    # bitsandbytes keeps its quantization constants outside parameters and buffers: never sharded
    if shape.shards_weights:
        weights, adapter_here = weights // n, adapter // n
    else:
        adapter_here = adapter
    gradients = adapter // n if shape.shards_states else adapter
    if shape.shards_states:
        states //= n
        paged //= n
    if shape.cpu_offload and shape.shards_states:  # optimizer states (and sharded weights) in CPU memory
        offloaded = states + paged
        states = paged = 0
        if shape.shards_weights:  # parameter offload: the frozen shards, or under full fine-tuning the
            if full:              # trainable shards and their gradients
                offloaded += adapter_here + gradients
                adapter_here = gradients = 0
            else:
                offloaded += weights
                weights = 0
    if full and shape.gradient_accumulation_steps == 1 and not shape.shards_states:
        # full fine-tuning without accumulation: no gradient outlives the optimizer step, and backward
        # frees each layer's activations as it fills that layer's weight gradients, so the two peak at
        # different times: on top of the gradients the step adds max(activations + head, gradients)
        # - gradients (with accumulation the previous micro batches' gradients sit under the activations)
        extra = max(activations + head, gradients) - gradients
        head = min(head, extra)
        activations = extra - head
    components = {
        "weights": 0 if full else weights,
        "quantization_constants": constants,
        "trainable_weights" if full else "adapter_weights": adapter_here,
        "gradients": gradients,
        "optimizer_states": states,
        "optimizer_states_paged": paged,
        "activations": activations,
        "logits_and_loss": head,
        "communication_buffers": comm,
    }
    allocated = sum(components.values()) - components["optimizer_states_paged"]
    overhead = int(ALLOCATOR_OVERHEAD * allocated)
    components["allocator_overhead"] = overhead
    components["cuda_context"] = context_bytes
    components["offloaded_to_cpu"] = offloaded  # in host memory: reported, not counted on the GPU
    required = allocated + overhead + context_bytes + components["optimizer_states_paged"]
    return MemoryEstimate(components, allocated, required, trainable)
