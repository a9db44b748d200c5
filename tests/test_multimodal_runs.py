"""A vision-language checkpoint trained as its text model: a tiny random-weight Gemma 3 checkpoint saved in
the published multimodal layout (Gemma3ForConditionalGeneration, model_type 'gemma3', a text_config and a
vision_config; weights language_model.model.*, vision_tower.*, multi_modal_projector.*). transformers'
AutoModelForCausalLM would build the whole vision-language model for it; `recipe run` loads the text model
(Gemma3ForCausalLM) with the checkpoint's own language-model weights (runtime/text_model.py), the planner
describes that same model, and LoRA / QLoRA training, the conformance check, evaluation, resume and
`recipe export --merge` work on it."""

import json
import shutil

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from families import derived_architecture, tiny_config  # noqa: E402

SETS = ("training.max_steps=2", "training.micro_batch_size=4", "training.batch_size=4", "training.logging_steps=1")


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from recipe_ft.runtime import demo

    return demo.make(tmp_path_factory.mktemp("multimodal") / "qs", train_examples=16, eval_examples=2, epochs=1)


def _tiny_gemma3(demo_recipe, out):
    """Gemma3ForConditionalGeneration with the tiny gemma3_text config (widths bitsandbytes' CPU 4-bit matmul
    takes) and a one-layer SigLIP vision tower, random weights, saved to `out` with the demo tokenizer."""
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(demo_recipe.parent / "tiny-llama"))
    text = tiny_config("gemma3_text")
    text.pop("model_type")
    text.pop("architectures")
    text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, intermediate_size=128, head_dim=32, query_pre_attn_scalar=32)
    # (bitsandbytes' packed CPU inference kernel wants out_features in multiples of 32: k_proj is 1 x head_dim)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    torch.manual_seed(0)
    model = transformers.Gemma3ForConditionalGeneration(config)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return model


def test_gemma3_published_layout_loads_the_text_model_with_its_weights(demo_project, tmp_path):
    import torch
    import transformers
    from safetensors import safe_open

    from recipe_ft.compiler import descriptor
    from recipe_ft.compiler.architecture import parameter_count
    from recipe_ft.compiler.models import resolve_model
    from recipe_ft.runtime import text_model
    from recipe_ft.runtime.describe import describe

    saved = _tiny_gemma3(demo_project, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "gemma3" and "vision_config" in cfg and "text_config" in cfg
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "language_model.model.embed_tokens.weight" in keys and any(k.startswith("vision_tower.") for k in keys)
    # what AutoModelForCausalLM does on its own: the whole vision-language model
    assert type(transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))).__name__ == \
        "Gemma3ForConditionalGeneration"

    loaded = text_model.load(str(tmp_path / "m"), dtype=torch.float32)
    assert type(loaded).__name__ == "Gemma3ForCausalLM" and loaded.config.model_type == "gemma3_text"
    assert not any("vision" in n or "multi_modal" in n for n, _ in loaded.named_parameters())
    expected = saved.model.language_model.state_dict()
    got = loaded.model.state_dict()
    assert set(got) == set(expected)
    different = [k for k, v in expected.items() if not torch.equal(got[k], v)]
    assert not different, different  # every text weight is the checkpoint's, none randomly initialised
    assert torch.equal(loaded.lm_head.weight, saved.lm_head.weight)

    # the planner describes that same model
    arch = derived_architecture(cfg, "gemma3 checkpoint")
    assert arch.layout.model_class == "Gemma3ForCausalLM"
    assert parameter_count(arch).total == sum(p.numel() for p in loaded.parameters())
    assert parameter_count(arch).total < sum(p.numel() for p in saved.parameters())
    old = descriptor.set_deriver(lambda c, where: describe(c, where))
    try:
        note = resolve_model(str(tmp_path / "m"), tmp_path).note
    finally:
        descriptor.set_deriver(old)
    assert "multimodal checkpoint ('gemma3')" in note and "Gemma3ForCausalLM, built from the checkpoint's text_config" \
        in note and "vision tower is not loaded" in note


def test_language_model_under_unknown_names_is_refused_not_randomly_initialised(demo_project, tmp_path):
    """A multimodal checkpoint whose language model is stored under names the loader does not map: a clear
    error naming the weights it could not find, never a model with random text weights."""
    from safetensors.torch import load_file, save_file

    from recipe_ft.runtime import text_model
    from recipe_ft.schemas.errors import RecipeError

    _tiny_gemma3(demo_project, tmp_path / "m")
    path = tmp_path / "m" / "model.safetensors"
    tensors = load_file(str(path))
    save_file({k.replace("language_model.model.", "text_decoder."): v for k, v in tensors.items()}, str(path),
              metadata={"format": "pt"})
    with pytest.raises(RecipeError) as caught:
        text_model.load(str(tmp_path / "m"))
    assert "were not found in the checkpoint" in str(caught.value) and "Gemma3ForCausalLM" in str(caught.value)


def _run(cli, project, method, *extra):
    args = ["run", project / "recipe.yaml", "--set", "model.base=tiny", "--set", f"method.name={method}"]
    for s in SETS:
        args += ["--set", s]
    return cli(*args, *extra)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_gemma3_published_layout_trains_conforms_and_exports(cli, demo_project, tmp_path, method):
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from recipe_ft.runtime import text_model

    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    project = tmp_path / "qs"
    shutil.copytree(demo_project.parent, project, ignore=shutil.ignore_patterns("runs", "tiny-llama"))
    _tiny_gemma3(demo_project, project / "tiny")
    code, out, err = _run(cli, project, method)
    assert code == 0, out + err
    run_dir = project / "runs" / "quickstart"
    report = json.loads((run_dir / "run_report.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())
    assert any("multimodal checkpoint ('gemma3')" in w and "vision tower is not loaded" in w for w in plan["warnings"])
    assert report["status"] == "completed" and report["method"] == method
    conformance = report["conformance"]
    assert conformance["ok"] and not conformance["problems"], conformance
    checked = "\n".join(conformance["checked"])
    assert ("q_proj: 2 x quantized" if method == "qlora" else "q_proj") in checked
    assert "vision" not in checked and "multi_modal" not in checked
    assert report["evaluation"]["baseline"] and report["evaluation"]["tuned"]
    with safe_open(str(run_dir / "adapter" / "adapter_model.safetensors"), "pt") as f:
        adapted = {k.split(".lora_")[0] for k in f.keys()}
    assert adapted and all(k.startswith("base_model.model.model.layers.") for k in adapted), sorted(adapted)[:4]
    assert len(adapted) == 2 * 7  # 2 layers x q, k, v, o, gate, up, down: the language model's linears only

    code, out, err = cli("export", run_dir, "--merge")
    assert code == 0, out + err
    merged_dir = run_dir / "merged"
    merged_cfg = json.loads((merged_dir / "config.json").read_text())
    assert merged_cfg["model_type"] == "gemma3_text" and merged_cfg["architectures"] == ["Gemma3ForCausalLM"]
    assert "vision_config" not in merged_cfg
    with safe_open(str(next(merged_dir.glob("*.safetensors"))), "pt") as f:
        assert all(k.startswith(("model.", "lm_head.")) for k in f.keys())
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    base = text_model.load(str(project / "tiny"), dtype=torch.float32)
    with torch.no_grad():
        reference = PeftModel.from_pretrained(base, str(run_dir / "adapter"))(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
        assert type(merged).__name__ == "Gemma3ForCausalLM"
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, reference, atol=1e-4)
    vllm = (run_dir / "serve" / "vllm_merged.sh").read_text()
    assert f"vllm serve {merged_dir}" in vllm and "Gemma3ForCausalLM" in vllm
    assert "Gemma3ForCausalLM" in (run_dir / "serve" / "Modelfile").read_text()
    lora = (run_dir / "serve" / "vllm_lora.sh").read_text()
    assert "text model" in lora and "recipe export --merge" in lora


def test_gemma3_published_layout_resumes(cli, demo_project, tmp_path, monkeypatch):
    """Stopped after its first checkpoint (the disk full at the second save), the run resumes on the text model."""
    import errno

    from transformers import Trainer

    project = tmp_path / "qs"
    shutil.copytree(demo_project.parent, project, ignore=shutil.ignore_patterns("runs", "tiny-llama"))
    _tiny_gemma3(demo_project, project / "tiny")
    original = Trainer._save
    calls = []

    def full_disk(self, output_dir=None, state_dict=None):
        calls.append(output_dir)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, output_dir, state_dict)

    monkeypatch.setattr(Trainer, "_save", full_disk)
    extra = ("--set", "training.save_steps=1", "--set", "data.eval=null")
    code, out, err = _run(cli, project, "lora", *extra)
    assert code == 1 and "checkpoint-1, is kept" in err, out + err
    monkeypatch.setattr(Trainer, "_save", original)
    code, out, err = _run(cli, project, "lora", *extra, "--resume")
    assert code == 0, out + err
    report = json.loads((project / "runs" / "quickstart" / "run_report.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-1") and report["conformance"]["ok"]
    assert (project / "runs" / "quickstart" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("name", ["google/gemma-3-4b-it", "google/gemma-3-27b-pt"])
def test_gemma3_catalog_plan_says_the_vision_tower_is_not_loaded(cli, name):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "support-triage-llama3-8b.yaml"
    code, out, err = cli("plan", "--format", "json", recipe, "--set", f"model.base={name}")
    assert code in (0, 3), err
    note = next(w for w in json.loads(out)["warnings"] if "multimodal checkpoint" in w)
    assert "Gemma3ForCausalLM" in note and "vision tower (about 0.4B SigLIP)" in note and "not loaded" in note


def test_gemma3_1b_text_checkpoint_gets_no_multimodal_note(cli):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "support-triage-llama3-8b.yaml"
    code, out, err = cli("plan", "--format", "json", recipe, "--set", "model.base=google/gemma-3-1b-it")
    assert code in (0, 3), err
    assert not any("multimodal" in w for w in json.loads(out)["warnings"])


def test_tracer_measures_the_text_model_of_a_multimodal_config():
    """The tracer (the planner's referee) builds what `recipe run` loads: the same step for the multimodal
    config as for its text config alone (the vision tower neither weighs nor trains)."""
    import transformers

    from recipe_ft.runtime.trace import TraceSpec, trace

    text = tiny_config("gemma3_text")
    text.pop("architectures")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    full = transformers.Gemma3Config(text_config={k: v for k, v in text.items() if k != "model_type"},
                                     vision_config=vision, mm_tokens_per_image=4).to_dict()
    opts = dict(method="lora", precision="fp32", seq_len=32, micro_batch_size=1)
    multimodal, alone = trace(TraceSpec(config=full, **opts)), trace(TraceSpec(config=text, **opts))
    assert multimodal.trainable_params == alone.trainable_params > 0
    assert multimodal.weights_bytes == alone.weights_bytes
