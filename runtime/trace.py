"""Measure what one training step allocates, without a GPU and without weights.

The real transformers + peft model is built from its config on the meta device, its parameters are
materialised as fake tensors (shapes and dtypes, no data), and a TorchDispatchMode counts the bytes
of live tensor storages through two optimizer steps (the second one has the optimizer states live,
as every later step does). The peak is what `torch.cuda.max_memory_allocated` would report, minus
what only a GPU adds (cuBLAS workspaces, allocator rounding).

The model is prepared the way the runtime's trainer (trl's SFTTrainer) prepares it: trl's fused LM
head (no full logits), `get_peft_model`, adapters cast to bf16 on a quantized base, activation
checkpointing with input gradients enabled. bitsandbytes cannot quantize fake tensors, so 4-bit and
8-bit linears are stood in for by modules that hold tensors of the sizes bitsandbytes' own objects
have (measured by runtime/bnb_sizes.py from real `Params4bit` / `Int8Params` quantized on the CPU)
and dequantize a temporary weight in forward and backward, as bitsandbytes' matmul does; 8-bit and
paged optimizers get the states the real bitsandbytes AdamW initialises (same module). Paged
optimizer states live in CUDA managed memory, which the caching allocator does not count: they are
reported apart.
"""

from __future__ import annotations

import copy

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .preflight import torch_dtype


@dataclass(frozen=True)
class TraceSpec:
    config: dict  # a Hugging Face config.json, as a dict
    method: str  # lora | qlora | dora | qdora | full
    rank: int = 16
    alpha: float = 32
    dropout: float = 0.05
    targets: Any = "all-linear"  # "all-linear" or a list of module names
    micro_batch_size: int = 1
    seq_len: int = 512
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = 1
    optimizer: str = "adamw"  # adamw | adamw_8bit | paged_adamw_8bit | paged_adamw_32bit
    precision: str = "bf16"
    attention: str = "sdpa"
    quant_bits: int = 4
    double_quant: bool = True
    objective: str = "sft"  # sft | dpo (runtime/trace_preference.py)
    reference: str = "none"  # dpo: adapter_disabled | second_model | precomputed


@dataclass
class TraceResult:
    peak_bytes: int  # live tensor bytes at the peak (allocated, paged states excluded)
    weights_bytes: int  # the base model's parameters and buffers (quantized where quantized)
    trainable_bytes: int
    trainable_params: int
    gradient_bytes: int
    optimizer_bytes: int  # states on the device
    paged_optimizer_bytes: int  # states in managed memory (paged optimizers)
    activation_peak_bytes: int  # peak minus what lives across steps
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


class _LiveBytes:
    """A TorchDispatchMode that sums the bytes of live storages; peak kept."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                counter.track_tree(out)
                return out

        self.mode = Mode()
        self.live: dict[int, int] = {}
        self.now = 0
        self.peak = 0

    def track_tree(self, out: Any) -> None:
        import torch
        from torch.utils._pytree import tree_flatten

        for item in tree_flatten(out)[0]:
            if isinstance(item, torch.Tensor):
                self.track(item)

    def track(self, tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.live:
            return
        size = storage.nbytes()
        self.live[key] = size
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)

    def reset_peak(self) -> None:
        self.peak = self.now


def _quantized_linear_class():
    import torch

    class _Dequantize(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, packed, shape, keep_input):
            ctx.shape = shape
            if keep_input:  # bitsandbytes' MatMul8bitLt keeps its input A for backward (ctx.tensors)
                ctx.save_for_backward(x)
            weight = torch.empty(shape, dtype=x.dtype, device=x.device)  # dequantized, temporary
            return torch.nn.functional.linear(x, weight)

        @staticmethod
        def backward(ctx, grad):
            weight = torch.empty(ctx.shape, dtype=grad.dtype, device=grad.device)
            return grad @ weight, None, None, None

    class QuantizedLinear(torch.nn.Linear):
        """Stores a linear layer's weight as bitsandbytes would; `W_q` makes peft's DoRA call dequantize()."""

        def __init__(self, linear, bits: int, double_quant: bool, dtype):
            from .bnb_sizes import quantized_linear

            torch.nn.Module.__init__(self)
            self.in_features, self.out_features = linear.in_features, linear.out_features
            self.compute_dtype = dtype
            tensors = quantized_linear(self.out_features, self.in_features, bits, double_quant)
            weight, others = tensors[0], tensors[1:]  # as bitsandbytes measured them: the packed weight first
            self.weight = torch.nn.Parameter(_bytes_as(weight), requires_grad=False)
            for t in others:
                self.register_buffer(f"quant_{t.name}", _bytes_as(t))
            self.bits = bits
            self.bias = None if linear.bias is None else torch.nn.Parameter(
                linear.bias.detach().to(dtype), requires_grad=False)

        @property
        def W_q(self):  # not a registered parameter: one copy of the packed weight
            return self.weight

        def dequantize(self):
            return torch.empty(self.out_features, self.in_features, dtype=self.compute_dtype)

        def forward(self, x):
            out = _Dequantize.apply(x, self.weight, (self.out_features, self.in_features), self.bits == 8)
            return out if self.bias is None else out + self.bias

    return QuantizedLinear


def _bytes_as(record):
    """A tensor of the measured dtype and size (flat: only the bytes matter to the count)."""
    import torch

    dtype = getattr(torch, record.dtype)
    return torch.empty(record.nbytes // dtype.itemsize, dtype=dtype)


def _quantize(model, bits: int, double_quant: bool, dtype) -> None:
    """Replace the decoder's nn.Linear modules as bitsandbytes does (lm_head stays unquantized)."""
    import torch

    QuantizedLinear = _quantized_linear_class()
    output = model.get_output_embeddings()
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child is not output:
                setattr(module, child_name, QuantizedLinear(child, bits, double_quant, dtype))


@contextmanager
def _allocation_free_lm_head_kernels():
    """On a GPU trl folds each logits tile in a Triton kernel and accumulates the gradient GEMMs
    with `addmm(out_dtype=float32, out=...)`: neither allocates. Their CPU fallbacks do, so stand
    them in with no-ops (fake tensors carry no values to compute)."""
    import importlib

    kernels = importlib.import_module("trl.kernels.chunked_logprob")
    names = ("_forward_tile", "_backward_tile", "_addmm_fp32")
    missing = [name for name in names if not hasattr(kernels, name)]
    if missing:
        raise RuntimeError(f"trl.kernels.chunked_logprob has no {', '.join(missing)}: this trl version "
                           f"is not the one the tracer was written for")
    saved = {name: getattr(kernels, name) for name in names}
    for name in saved:
        setattr(kernels, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(kernels, name, fn)


@contextmanager
def _fp32_grouped_mm():
    """Fused MoE experts multiply with `grouped_mm`. Its CPU kernel takes fp32 (full fine-tuning keeps
    fp32 master weights), but torch's meta kernel, which fake tensors run, accepts bf16 only. Route fp32
    experts to transformers' own fallback op instead: its fake kernel allocates what grouped_mm does
    (the output; in backward, the input's and the weights' gradients) and it saves the same tensors."""
    import importlib

    moe = importlib.import_module("transformers.integrations.moe")
    can_use = getattr(moe, "_can_use_grouped_mm", None)
    if can_use is None:
        raise RuntimeError("transformers.integrations.moe has no _can_use_grouped_mm: this transformers "
                           "version is not the one the tracer was written for")
    import torch

    moe._can_use_grouped_mm = lambda input, weight, offs: weight.dtype == torch.bfloat16 and can_use(input, weight, offs)
    try:
        yield
    finally:
        moe._can_use_grouped_mm = can_use


def _optimizer_state_records(model, optimizer: str) -> list:
    """What the optimizer will keep for the model's trainable parameters, measured before the fake
    tensor mode (bitsandbytes' own optimizer, on meta copies); [] for torch AdamW."""
    if optimizer == "adamw":
        return []
    from .bnb_sizes import optimizer_states

    shapes = [(tuple(p.shape), str(p.dtype).replace("torch.", "")) for p in model.parameters() if p.requires_grad]
    return [t for states in optimizer_states(shapes, optimizer) for t in states]


def _optimizer_states(params, optimizer: str, records: list):
    """Allocate the optimizer's states as the optimizer would; returns (on the device, paged)."""
    import torch

    if optimizer == "adamw":  # torch AdamW: two moments in the parameter's dtype
        return [t for p in params for t in (torch.zeros_like(p), torch.zeros_like(p))], []
    on_device = [_bytes_as(t) for t in records if not t.paged]
    return on_device, [_bytes_as(t) for t in records if t.paged]


@dataclass
class _Built:
    """The model prepared as the trainer prepares it, still on the meta device."""

    model: Any
    reference: Any  # the preference reference model when it is a second model, else None
    compute_dtype: Any  # torch dtype of the autocast region


@dataclass
class _Materialised:
    model: Any  # on fake tensors
    trainable: list  # the parameters the optimizer updates
    weights_bytes: int  # everything but the trainable parameters (a second reference model included)
    trainable_bytes: int


@dataclass
class _Steps:
    peak_bytes: int  # of the second step (optimizer states live)
    gradient_bytes: int
    optimizer_bytes: int  # states on the device
    paged_optimizer_bytes: int  # states in managed memory


def trace(spec: TraceSpec) -> TraceResult:
    """Run two training steps on fake tensors and report the peak of live tensor bytes."""
    import time

    from torch._subclasses.fake_tensor import FakeTensorMode

    start = time.perf_counter()
    built = _build(spec, _hf_config(spec))
    state_records = _optimizer_state_records(built.model, spec.optimizer)
    counter = _LiveBytes()
    with FakeTensorMode(allow_non_fake_inputs=True):
        m = _materialise(built, counter)
        steps = _two_steps(spec, m, built, counter, state_records)
    static = m.weights_bytes + m.trainable_bytes + steps.optimizer_bytes
    return TraceResult(
        peak_bytes=steps.peak_bytes,
        weights_bytes=m.weights_bytes,
        trainable_bytes=m.trainable_bytes,
        trainable_params=sum(p.numel() for p in m.trainable),
        gradient_bytes=steps.gradient_bytes,
        optimizer_bytes=steps.optimizer_bytes,
        paged_optimizer_bytes=steps.paged_optimizer_bytes,
        activation_peak_bytes=steps.peak_bytes - static,
        seconds=time.perf_counter() - start,
    )


def _hf_config(spec: TraceSpec):
    """The transformers config from the spec's config.json fields (no cache, the spec's attention)."""
    from transformers import AutoConfig

    cfg = copy.deepcopy(dict(spec.config))  # config classes edit nested dicts (rope_scaling) in place
    model_type = cfg.pop("model_type")
    for key in ("architectures", "auto_map", "torch_dtype", "dtype", "quantization_config",
                "transformers_version", "_name_or_path"):
        cfg.pop(key, None)
    from .text_model import causal_lm_config

    config = causal_lm_config(AutoConfig.for_model(model_type, **cfg))  # what `recipe run` builds
    config._attn_implementation = spec.attention if spec.attention != "auto" else "sdpa"
    config.use_cache = False
    return config


def _build(spec: TraceSpec, config) -> _Built:
    """Build and wrap on the meta device as the trainer would: quantized linears, trl's fused LM head,
    peft adapters (bf16 on a quantized base), checkpointing, the preference reference. Only then are
    tensors materialised as fake ones (fake tensors cannot be swapped by the `.to()` calls peft makes
    while wrapping)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(spec.precision)
    full = spec.method == "full"
    quantized = spec.method in ("qlora", "qdora")
    # full fine-tuning keeps fp32 master weights, except bf16-pure
    weight_dtype = torch.float32 if full and spec.precision != "bf16-pure" else dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=weight_dtype)
        if quantized:
            _quantize(model, spec.quant_bits, spec.double_quant, dtype)
        from trl.trainer.utils import add_fused_lm_head

        from .trace_preference import POLICY_OUTPUTS

        add_fused_lm_head(model, outputs=POLICY_OUTPUTS.get(spec.objective, ("log_probs", "entropy", "is_top1")))
        if full:
            for p in model.parameters():
                p.requires_grad_(True)
        else:
            from peft import LoraConfig, get_peft_model

            peft_config = LoraConfig(
                r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                target_modules=spec.targets, use_dora=spec.method in ("dora", "qdora"),
                task_type="CAUSAL_LM")
            model = get_peft_model(model, peft_config)
            if quantized:  # as trl's SFTTrainer does for a quantized base
                for name, p in model.named_parameters():
                    if p.requires_grad and "lora_magnitude_vector" not in name:
                        p.data = p.data.to(torch.bfloat16)
        if spec.gradient_checkpointing:
            target = model.get_base_model() if hasattr(model, "get_base_model") else model
            if hasattr(target, "activation_checkpointing_enable"):
                target.activation_checkpointing_enable()
            else:
                target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
        model.train()
        reference = None
        if spec.objective != "sft":
            from .trace_preference import disable_dropout, reference_model

            disable_dropout(model)  # as DPOConfig.disable_dropout does
            reference = reference_model(spec, config, weight_dtype)  # a second model, or None
    return _Built(model, reference, dtype)


def _materialise(built: _Built, counter: _LiveBytes) -> _Materialised:
    """The model (and a second reference model) on fake tensors, their bytes counted as live.
    Call inside the fake tensor mode."""
    model = built.model.to_empty(device="cpu")
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(inner.config, "tie_word_embeddings", False):
        inner.tie_weights()  # to_empty materialises each module's copy of a tied weight apart
    trainable = [p for p in model.parameters() if p.requires_grad]
    for tensor in list(model.parameters()) + list(model.buffers()):
        counter.track(tensor)
    if built.reference is not None:
        from .trace_preference import materialise

        materialise(built.reference, counter)  # the second model's weights count with the base's
    trainable_bytes = sum(p.untyped_storage().nbytes() for p in trainable)
    return _Materialised(model, trainable, counter.now - trainable_bytes, trainable_bytes)


def _two_steps(spec: TraceSpec, m: _Materialised, built: _Built, counter: _LiveBytes,
               state_records: list) -> _Steps:
    """Two optimizer steps (up to two micro batches each); the peak of the second, when the optimizer
    states are live as in every later step. Call inside the fake tensor mode."""
    import torch

    model, trainable, reference = m.model, m.trainable, built.reference
    b, s = spec.micro_batch_size, spec.seq_len
    autocast = torch.autocast("cpu", dtype=built.compute_dtype, enabled=spec.precision != "fp32")
    states: list = []
    paged: list = []
    grad_bytes = 0
    with counter.mode, _allocation_free_lm_head_kernels(), _fp32_grouped_mm():
        for step in range(2):
            if step == 1:
                counter.reset_peak()
            for _ in range(max(1, min(spec.gradient_accumulation_steps, 2))):
                if spec.objective != "sft":
                    from .trace_preference import preference_loss

                    with autocast:
                        loss = preference_loss(model, reference, spec)
                    loss.backward()
                    del loss
                    continue
                ids = torch.zeros(b, s, dtype=torch.long)
                mask = torch.ones(b, s, dtype=torch.long)
                with autocast:
                    out = model(input_ids=ids, attention_mask=mask, labels=ids, fused_lm_head=True)
                    loss = -out.log_probs.sum() / out.label_mask.sum().clamp(min=1)
                loss.backward()
                del out, loss, ids, mask
            grad_bytes = sum(p.grad.untyped_storage().nbytes() for p in trainable if p.grad is not None)
            if not states and not paged:
                states, paged = _optimizer_states(trainable, spec.optimizer, state_records)
                for t in paged:  # managed memory: not in the allocator's count
                    counter._free(t.untyped_storage()._cdata)
            with torch.no_grad():  # the update itself: in place, no temporaries (fused AdamW)
                for p in trainable:
                    p.add_(p.grad)
            for p in trainable:
                p.grad = None
    return _Steps(peak_bytes=counter.peak, gradient_bytes=grad_bytes,
                  optimizer_bytes=sum(t.untyped_storage().nbytes() for t in states),
                  paged_optimizer_bytes=sum(t.untyped_storage().nbytes() for t in paged))


def spec_for_plan(plan) -> TraceSpec:
    """The step a plan will run, as a TraceSpec."""
    t, a = plan.training, plan.adapter
    quant = (a.quantization or {}) if a else {}
    targets = plan.recipe.method.targets
    return TraceSpec(
        config=plan.model.config, method=plan.method,
        rank=a.rank if a else 16, alpha=a.alpha if a else 32, dropout=a.dropout if a else 0.0,
        targets=targets if targets == "all-linear" else list(targets),
        micro_batch_size=t.micro_batch_size, seq_len=t.max_seq_len,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_accumulation_steps=t.gradient_accumulation_steps, optimizer=t.optimizer,
        # flash_attention_2 keeps no score matrix, as sdpa's fused kernels: traced as sdpa (no flash-attn on CPU)
        precision=t.precision, attention="sdpa" if t.attention == "flash_attention_2" else t.attention,
        quant_bits=quant.get("bits", 4),
        double_quant=quant.get("double_quant", True),
        objective=plan.preference.objective if plan.preference else "sft",
        reference=plan.preference.reference if plan.preference else "none")


def trace_plan(plan) -> dict:
    """Trace the plan's step; the measured peak beside the plan's estimate."""
    if plan.distributed.processes > 1:
        from ..schemas.errors import UsageError

        raise UsageError(f"--trace measures one unsharded GPU's step; this plan runs {plan.distributed.processes} "
                         f"processes ({plan.distributed.strategy}). Trace it with --set budget.gpu_count=1")
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import trl  # noqa: F401
    except ImportError as exc:
        from ..schemas.errors import UsageError

        raise UsageError(f"--trace needs the training stack ({exc.name} is missing): "
                         f"pip install 'recipe-ft[train]'") from None
    if plan.preference is not None and plan.preference.objective != "dpo":
        from ..schemas.errors import UsageError

        raise UsageError(f"--trace measures SFT and DPO steps; {plan.preference.objective.upper()}'s step is "
                         f"estimated only")
    result = trace(spec_for_plan(plan))
    estimated = plan.memory.allocated_peak_bytes
    return {
        "peak_bytes": result.peak_bytes,
        "estimated_bytes": estimated,
        "error": (estimated - result.peak_bytes) / result.peak_bytes,
        "weights_bytes": result.weights_bytes,
        "trainable_params": result.trainable_params,
        "optimizer_bytes": result.optimizer_bytes + result.paged_optimizer_bytes,
        "activation_peak_bytes": result.activation_peak_bytes,
        "seconds": round(result.seconds, 2),
    }
