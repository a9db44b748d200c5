"""The analytic memory estimate agrees with the tracer (real transformers + peft + trl step on fake
tensors): the peak within 10% on a grid of configurations that were not used to fit the activation
model (no entry shares a model shape, method and dropout with benchmarks/calibrate_activations.py's
grid: a test checks), and the parts that need no fitting (weights as stored, 4-bit / 8-bit included;
optimizer states, on the device and paged) within 0.5%. The tracer sizes bitsandbytes' tensors from
bitsandbytes' own objects, never from the estimator's formulas."""

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("trl")

from recipe_ft.compiler import memory  # noqa: E402
from recipe_ft.compiler.architecture import from_config  # noqa: E402
from recipe_ft.compiler.models import catalog_entry  # noqa: E402
from recipe_ft.runtime.trace import TraceSpec, trace  # noqa: E402

CONFIGS = Path(__file__).parent / "data" / "configs"
LAYERS = 4  # full-size shapes, fewer layers: the per-layer terms are what is being checked


def catalog(name, layers=LAYERS):
    return dict(catalog_entry(name)["config"], num_hidden_layers=layers)


def fixture(name, hidden=3072):
    cfg = json.loads((CONFIGS / name / "config.json").read_text())
    scale = hidden // cfg["hidden_size"]
    for key in ("hidden_size", "intermediate_size", "ffn_hidden_size", "head_dim"):
        if cfg.get(key):
            cfg[key] *= scale
    cfg["vocab_size"] = 50304
    cfg["num_hidden_layers"] = LAYERS
    for key in ("max_position_embeddings", "sliding_window"):
        if cfg.get(key):
            cfg[key] = max(cfg[key], 8192)
    return cfg


GRID = [
    ("llama3-8b lora", catalog("meta-llama/Meta-Llama-3-8B-Instruct"), dict(method="lora", seq_len=2048)),
    ("llama3-8b qlora gc paged", catalog("meta-llama/Meta-Llama-3-8B-Instruct"),
     dict(method="qlora", seq_len=1024, micro_batch_size=2, gradient_checkpointing=True,
          optimizer="paged_adamw_8bit", gradient_accumulation_steps=4)),
    ("llama3-8b qdora", catalog("meta-llama/Meta-Llama-3-8B-Instruct"),
     dict(method="qdora", rank=8, dropout=0.0, seq_len=512, micro_batch_size=4)),
    ("mistral-7b dora qv", catalog("mistralai/Mistral-7B-v0.1"),
     dict(method="dora", targets=["q_proj", "v_proj"], rank=32, seq_len=1024)),
    ("qwen2.5-7b lora r64 gc 8bit", catalog("Qwen/Qwen2.5-7B-Instruct"),
     dict(method="lora", rank=64, seq_len=4096, gradient_checkpointing=True, optimizer="adamw_8bit")),
    ("qwen2.5-3b full", catalog("Qwen/Qwen2.5-3B", layers=12),
     dict(method="full", seq_len=1024, micro_batch_size=2, dropout=0.0, gradient_accumulation_steps=2)),
    ("gemma2-9b qlora eager", catalog("google/gemma-2-9b"), dict(method="qlora", seq_len=1024, attention="eager")),
    ("phi3-medium lora", catalog("microsoft/Phi-3-medium-4k-instruct"), dict(method="lora", seq_len=2048)),
    ("llama2-7b lora mbs8 8bit", catalog("meta-llama/Llama-2-7b-hf"),
     dict(method="lora", dropout=0.0, seq_len=512, micro_batch_size=8, optimizer="paged_adamw_8bit")),
    ("llama3.2-3b full gc", catalog("meta-llama/Llama-3.2-3B", layers=28),
     dict(method="full", seq_len=2048, gradient_checkpointing=True, dropout=0.0, gradient_accumulation_steps=2)),
    ("phi lora", fixture("phi"), dict(method="lora", seq_len=1024)),
    ("gpt_neox qlora gc", fixture("gpt_neox"), dict(method="qlora", seq_len=2048, gradient_checkpointing=True)),
    ("falcon lora", fixture("falcon-new"), dict(method="lora", seq_len=1024, rank=8)),
    ("stablelm lora", fixture("stablelm"), dict(method="lora", seq_len=1024, micro_batch_size=2)),
]


COMPONENT_TOLERANCE = 0.005  # weights and optimizer states: sizes, not fitted coefficients


def _pair(label, cfg, opts):
    """(the estimate, the trace) of one grid entry."""
    arch = from_config(cfg, label)
    opts = dict(opts)
    opts.setdefault("attention", memory.attention_for(arch, "auto"))
    targets = opts.pop("targets", "all-linear")
    spec = TraceSpec(config=cfg, targets=targets, **opts)
    shape = memory.StepShape(
        method=spec.method, rank=spec.rank, dropout=spec.dropout,
        targets=targets if targets == "all-linear" else tuple(targets),
        micro_batch_size=spec.micro_batch_size, seq_len=spec.seq_len,
        gradient_checkpointing=spec.gradient_checkpointing,
        gradient_accumulation_steps=spec.gradient_accumulation_steps, optimizer=spec.optimizer,
        precision=spec.precision, attention=spec.attention)
    return memory.estimate(arch, shape), trace(spec)


_TRACED: dict = {}


def traced(label):
    """The grid entry's (estimate, trace), traced once per test session."""
    if label not in _TRACED:
        entry = next(g for g in GRID if g[0] == label)
        _TRACED[label] = _pair(*entry)
    return _TRACED[label]


def measure(label, cfg, opts):
    """(estimated allocated peak, traced peak) in bytes; asserts the trainable counts agree."""
    estimated, measured = _pair(label, cfg, opts)
    assert estimated.trainable_params == measured.trainable_params
    return estimated.allocated_peak_bytes, measured.peak_bytes


@pytest.mark.parametrize("label", [g[0] for g in GRID])
def test_estimate_within_10_percent_of_trace(label):
    estimated, measured = traced(label)
    assert estimated.trainable_params == measured.trainable_params, "trainable parameter counts differ"
    error = (estimated.allocated_peak_bytes - measured.peak_bytes) / measured.peak_bytes
    assert abs(error) <= 0.10, (label, estimated.allocated_peak_bytes, measured.peak_bytes, f"{error:+.1%}")


def _close(estimated, traced_bytes):
    return abs(estimated - traced_bytes) <= COMPONENT_TOLERANCE * max(traced_bytes, 1) + 64 * 1024


@pytest.mark.parametrize("label", [g[0] for g in GRID])
def test_weights_and_optimizer_states_match_the_trace(label):
    """Stored weights (4-bit / 8-bit packed with their constants, adapters) and optimizer states."""
    estimated, measured = traced(label)
    c = estimated.components
    method = next(g[2]["method"] for g in GRID if g[0] == label)
    kind = {"qlora": "4-bit quantized", "qdora": "4-bit quantized", "full": "fp32 master"}.get(method, "16-bit")
    weights = c["weights"] + c["quantization_constants"] + c.get("adapter_weights", 0) + c.get("trainable_weights", 0)
    assert _close(weights, measured.weights_bytes + measured.trainable_bytes), (
        f"{label}: {kind} weights as stored: estimate {weights:,} B, traced "
        f"{measured.weights_bytes + measured.trainable_bytes:,} B")
    assert _close(c["optimizer_states"], measured.optimizer_bytes), (
        f"{label}: optimizer states on the device: estimate {c['optimizer_states']:,} B, traced "
        f"{measured.optimizer_bytes:,} B")
    assert _close(c["optimizer_states_paged"], measured.paged_optimizer_bytes), (
        f"{label}: paged optimizer states: estimate {c['optimizer_states_paged']:,} B, traced "
        f"{measured.paged_optimizer_bytes:,} B")


def _shape_key(cfg):
    return tuple(cfg.get(k) for k in ("model_type", "hidden_size", "intermediate_size", "num_attention_heads",
                                      "num_key_value_heads", "vocab_size"))


def test_no_entry_shares_shape_method_and_dropout_with_the_calibration_grid():
    from conftest import benchmark_module

    with benchmark_module("calibrate_activations") as calibration:
        seen = {(_shape_key(cfg), o["method"], o.get("dropout", 0.05)) for _, cfg, o in calibration.grid()}
    shared = [label for label, cfg, o in GRID if (_shape_key(cfg), o["method"], o.get("dropout", 0.05)) in seen]
    assert shared == []
