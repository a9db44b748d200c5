"""Every family the compiler supports x every method (LoRA, QLoRA, DoRA, QDoRA, full, an 8-bit base):
the analytic estimate within 10% of the tracer (a real transformers + peft + trl step on fake tensors).

Shapes are small (hidden 1024, 2 layers, 512 tokens) so the sweep stays fast: fake tensors cost per
operation, not per byte. A family added to compiler/architecture.py must add a config under
tests/data/configs/<family>/ to be swept; the test fails until it does. The families described by
transformers (tests/families.py: Qwen3, Qwen3-MoE, Gemma 3, gpt-oss, SmolLM3, OLMo 2 / 3, Granite) are
swept for lora, qlora and full, through the descriptor the planner derives for them.
"""

import json
from pathlib import Path

import pytest

pytest.importorskip("peft")
pytest.importorskip("trl")

from recipe_ft.compiler import memory  # noqa: E402
from recipe_ft.compiler.architecture import SUPPORTED_FAMILIES  # noqa: E402
from recipe_ft.runtime.trace import TraceSpec, trace  # noqa: E402
from families import DERIVED_FAMILIES, derived_architecture  # noqa: E402

CONFIGS = Path(__file__).parent / "data" / "configs"
HIDDEN, LAYERS, SEQ = 1024, 2, 512
TOLERANCE = 0.10

METHODS = {
    "lora": dict(method="lora"),
    "qlora": dict(method="qlora"),
    "dora": dict(method="dora"),
    "qdora": dict(method="qdora"),
    "full": dict(method="full", dropout=0.0),
    "8bit": dict(method="qlora", quant_bits=8),
}


FIXTURES = {"falcon": "falcon-new"}  # family -> tests/data/configs/<dir> where the names differ


def family_config(family: str) -> dict:
    """The family's test config, scaled to HIDDEN (heads kept), LAYERS layers, a 32k vocabulary."""
    path = CONFIGS / FIXTURES.get(family, family) / "config.json"
    assert path.is_file(), f"no config for the supported family '{family}': add tests/data/configs/{family}/config.json"
    cfg = json.loads(path.read_text())
    old = cfg.get("hidden_size") or cfg.get("n_embed")
    scale = HIDDEN // old
    for key in ("hidden_size", "n_embed", "intermediate_size", "ffn_hidden_size", "head_dim", "moe_intermediate_size",
                "query_pre_attn_scalar"):
        if cfg.get(key):
            cfg[key] *= scale
    for key in ("num_hidden_layers", "n_layer"):
        if key in cfg:
            cfg[key] = LAYERS
    cfg["vocab_size"] = 32000
    for key in ("max_position_embeddings", "sliding_window"):
        if cfg.get(key):
            cfg[key] = max(cfg[key], 4096)
    return cfg


def estimate_and_trace(cfg: dict, opts: dict, label: str):
    arch = derived_architecture(cfg, label)
    opts = dict(opts)
    opts.setdefault("attention", memory.attention_for(arch, "auto"))
    if arch.is_moe:  # peft's ParamWrapper (LoRA on the fused expert tensors) refuses lora_dropout != 0
        opts["dropout"] = 0.0
    spec = TraceSpec(config=cfg, seq_len=SEQ, **opts)
    shape = memory.StepShape(
        method=spec.method, rank=spec.rank, dropout=spec.dropout, targets="all-linear",
        micro_batch_size=spec.micro_batch_size, seq_len=spec.seq_len, optimizer=spec.optimizer,
        precision=spec.precision, attention=spec.attention, quant_bits=spec.quant_bits)
    estimated = memory.estimate(arch, shape)
    measured = trace(spec)
    assert estimated.trainable_params == measured.trainable_params, label
    return estimated.allocated_peak_bytes, measured.peak_bytes


# Known gaps, each a strict xfail: the test fails as soon as one closes, so the entry must then go.
# (DoRA / QDoRA and Mixtral LoRA / QLoRA / 8-bit were gaps until issue 10b: DoRA's weight-sized
# temporaries counted on top of the LM head's working set, QDoRA's dequantized weights and Mixtral's
# folded expert weights not counted; see compiler/memory.py.)
# (MoE full fine-tuning was one until the tracer ran fp32 grouped_mm through transformers' fallback op:
# torch's meta kernel for grouped_mm takes bf16 only, see runtime/trace.py.)
KNOWN_GAPS: dict = {}
# cells peft refuses at run time: the compiler must refuse them too (a located error), never plan them
REFUSED = {("mixtral", "dora"), ("mixtral", "qdora")}

DERIVED_METHODS = ("lora", "qlora", "full")
CELLS = [(f, m) for f in SUPPORTED_FAMILIES for m in METHODS] + [(f, m) for f in DERIVED_FAMILIES for m in DERIVED_METHODS]
SWEEP = [pytest.param(f, m, id=f"{f}-{m}", marks=pytest.mark.xfail(
    strict=True, reason=f"known estimate gap {KNOWN_GAPS[(f, m)]}")) if (f, m) in KNOWN_GAPS
         else pytest.param(f, m, id=f"{f}-{m}") for f, m in CELLS]


@pytest.mark.parametrize("family,method", SWEEP)
def test_estimate_within_10_percent_of_trace(family, method):
    if (family, method) in REFUSED:
        from recipe_ft.compiler.build import peft_refuses

        arch = derived_architecture(family_config(family), family)
        assert peft_refuses(arch, METHODS[method]["method"], "all-linear", 0.0), (family, method)
        return
    estimated, traced = estimate_and_trace(family_config(family), METHODS[method], f"{family} {method}")
    error = (estimated - traced) / traced
    assert abs(error) <= TOLERANCE, (family, method, estimated, traced, f"{error:+.1%}")
