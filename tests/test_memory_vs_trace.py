"""The analytic memory estimate agrees with the tracer (real transformers + peft + trl step on fake
tensors) within 10% on a grid of configurations that were not used to fit the activation model."""

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
    ("qwen2.5-0.5b full", catalog("Qwen/Qwen2.5-0.5B", layers=24),
     dict(method="full", seq_len=1024, micro_batch_size=2, dropout=0.0, gradient_accumulation_steps=2)),
    ("gemma2-9b qlora eager", catalog("google/gemma-2-9b"), dict(method="qlora", seq_len=1024, attention="eager")),
    ("phi3-mini lora", catalog("microsoft/Phi-3-mini-4k-instruct"), dict(method="lora", seq_len=2048)),
    ("tinyllama lora mbs8", catalog("TinyLlama/TinyLlama-1.1B-Chat-v1.0", layers=22),
     dict(method="lora", dropout=0.0, seq_len=512, micro_batch_size=8)),
    ("llama3.2-3b full gc", catalog("meta-llama/Llama-3.2-3B", layers=28),
     dict(method="full", seq_len=2048, gradient_checkpointing=True, dropout=0.0, gradient_accumulation_steps=2)),
    ("phi lora", fixture("phi"), dict(method="lora", seq_len=1024)),
    ("gpt_neox qlora gc", fixture("gpt_neox"), dict(method="qlora", seq_len=2048, gradient_checkpointing=True)),
    ("falcon lora", fixture("falcon-new"), dict(method="lora", seq_len=1024, rank=8)),
    ("stablelm lora", fixture("stablelm"), dict(method="lora", seq_len=1024, micro_batch_size=2)),
]


def measure(label, cfg, opts):
    """(estimated allocated peak, traced peak) in bytes; asserts the trainable counts agree."""
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
    estimated = memory.estimate(arch, shape)
    measured = trace(spec)
    assert estimated.trainable_params == measured.trainable_params
    return estimated.allocated_peak_bytes, measured.peak_bytes


@pytest.mark.parametrize("label,cfg,opts", GRID, ids=[g[0] for g in GRID])
def test_estimate_within_10_percent_of_trace(label, cfg, opts):
    estimated, traced = measure(label, cfg, opts)
    error = (estimated - traced) / traced
    assert abs(error) <= 0.10, (label, estimated, traced, f"{error:+.1%}")
