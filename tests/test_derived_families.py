"""Families the planner knows from descriptors derived by transformers (meta device): the descriptor
matches the model transformers builds and what peft's LoRA adapts; a local directory holding only the
config.json of an uncatalogued family plans after deriving its descriptor once (then from the cache);
a family that cannot be described is a clear error, never a traceback; without transformers the
error says what to install."""

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from families import DERIVED_FAMILIES, derived_architecture, tiny_config  # noqa: E402
from test_models import _assert_matches_transformers  # noqa: E402

from recipe_ft.compiler import descriptor  # noqa: E402
from recipe_ft.compiler.architecture import linear_modules, parameter_targets  # noqa: E402
from recipe_ft.compiler.models import catalog_entry, resolve_model  # noqa: E402
from recipe_ft.schemas.errors import UnsupportedArchitecture  # noqa: E402

# an uncatalogued family the hand normaliser never knew (LG's EXAONE 4: hybrid sliding / full attention)
EXAONE4 = {"model_type": "exaone4", "architectures": ["Exaone4ForCausalLM"], "hidden_size": 64,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
           "intermediate_size": 96, "vocab_size": 128, "max_position_embeddings": 256, "sliding_window": 16,
           "layer_types": ["sliding_attention", "full_attention"], "tie_word_embeddings": False,
           "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


@pytest.mark.parametrize("family", DERIVED_FAMILIES)
def test_descriptor_matches_transformers(family):
    cfg = tiny_config(family)
    _assert_matches_transformers(cfg, family, derived_architecture(cfg, family))


@pytest.mark.parametrize("family", DERIVED_FAMILIES)
def test_lora_all_linear_matches_peft(family):
    """The descriptor's LoRA targets (modules, and MoE target_parameters with peft's rank multiplier)
    give the trainable count peft really makes, at a rank other than the one derived at."""
    import peft
    import transformers

    cfg = tiny_config(family)
    arch = derived_architecture(cfg, family)
    rest = {k: v for k, v in cfg.items() if k != "model_type"}
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(family, **rest))
    r = 4
    lora = peft.get_peft_model(model, peft.LoraConfig(r=r, target_modules="all-linear"))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    expected = sum(m.lora_params(r) for m in linear_modules(arch)) + sum(t.lora_params(r) for t in parameter_targets(arch))
    assert trainable == expected


def test_moe_descriptors_say_what_stays_16_bit():
    from recipe_ft.compiler.build import module_rows

    for name in ("Qwen/Qwen3-30B-A3B", "openai/gpt-oss-20b", "Qwen/Qwen3.5-35B-A3B"):
        arch = resolve_model(name, Path(".")).architecture
        rows = module_rows(arch, "qlora", 4)
        experts = [r for r in rows if r.name == "mlp.experts"]
        assert len(experts) == 1 and not experts[0].quantized and experts[0].count == arch.num_layers
        assert experts[0].module_class in ("Qwen3MoeExperts", "GptOssExperts", "Qwen3_5MoeExperts")
        assert "stay in the compute dtype" in experts[0].reason and "B expert values" in experts[0].reason
        assert all(r.quantized for r in rows if r is not experts[0])  # the attention projections


@pytest.mark.parametrize("family", ["qwen3_moe", "gpt_oss", "qwen3_5_moe_text"])
def test_lora_dropout_refused_exactly_where_peft_refuses_it(family):
    """peft's ParamWrapper (LoRA on fused expert tensors) refuses lora_dropout; 'all-linear' uses it on
    Qwen3-MoE (and Mixtral), not on gpt-oss or Qwen3.5-MoE. The compiler refuses where peft does, no more."""
    import peft
    import transformers

    from recipe_ft.compiler.build import peft_refuses

    cfg = tiny_config(family)
    arch = derived_architecture(cfg, family)
    rest = {k: v for k, v in cfg.items() if k != "model_type"}
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(family, **rest))
    try:
        peft.get_peft_model(model, peft.LoraConfig(r=4, lora_dropout=0.05, target_modules="all-linear"))
        peft_error = None
    except ValueError as exc:
        peft_error = str(exc)
    refused = peft_refuses(arch, "lora", "all-linear", 0.05)
    assert (refused is not None) == (peft_error is not None), (refused, peft_error)
    assert (refused is not None) == (family == "qwen3_moe")


# ----------------------------------------------------------------- Qwen3.5 (catalog)

QWEN3_5 = {"Qwen/Qwen3.5-9B": "qwen3_5", "Qwen/Qwen3.5-35B-A3B": "qwen3_5_moe"}


@pytest.mark.parametrize("name", QWEN3_5)
def test_qwen3_5_catalog_entry_is_the_text_model_of_the_published_checkpoint(name):
    """The hub checkpoints are multimodal (model_type qwen3_5 / qwen3_5_moe, a text_config and a vision_config);
    AutoModelForCausalLM, which `recipe run` loads them with, builds the text model alone. The catalog entry (a
    text config) describes that same model: class, parameters, linears; the vision tower is not in it."""
    from recipe_ft.runtime.describe import build_meta_model, describe

    entry = catalog_entry(name)
    text = {k: v for k, v in entry["config"].items() if k not in ("model_type", "architectures")}
    published = {"model_type": QWEN3_5[name], "text_config": text}  # the class's default vision_config
    model, _ = build_meta_model(published, name)
    assert not any("visual" in n for n, _ in model.named_parameters())
    desc = describe(published, name, with_peft=False)
    catalog = descriptor.catalog_descriptors()[descriptor.config_hash(entry["config"])]
    assert desc["model_class"] == catalog["model_class"] == type(model).__name__
    assert desc["params"] == catalog["params"] and desc["linears"] == catalog["linears"]
    assert desc["expert_tensors"] == catalog["expert_tensors"]


def _qwen3_5_plan(tmp_path, base, method, dropout=0.0):
    from recipe_ft.compiler.pipeline import compile_file

    (tmp_path / "train.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}\n')
    path = tmp_path / "r.yaml"
    path.write_text(f"task: chat\nmodel:\n  base: {base}\ndata:\n  train: train.jsonl\n  examples: 10000\n"
                    f"  tokens_per_example: 400\nmethod:\n  name: {method}\n  dropout: {dropout}\n"
                    f"training:\n  max_seq_len: 1024\n  batch_size: 16\nbudget:\n  gpu: H100-80GB\n")
    return compile_file(str(path))


def test_qwen3_5_9b_recipe_plans_from_the_catalog(tmp_path):
    compiled = _qwen3_5_plan(tmp_path, "Qwen/Qwen3.5-9B", "qlora")
    plan = compiled.plan
    assert compiled.exit_code == 0 and plan.fits
    arch = resolve_model("Qwen/Qwen3.5-9B", Path(".")).architecture
    assert plan.model.source == "catalog" and plan.model.family == "qwen3_5_text"
    assert plan.model.parameters == arch.layout.counts.total
    rows = {r.name: r for r in plan.build.modules}
    # the gated delta net layers' projections (3 of every 4 layers) and full attention's (every 4th), quantized
    assert {n: rows[n].count for n in ("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj")} == \
        dict.fromkeys(("in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj"), 24)
    assert rows["q_proj"].count == rows["o_proj"].count == 8 and rows["down_proj"].count == 32
    assert all(r.quantized for r in plan.build.modules)
    note = next(w for w in plan.warnings if "multimodal checkpoint" in w)
    assert "vision tower (about 0.45B) is not loaded" in note and "not checked against the hub" in note


def test_qwen3_5_moe_plans_with_dropout_and_keeps_its_experts_16_bit(tmp_path):
    compiled = _qwen3_5_plan(tmp_path, "Qwen/Qwen3.5-35B-A3B", "qlora", dropout=0.05)
    plan = compiled.plan
    assert compiled.exit_code == 0, compiled
    experts = next(r for r in plan.build.modules if r.name == "mlp.experts")
    assert not experts.quantized and experts.module_class == "Qwen3_5MoeExperts" and experts.count == 40
    assert "32.21B expert values" in experts.reason
    # the experts at 2 bytes a value (bf16) are most of the weights, across the GPUs that hold them
    arch = resolve_model("Qwen/Qwen3.5-35B-A3B", Path(".")).architecture
    gpus = plan.hardware.count if plan.distributed.strategy in ("fsdp", "deepspeed") else 1
    assert plan.memory.components["weights"] * gpus >= 2 * arch.layout.counts.experts


def test_qwen3_5_attention_is_counted_in_its_full_attention_layers_only():
    """Qwen3.5 has softmax attention in 8 of its 32 layers (a gated delta net in the others): the attention
    FLOPs and eager score matrices are those of 8 layers, not 32; its linears are all 32 layers'."""
    import dataclasses

    from recipe_ft.compiler import memory, timing

    arch = resolve_model("Qwen/Qwen3.5-9B", Path(".")).architecture
    assert (arch.num_layers, arch.softmax_attention_layers) == (32, 8)
    shape = memory.StepShape(method="lora", seq_len=4096)
    per_token = timing.flop_parts(arch, shape, 2048)["forward"] - timing.flop_parts(arch, shape, 0)["forward"]
    assert per_token == 2 * 8 * 2048 * arch.num_heads * arch.head_dim
    every_layer = dataclasses.replace(arch, attention_layers=None)
    eager = dataclasses.replace(shape, attention="eager")
    scores = memory.layer_features(arch, eager)["eager_scores"]
    assert scores * 4 == memory.layer_features(every_layer, eager)["eager_scores"] > 0
    assert resolve_model("Qwen/Qwen3-8B", Path(".")).architecture.attention_layers is None
    # the q/k norms are the full-attention layers' (the first layer's linear_attn.norm is none)
    desc = descriptor.catalog_descriptors()[descriptor.config_hash(catalog_entry("Qwen/Qwen3.5-9B")["config"])]
    assert desc["norms"]["qk"] == ["self_attn.q_norm", "self_attn.k_norm"]
    assert desc["attention"]["layer_types"] == {"linear_attention": 24, "full_attention": 8}


DEEPSEEK_V3 = {"model_type": "deepseek_v3", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 4, "intermediate_size": 96, "moe_intermediate_size": 32, "n_routed_experts": 4,
               "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "n_group": 1,
               "topk_group": 1, "q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8,
               "v_head_dim": 16, "vocab_size": 128, "max_position_embeddings": 256, "pad_token_id": 0}


def test_uncatalogued_moe_with_mla_and_dense_layers():
    """DeepSeek-V3's layout (MLA attention, a dense first layer, routed and shared experts): the derived
    descriptor counts what transformers builds; the build record has one row per module name, and the
    fused experts only where they are (one MoE layer of two)."""
    from recipe_ft.compiler.build import module_rows

    arch = derived_architecture(DEEPSEEK_V3, "deepseek_v3")
    _assert_matches_transformers(DEEPSEEK_V3, "deepseek_v3", arch)
    rows = module_rows(arch, "qlora", 4)
    assert len({r.name for r in rows}) == len(rows)
    assert {r.name for r in rows} >= {"q_a_proj", "kv_a_proj_with_mqa", "kv_b_proj", "gate_proj", "mlp.experts"}
    experts = next(r for r in rows if r.name == "mlp.experts")
    assert experts.count == 1 and not experts.quantized
    assert next(r for r in rows if r.name == "gate_proj").count == 2  # the dense MLP and the shared expert


# ----------------------------------------------------------------- recipe plan on a local directory


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A recipe whose model.base is a directory holding only an EXAONE 4 config.json; an empty cache."""
    pytest.importorskip("tokenizers")
    monkeypatch.setenv("RECIPE_CACHE_DIR", str(tmp_path / "cache"))
    from recipe_ft.runtime import demo

    recipe = demo.make(tmp_path / "qs", train_examples=8, eval_examples=4, epochs=1)
    model = recipe.parent / "exaone"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(EXAONE4))
    return recipe


def _plan(cli, recipe):
    return cli("plan", "--format", "json", recipe, "--set", "model.base=exaone", "--set", "budget.gpu=L4")


def test_uncatalogued_family_is_derived_once_then_read_from_the_cache(cli, project, tmp_path):
    key = descriptor.config_hash(EXAONE4)
    cached = descriptor.cache_dir() / f"{key}.json"
    assert cached.is_relative_to(tmp_path / "cache") and not cached.exists()
    code, out, err = _plan(cli, project)
    assert code in (0, 3), err
    assert "model_type 'exaone4' is not in the catalog: described it with transformers" in err
    assert " s (cached in " in err and cached.is_file()
    first = json.loads(out)
    assert json.loads(cached.read_text())["model_type"] == "exaone4"

    code, out, err = _plan(cli, project)  # the second plan reads the cache: no note, the same plan
    assert code in (0, 3) and "described it" not in err
    second = json.loads(out)
    assert second["memory"] == first["memory"] and second["model"] == first["model"]
    assert first["model"]["family"] == "exaone4" and first["model"]["parameters"] == 78208


def test_a_cache_folder_that_cannot_be_written_still_plans(cli, project, tmp_path, monkeypatch):
    """A derived descriptor that cannot be kept is no error: the plan is made, the note says it was not
    cached, and the next plan derives it again (no traceback)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RECIPE_CACHE_DIR", str(blocker / "cache"))
    for _ in range(2):
        code, out, err = _plan(cli, project)
        assert code in (0, 3), err
        assert "Traceback" not in err and "described it with transformers" in err
        assert "could not cache it in " in err and "cached in" not in err
        assert json.loads(out)["model"]["parameters"] == 78208


def test_without_the_train_extra_the_error_says_what_to_install(cli, project, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` fails as if not installed
    code, out, err = _plan(cli, project)
    said = out + err
    assert code == 1 and "Traceback" not in said
    assert "model.base" in said and "model_type 'exaone4'" in said and "pip install 'recipe-ft[train]'" in said


@pytest.mark.parametrize("cfg,says", [
    ({"model_type": "t5", "d_model": 64, "vocab_size": 128}, "has no causal language model"),
    ({"model_type": "not_a_family", "hidden_size": 64}, "is not known to the installed transformers"),
])
def test_a_family_that_cannot_be_described_is_a_clear_error(cli, project, cfg, says):
    (project.parent / "exaone" / "config.json").write_text(json.dumps(cfg))
    code, out, err = _plan(cli, project)
    said = out + err
    assert code == 1 and "Traceback" not in said
    assert f"model_type '{cfg['model_type']}'" in said and says in said and "config.json" in said


def test_the_compiler_alone_asks_for_transformers(tmp_path):
    """No deriver installed (the compiler used as a library) and nothing cached: a clear error."""
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({**EXAONE4, "hidden_size": 128}))
    old = descriptor.set_deriver(None)
    try:
        with pytest.raises(UnsupportedArchitecture) as err:
            resolve_model("m", tmp_path)
    finally:
        descriptor.set_deriver(old)
    assert "exaone4" in err.value.message and "[train]" in err.value.message


def test_a_model_without_linear_projections_is_refused_for_lora_not_planned_with_nothing_to_train(cli, project):
    """GPT-2's projections are Conv1D, not nn.Linear: a LoRA plan of it said '0 trainable, 0 module types'
    with exit 0. It is now an error at method.name that says what to do; full fine-tuning still plans."""
    gpt2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_layer": 2, "n_embd": 64, "n_head": 4,
            "vocab_size": 128, "n_positions": 256, "bos_token_id": 1, "eos_token_id": 2}
    (project.parent / "exaone" / "config.json").write_text(json.dumps(gpt2))
    code, out, err = _plan(cli, project)
    assert code == 1 and not out and "Traceback" not in err
    assert "method.name: a gpt2 model has no nn.Linear module" in err and "use method.name full" in err
    code, out, err = cli("plan", "--format", "json", project, "--set", "model.base=exaone", "--set", "budget.gpu=L4",
                         "--set", "method.name=full")
    assert code in (0, 3), err
    assert json.loads(out)["model"]["trainable_parameters"] == json.loads(out)["model"]["parameters"]
