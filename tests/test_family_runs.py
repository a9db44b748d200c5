"""`recipe run` trains a tiny random-weight instance of each family described by transformers on the
CPU (LoRA; QLoRA for dense and MoE families, bitsandbytes' CPU backend), built from the family's
real config with small sizes (tests/data/configs/<family>/), and the conformance check (plan vs the
live model) passes. Qwen3.5 also runs from a checkpoint laid out as published (model_type 'qwen3_5':
the multimodal model, a text_config and a vision_config): the text model is planned, loaded and trained,
the vision tower is not loaded."""

import json
import shutil

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from families import DERIVED_FAMILIES, tiny_config  # noqa: E402

# dense and MoE families (fused experts stay 16-bit); Qwen3.5's linear-attention projections are quantized
QLORA = ("qwen3", "qwen3_moe", "qwen3_5_text", "qwen3_5_moe_text")
CELLS = [(f, "lora") for f in DERIVED_FAMILIES] + [(f, "qlora") for f in QLORA]


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from recipe_ft.runtime import demo

    return demo.make(tmp_path_factory.mktemp("families") / "qs", train_examples=16, eval_examples=2, epochs=1)


def _tiny_model(family: str, demo_recipe, out, method: str):
    """The family's tiny config with the demo tokenizer's vocabulary, random weights, saved to `out`."""
    import torch
    import transformers

    tokenizer_dir = demo_recipe.parent / "tiny-llama"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = tiny_config(family)
    cfg.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if method == "qlora" and "intermediate_size" in cfg:  # bitsandbytes' CPU 4-bit matmul wants widths in
        cfg["intermediate_size"] = 128  # multiples of 64 (96 fails)
    if method == "qlora" and family == "qwen3_5_text":  # its packed CPU inference kernel (evaluation, on CPUs
        cfg["linear_num_value_heads"] = 32  # with AVX512-BF16) wants out_features in multiples of 32: in_proj_a/b
    rest = {k: v for k, v in cfg.items() if k != "model_type"}
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(family, **rest))
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _tiny_multimodal_qwen3_5(demo_recipe, out):
    """A Qwen3.5 checkpoint as published: Qwen3_5ForConditionalGeneration (model_type 'qwen3_5', text and
    vision configs), the text model from tests/data/configs/qwen3_5_text, a one-block vision tower."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(demo_recipe.parent / "tiny-llama"))
    text = tiny_config("qwen3_5_text")
    text.pop("model_type")
    text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=text["hidden_size"],
                  num_position_embeddings=16)
    config = transformers.Qwen3_5Config(text_config=text, vision_config=vision)
    torch.manual_seed(0)
    model = transformers.Qwen3_5ForConditionalGeneration(config)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return model


@pytest.mark.parametrize("family,method", CELLS, ids=[f"{f}-{m}" for f, m in CELLS])
def test_tiny_family_trains_and_conforms(cli, demo_project, tmp_path, monkeypatch, family, method):
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    if (family, method) == ("qwen3_5_moe_text", "qlora"):
        # shared_expert_gate is an nn.Linear with one output, quantized by transformers as planned; bitsandbytes'
        # packed CPU inference kernel (evaluation, on CPUs with AVX512-BF16) needs out_features in multiples of
        # 32, so evaluate through its plain CPU path, the one training uses (GPUs have no such limit)
        import bitsandbytes.nn.modules

        monkeypatch.setattr(bitsandbytes.nn.modules, "has_avx512bf16", lambda: False)
    project = tmp_path / "qs"
    shutil.copytree(demo_project.parent, project, ignore=shutil.ignore_patterns("runs", "tiny-llama"))
    _tiny_model(family, demo_project, project / "tiny", method)
    recipe = project / "recipe.yaml"
    code, out, err = cli("run", recipe, "--set", "model.base=tiny", "--set", f"method.name={method}",
                         "--set", "training.max_steps=2", "--set", "training.micro_batch_size=4",
                         "--set", "training.batch_size=4", "--set", "training.logging_steps=1")
    assert code == 0, out + err
    report = json.loads((project / "runs" / "quickstart" / "run_report.json").read_text())
    assert report["status"] == "completed" and report["method"] == method
    conformance = report["conformance"]
    assert conformance["ok"] and not conformance["problems"], conformance
    checked = "\n".join(conformance["checked"])
    if family == "qwen3_moe":  # the fused expert tensors: planned, built and checked as 16-bit
        assert "mlp.experts: 2 x Qwen3MoeExperts" in checked
    if family.startswith("qwen3_5") and method == "qlora":  # the linear-attention layer's projections
        assert "in_proj_qkv: 1 x quantized" in checked and "in_proj_a: 1 x quantized" in checked
    if family == "qwen3_5_moe_text":
        assert "mlp.experts: 2 x Qwen3_5MoeExperts" in checked
    if method == "qlora":
        assert ("q_proj: 1 x quantized" if family.startswith("qwen3_5") else "q_proj: 2 x quantized") in checked
    assert len(report["loss_curve"]) == 2


def test_qwen3_5_published_layout_loads_the_text_model_only(demo_project, tmp_path):
    """What `recipe run` loads for a Qwen3.5 checkpoint (AutoModelForCausalLM.from_pretrained, runtime/train.py):
    Qwen3_5ForCausalLM with the checkpoint's own text weights, no vision tower; and the planner describes that
    same model (its parameter count)."""
    import torch
    import transformers

    from families import derived_architecture
    from recipe_ft.compiler.architecture import parameter_count

    saved = _tiny_multimodal_qwen3_5(demo_project, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "qwen3_5" and "vision_config" in cfg
    assert any(n.startswith("model.visual.") for n, _ in saved.named_parameters())
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert type(loaded).__name__ == "Qwen3_5ForCausalLM"
    assert not any("visual" in n for n, _ in loaded.named_parameters())
    assert torch.equal(loaded.model.embed_tokens.weight, saved.model.language_model.embed_tokens.weight)
    layer = "layers.0.linear_attn.in_proj_qkv.weight"
    assert torch.equal(loaded.model.get_parameter(layer), saved.model.language_model.get_parameter(layer))
    arch = derived_architecture(cfg, "qwen3_5 checkpoint")
    assert parameter_count(arch).total == sum(p.numel() for p in loaded.parameters())
    assert arch.layout.model_class == "Qwen3_5ForCausalLM"
    from recipe_ft.compiler import descriptor
    from recipe_ft.compiler.models import resolve_model
    from recipe_ft.runtime.describe import describe

    old = descriptor.set_deriver(lambda c, where: describe(c, where))
    try:
        note = resolve_model(str(tmp_path / "m"), tmp_path).note
    finally:
        descriptor.set_deriver(old)
    assert "multimodal checkpoint ('qwen3_5')" in note and "vision tower is not loaded" in note


def test_qwen3_5_published_layout_trains_and_conforms(cli, demo_project, tmp_path):
    project = tmp_path / "qs"
    shutil.copytree(demo_project.parent, project, ignore=shutil.ignore_patterns("runs", "tiny-llama"))
    _tiny_multimodal_qwen3_5(demo_project, project / "tiny")
    code, out, err = cli("run", project / "recipe.yaml", "--set", "model.base=tiny", "--set", "method.name=lora",
                         "--set", "training.max_steps=2", "--set", "training.micro_batch_size=4",
                         "--set", "training.batch_size=4", "--set", "training.logging_steps=1")
    assert code == 0, out + err
    report = json.loads((project / "runs" / "quickstart" / "run_report.json").read_text())
    plan = json.loads((project / "runs" / "quickstart" / "plan.json").read_text())
    assert any("vision tower is not loaded" in w for w in plan["warnings"])
    assert report["status"] == "completed"
    conformance = report["conformance"]
    assert conformance["ok"] and not conformance["problems"], conformance
    checked = "\n".join(conformance["checked"])
    assert "in_proj_qkv" in checked and "visual" not in checked
