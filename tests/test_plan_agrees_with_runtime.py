"""Plan decisions the runtime depends on: the GPU's stack, attention the family has, the build record,
what would fit when nothing does (offload, with its time), and no figures for a plan that does not fit."""

from pathlib import Path

import pytest

from recipe_ft.compiler import stack
from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.compiler.plan_text import summary_rows
from recipe_ft.schemas.errors import RecipeError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
LLAMA8B = str(RECIPES / "support-triage-llama3-8b.yaml")
LLAMA70B = str(RECIPES / "legal-summaries-llama3.3-70b-qlora.yaml")
OPEN = ["budget.gpu=null", "budget.gpus=null", "budget.max_cost_usd=null", "budget.max_hours=null"]


def test_every_catalog_gpu_has_a_stack_row():
    from recipe_ft.compiler import catalogs

    for name in catalogs.gpu_names():
        s = stack.stack_for(name)
        assert s.torch_build in ("cuda", "rocm")
    assert "bnb_4bit" not in stack.stack_for("MI300X").parts
    assert "flash_attention_2" not in stack.stack_for("T4").parts
    assert stack.stack_for("H100-80GB").parts == frozenset(stack.PART_LABELS)


def test_qlora_is_never_placed_where_bitsandbytes_is_not_known_to_work():
    plan = compile_file(LLAMA70B, OPEN).plan
    assert plan.hardware.gpu != "MI300X" and plan.fits
    assert plan.build.stack == ["bnb_4bit", "bnb_8bit"]  # 4-bit base and a paged 8-bit optimizer
    mi300 = [a for a in plan.alternatives if a.gpu == "MI300X"]
    assert mi300 and all(not a.fits and "bitsandbytes 4-bit" in a.note and "MI300X" in a.note for a in mi300)


def test_pinned_gpu_without_the_stack_is_refused_with_the_reason():
    compiled = compile_file(LLAMA70B, ["budget.gpu=MI300X", "budget.max_cost_usd=null", "budget.max_hours=null"])
    assert compiled.exit_code == 3 and not compiled.plan.fits
    assert any("bitsandbytes" in a.note for a in compiled.plan.alternatives)


def test_gemma2_has_no_sdpa():
    with pytest.raises(RecipeError) as err:
        compile_file(LLAMA8B, ["model.base=google/gemma-2-9b", "training.attention=sdpa"])
    assert err.value.problems[0].key == "training.attention" and "eager" in err.value.problems[0].message
    plan = compile_file(LLAMA8B, ["model.base=google/gemma-2-9b"]).plan
    assert plan.training.attention == plan.build.attention == "eager"
    assert "sdpa" not in plan.build.attention_supported


def test_build_record_dtypes_and_8bit_label():
    plan = compile_file(LLAMA8B, ["method.name=qlora", "method.quantization.bits=8"]).plan
    b = plan.build
    assert b.quantization == "int8" and all(m.quantized for m in b.modules)
    assert b.trainable_dtype == "bf16" and b.weights_dtype == "bf16"
    assert b.trainable_parameters == plan.model.trainable_parameters
    method_row = dict(summary_rows(plan))["method"]
    assert "8-bit LLM.int8" in method_row and "nf4" not in method_row and "double quant" not in method_row
    lora = compile_file(LLAMA8B, ["method.name=lora", "method.quantization=null"]).plan.build
    assert lora.quantization is None and not any(m.quantized for m in lora.modules)
    assert lora.trainable_dtype == "fp32"


def test_moe_dora_refused_where_peft_would_refuse_it():
    with pytest.raises(RecipeError) as err:
        compile_file(LLAMA8B, ["model.base=mistralai/Mixtral-8x7B-v0.1", "method.name=dora",
                               "method.quantization=null"])
    assert err.value.problems[0].key == "method.name" and "ParamWrapper" in err.value.problems[0].message
    with pytest.raises(RecipeError) as err:
        compile_file(LLAMA8B, ["model.base=mistralai/Mixtral-8x7B-v0.1", "method.name=lora",
                               "method.quantization=null"])
    assert err.value.problems[0].key == "method.dropout"
    plan = compile_file(LLAMA8B, ["model.base=mistralai/Mixtral-8x7B-v0.1", "method.name=lora",
                                  "method.quantization=null", "method.dropout=0", *OPEN]).plan
    assert any(m.name == "mlp.experts" and not m.quantized for m in plan.build.modules)


def test_nothing_fits_offers_offload_with_its_time_and_prints_no_figures():
    compiled = compile_file(LLAMA70B, ["method.name=full", "method.quantization=null", "budget.gpu=null",
                                       "budget.gpus=[A100-80GB]", "budget.max_gpus=8",
                                       "budget.max_cost_usd=null", "budget.max_hours=null"])
    assert compiled.exit_code == 3
    offload = [s for s in compiled.suggestions if "CPU offload" in s]
    assert offload and all(" h, $" in s and "distributed.cpu_offload: true" in s and "CPU memory" in s
                           for s in offload)
    assert any(s.startswith("FSDP") for s in offload) and any(s.startswith("DeepSpeed ZeRO-3") for s in offload)
    rows = dict(summary_rows(compiled.plan))
    assert rows["time"].startswith("not estimated") and "tokens/s" not in rows["time"]
    assert rows["cost"].startswith("not estimated") and "$0" not in rows["cost"]
