"""`recipe run` trains a tiny random-weight instance of each family described by transformers on the
CPU (LoRA; QLoRA for a dense and an MoE family, bitsandbytes' CPU backend), built from the family's
real config with small sizes (tests/data/configs/<family>/), and the conformance check (plan vs the
live model) passes."""

import json
import shutil

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from families import DERIVED_FAMILIES, tiny_config  # noqa: E402

QLORA = ("qwen3", "qwen3_moe")  # a dense family and an MoE one (its fused experts stay 16-bit)
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
    if method == "qlora":  # bitsandbytes' CPU 4-bit matmul wants widths in multiples of 64 (96 fails)
        cfg["intermediate_size"] = 128
    rest = {k: v for k, v in cfg.items() if k != "model_type"}
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(family, **rest))
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


@pytest.mark.parametrize("family,method", CELLS, ids=[f"{f}-{m}" for f, m in CELLS])
def test_tiny_family_trains_and_conforms(cli, demo_project, tmp_path, family, method):
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
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
    if method == "qlora":
        assert "q_proj: 2 x quantized" in checked
    assert len(report["loss_curve"]) == 2
