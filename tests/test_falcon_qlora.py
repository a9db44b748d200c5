"""Falcon's linear layers are FalconLinear, a subclass of nn.Linear that transformers' bitsandbytes
integration does not replace: a Falcon "QLoRA" keeps its decoder weights in bf16. The plan says so
(build record, warning), its memory matches the tracer's, and falcon-40b QLoRA on one A100-40GB is
planned as not fitting (its weights alone are about 78 GiB in bf16)."""

import json

import pytest

from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.runtime import demo

FALCON_7B = {"model_type": "falcon", "hidden_size": 4544, "num_hidden_layers": 32, "num_attention_heads": 71,
             "vocab_size": 65024, "multi_query": True, "parallel_attn": True, "bias": False, "alibi": False,
             "new_decoder_architecture": False, "max_position_embeddings": 2048}
FALCON_40B = {"model_type": "falcon", "hidden_size": 8192, "num_hidden_layers": 60, "num_attention_heads": 128,
              "num_kv_heads": 8, "vocab_size": 65024, "new_decoder_architecture": True, "parallel_attn": True,
              "bias": False, "alibi": False, "max_position_embeddings": 2048}


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    pytest.importorskip("tokenizers")
    root = tmp_path_factory.mktemp("falcon")
    path = demo.make(root / "qs", train_examples=16, eval_examples=4, epochs=1)
    for name, cfg in (("falcon-7b", FALCON_7B), ("falcon-40b", FALCON_40B)):
        (path.parent / name).mkdir()
        (path.parent / name / "config.json").write_text(json.dumps(cfg))
    return path


def plan_for(recipe, model, gpu):
    sets = [f"model.base={model}", "method.name=qlora", f"budget.gpu={gpu}", "training.max_seq_len=2048",
            "training.micro_batch_size=1", "training.precision=bf16", "budget.gpu_count=1"]
    return compile_file(str(recipe), sets)


def test_falcon_qlora_keeps_falconlinear_in_bf16(recipe):
    plan = plan_for(recipe, "falcon-7b", "A100-80GB").plan
    rows = {m.name: m for m in plan.build.modules}
    assert set(rows) == {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"}
    assert all(not m.quantized and m.module_class == "FalconLinear" for m in rows.values())
    assert any("FalconLinear" in w and "nn.Linear" in w for w in plan.warnings)
    assert plan.memory.components["weights"] >= 2 * 6.9e9  # bf16, not 4-bit


def test_falcon_40b_qlora_does_not_fit_an_a100_40gb(recipe):
    compiled = plan_for(recipe, "falcon-40b", "A100-40GB")
    assert not compiled.plan.fits and compiled.exit_code == 3
    assert compiled.plan.memory.required_bytes > 80 * 2**30


@pytest.mark.parametrize("model,gpu", [("falcon-7b", "A100-80GB"), ("falcon-40b", "A100-40GB")])
def test_falcon_qlora_plan_matches_its_trace(recipe, model, gpu):
    pytest.importorskip("peft")
    pytest.importorskip("trl")
    from recipe_ft.runtime.trace import trace_plan

    plan = plan_for(recipe, model, gpu).plan
    result = trace_plan(plan)
    assert abs(result["error"]) <= 0.10, result
