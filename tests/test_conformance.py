"""The live model against its plan: a model that differs from the plan's build record stops the run
before the first step, with the modules named; a conforming one trains and the check is reported."""

import json
from types import SimpleNamespace

import pytest
from demo_copy import fresh_copy

pytest.importorskip("trl")
pytest.importorskip("peft")

from recipe_ft.compiler.architecture import SUPPORTED_FAMILIES, from_config  # noqa: E402
from recipe_ft.compiler.build import decide  # noqa: E402
from recipe_ft.compiler.pipeline import compile_file  # noqa: E402
from recipe_ft.runtime import demo  # noqa: E402
from recipe_ft.runtime.conformance import check  # noqa: E402

FALCON = {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "vocab_size": 128, "new_decoder_architecture": True, "num_kv_heads": 2, "parallel_attn": True,
          "bias": False, "alibi": False, "ffn_hidden_size": 128, "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return demo.make(tmp_path_factory.mktemp("conf") / "qs", train_examples=16, eval_examples=4, epochs=1)


def test_falcon_qlora_live_model_matches_a_plan_that_keeps_falconlinear(tmp_path):
    """bitsandbytes (CPU backend, really quantizing) leaves FalconLinear alone; the plan says so, and a
    plan that claims the opposite is caught with the module names."""
    pytest.importorskip("bitsandbytes")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    cfg = dict(FALCON)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "falcon")
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "falcon", dtype=torch.bfloat16, attn_implementation="sdpa",
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.bfloat16))
    for p in model.parameters():
        p.requires_grad_(False)
    arch = from_config(FALCON, "falcon")
    build = decide(arch, "qlora", "bf16", "sdpa", False, 4, "nf4", "adamw", 0)
    trainer = SimpleNamespace(model=model, args=SimpleNamespace(packing=False, padding_free=False))

    def plan_with(b):
        return SimpleNamespace(build=b, training=SimpleNamespace(precision="bf16"))

    result = check(plan_with(build), trainer, "bf16")
    assert result["ok"], result["problems"]
    claims_4bit = build.model_copy(update={"modules": [m.model_copy(update={"quantized": True})
                                                       for m in build.modules]})
    result = check(plan_with(claims_4bit), trainer, "bf16")
    assert not result["ok"]
    text = " ".join(result["problems"])
    assert "query_key_value" in text and "FalconLinear" in text and "planned quantized" in text


def test_a_quantized_module_the_plan_does_not_list_is_caught(tmp_path):
    """Every module bitsandbytes quantized is one the plan quantizes, in the plan's format: a quantized
    module outside the plan's rows (which the row-by-row comparison never visits) is named, not passed,
    and so is nf4 where the plan has fp4."""
    pytest.importorskip("bitsandbytes")
    import torch
    from families import tiny_config
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    cfg = tiny_config("llama")
    cfg["intermediate_size"] = 128  # bitsandbytes' CPU 4-bit kernels want widths in multiples of 64
    config = AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "llama")
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path / "llama", dtype=torch.bfloat16, attn_implementation="sdpa",
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_compute_dtype=torch.bfloat16))
    for p in model.parameters():
        p.requires_grad_(False)
    build = decide(from_config(cfg, "llama"), "qlora", "bf16", "sdpa", False, 4, "nf4", "adamw", 0)
    build = build.model_copy(update={"trainable_parameters": 0})
    trainer = SimpleNamespace(model=model, args=SimpleNamespace(packing=False, padding_free=False))
    plan = SimpleNamespace(build=build, training=SimpleNamespace(precision="bf16"))
    assert check(plan, trainer, "bf16")["ok"]
    plan.build = build.model_copy(update={"modules": [m for m in build.modules if m.name != "down_proj"]})
    result = check(plan, trainer, "bf16")
    assert not result["ok"]
    text = " ".join(result["problems"])
    assert "model.layers.0.mlp.down_proj" in text and "not in the plan" in text
    plan.build = build.model_copy(update={"quantization": "fp4"})  # bitsandbytes built nf4
    result = check(plan, trainer, "bf16")
    assert not result["ok"] and "quantized as nf4, the plan has fp4" in " ".join(result["problems"])


def test_run_stops_before_training_when_the_model_differs_from_its_plan(tiny, tmp_path, cli):
    root = fresh_copy(tiny, tmp_path / "qs").parent
    plan = compile_file(str(root / "recipe.yaml"), ["training.epochs=1"]).plan
    rows = [m.model_copy(update={"quantized": True}) if m.name == "q_proj" else m for m in plan.build.modules]
    tampered = plan.model_copy(update={"build": plan.build.model_copy(update={"modules": rows,
                                                                               "attention": "eager"})})
    path = root / "plan.json"
    path.write_text(tampered.model_dump_json(indent=2))
    code, out, err = cli("run", path)
    text = out + err
    assert code != 0 and "Traceback" not in text
    assert "differs from its plan" in text and "q_proj" in text and "planned quantized" in text
    run_dir = root / plan.output_dir
    assert not run_dir.exists()  # nothing half-written left behind


def test_conforming_run_reports_the_check(tiny, tmp_path, cli):
    root = fresh_copy(tiny, tmp_path / "qs").parent
    code, out, err = cli("run", root / "recipe.yaml", "--set", "training.epochs=1", "--set", "training.max_steps=2")
    assert code == 0, out + err
    report = json.loads((root / "runs" / "quickstart" / "run_report.json").read_text())
    c = report["conformance"]
    assert c["ok"] and not c["problems"]
    assert any(line.startswith("q_proj:") for line in c["checked"])
    assert any(line.startswith("attention: sdpa") for line in c["checked"])


def test_an_fp16_plan_on_a_cpu_says_it_trains_in_fp32(tiny, tmp_path, cli):
    """A CPU has no fp16 training: the plan's fp16 runs in fp32 (twice the planned weights), and the run
    says so on its console and in its report instead of passing for the plan."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU trains fp16 as planned")
    root = fresh_copy(tiny, tmp_path / "qs").parent
    code, out, err = cli("run", root / "recipe.yaml", "--set", "training.precision=fp16", "--set",
                         "training.epochs=1", "--set", "training.max_steps=1")
    assert code == 0, out + err
    assert "the plan's fp16 runs in fp32 on this CPU" in out + err
    c = json.loads((root / "runs" / "quickstart" / "run_report.json").read_text())["conformance"]
    assert any(line.startswith("precision: fp32 (the plan's fp16") for line in c["checked"])


@pytest.mark.parametrize("family", SUPPORTED_FAMILIES)
def test_compiler_tables_match_the_installed_transformers(family):
    """The compiler's per-family facts (no torch import there) against the transformers classes."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from recipe_ft.compiler.architecture import attention_implementations, linear_class, linear_modules

    cls = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family])
    supported = attention_implementations(from_config({"model_type": family, **_tiny(family)}, family))
    assert ("sdpa" in supported) == bool(cls._supports_sdpa), family
    assert ("flash_attention_2" in supported) == bool(cls._supports_flash_attn), family
    cfg = _tiny(family)
    arch = from_config({"model_type": family, **cfg}, family)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **cfg))
    names = {m.name for m in linear_modules(arch)}
    kinds = {type(m).__name__ for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in names
             and any(p.isdigit() for p in n.split("."))}
    assert kinds == {linear_class(arch)}, (family, kinds)


def _tiny(family):
    from pathlib import Path

    directory = {"falcon": "falcon-new"}.get(family, family)
    cfg = json.loads((Path(__file__).parent / "data" / "configs" / directory / "config.json").read_text())
    cfg.pop("model_type", None)
    return cfg
