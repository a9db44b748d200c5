"""Model catalog, config.json normalisation, parameter counts and model resolution.

The exact checks build the real transformers model on the meta device (no memory,
no weights) and compare our pure-Python shapes and counts with it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recipe_ft.compiler.architecture import (
    SUPPORTED_FAMILIES,
    expert_parameters,
    from_config,
    linear_modules,
    parameter_count,
    parameter_targets,
)
from recipe_ft.schemas.errors import ModelNotFound, UnsupportedArchitecture
from families import DERIVED_FAMILIES
from recipe_ft.compiler.descriptor import DESCRIPTORS_PATH, catalog_descriptors, config_hash
from recipe_ft.compiler.models import (
    CATALOG_PATH,
    LOADED_BY,
    catalog_version,
    resolve_model,
)

CONFIGS = Path(__file__).parent / "data" / "configs"
# the hand-normalised families' fixtures (tests/test_derived_families.py covers tests/families.py's)
FIXTURES = sorted(p.name for p in CONFIGS.iterdir() if (p / "config.json").is_file() and p.name not in DERIVED_FAMILIES)
CATALOG = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
ENTRIES = CATALOG["models"]


def _fixture(name: str) -> dict:
    return json.loads((CONFIGS / name / "config.json").read_text(encoding="utf-8"))


def catalog_names() -> list[str]:
    return [e["name"] for e in ENTRIES]


def _catalog_arch(name: str):
    return resolve_model(name, Path(".")).architecture


def _distinct_catalog_configs() -> list[tuple[str, dict]]:
    seen: dict[str, tuple[str, dict]] = {}
    for entry in ENTRIES:
        seen.setdefault(json.dumps(entry["config"], sort_keys=True), (entry["name"], entry["config"]))
    return list(seen.values())


# ------------------------------------------------------------------ catalog


def test_catalog_layout():
    assert catalog_version() == CATALOG["catalog_version"] == "2026-12-01"
    keys = [k.lower() for e in ENTRIES for k in (e["name"], *e["aliases"])]
    assert len(keys) == len(set(keys)), "hub ids and aliases must be unique (case-insensitive)"
    for entry in ENTRIES:
        assert set(entry) >= {"name", "aliases", "published_params", "source", "config"}
        assert isinstance(entry["published_params"], int) and entry["published_params"] > 0
        if "multimodal" in entry:  # a multimodal checkpoint trained as its text model: how it is loaded
            assert set(entry["multimodal"]) <= {"model_type", "loaded_by", "vision_tower"}
            assert entry["multimodal"]["loaded_by"] in LOADED_BY and entry["multimodal"]["model_type"]
        assert config_hash(entry["config"]) in catalog_descriptors(), (
            f"{entry['name']}: no descriptor; run `python -m recipe_ft.runtime.describe --catalog`")


def test_descriptors_record_their_derivation():
    data = json.loads(DESCRIPTORS_PATH.read_text(encoding="utf-8"))
    assert data["versions"]["transformers"].startswith("5.") and data["derived"] >= "2026-12-01"
    hashes = {config_hash(e["config"]) for e in ENTRIES}
    assert set(data["descriptors"]) == hashes, "descriptors.json is stale: re-derive it"
    for key, desc in data["descriptors"].items():
        assert desc["config_sha256"] == key and desc["model_class"].endswith("ForCausalLM")


@pytest.mark.parametrize(
    "name",
    [
        "meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-7b-chat-hf", "meta-llama/Llama-2-13b-hf",
        "meta-llama/Llama-2-13b-chat-hf", "meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-70b-chat-hf",
        "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B-Instruct",
        "meta-llama/Meta-Llama-3-70B", "meta-llama/Meta-Llama-3-70B-Instruct",
        "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-70B",
        "meta-llama/Llama-3.1-70B-Instruct", "meta-llama/Llama-3.1-405B", "meta-llama/Llama-3.1-405B-Instruct",
        "meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-1B-Instruct",
        "meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.2-3B-Instruct", "meta-llama/Llama-3.3-70B-Instruct",
        "mistralai/Mistral-7B-v0.1", "mistralai/Mistral-7B-Instruct-v0.1",
        "mistralai/Mistral-7B-v0.3", "mistralai/Mistral-7B-Instruct-v0.3",
        "mistralai/Mixtral-8x7B-v0.1", "mistralai/Mixtral-8x7B-Instruct-v0.1",
        *[f"Qwen/Qwen2.5-{s}{i}" for s in ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B") for i in ("", "-Instruct")],
        *[f"google/gemma-2-{s}{i}" for s in ("2b", "9b", "27b") for i in ("", "-it")],
        "microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3-medium-4k-instruct",
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        *[f"Qwen/Qwen3-{s}{b}" for s in ("0.6B", "1.7B", "4B", "8B", "14B", "32B", "30B-A3B") for b in ("", "-Base")],
        *[f"google/gemma-3-{s}-{k}" for s in ("1b", "4b", "12b", "27b") for k in ("pt", "it")],
        "openai/gpt-oss-20b", "openai/gpt-oss-120b", "mistralai/Mistral-Small-24B-Instruct-2501",
        "mistralai/Ministral-8B-Instruct-2410", "microsoft/phi-4", "microsoft/Phi-4-mini-instruct",
        "HuggingFaceTB/SmolLM3-3B", "allenai/OLMo-2-1124-7B", "allenai/Olmo-3-1025-7B",
        "ibm-granite/granite-3.1-8b-instruct", "ibm-granite/granite-3.3-8b-instruct",
        "Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-35B-A3B",
    ],
)
def test_catalog_covers(name):
    assert name in catalog_names()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_catalog_count_matches_published(entry):
    counts = parameter_count(_catalog_arch(entry["name"]))
    # a model card's rounded figure carries its precision; a hub safetensors total, 0.5%
    tolerance = entry.get("published_params_precision") or 0.005 * entry["published_params"]
    assert abs(counts.total - entry["published_params"]) <= tolerance
    parts = counts.embedding + counts.lm_head + counts.decoder_linear + counts.experts + counts.other
    assert parts == counts.total


def test_catalog_architecture_details():
    arch = {e["name"]: _catalog_arch(e["name"]) for e in ENTRIES}
    g9, g27 = arch["google/gemma-2-9b"], arch["google/gemma-2-27b"]
    assert (g9.head_dim, g27.head_dim, g9.norms_per_layer, g9.final_logit_softcapping) == (256, 128, 4, 30.0)
    q05, q7 = arch["Qwen/Qwen2.5-0.5B"], arch["Qwen/Qwen2.5-7B"]
    assert q05.tied_embeddings and not q7.tied_embeddings and q7.attention_bias and not q7.attention_out_bias
    assert q7.sliding_window is None  # use_sliding_window is false
    phi3 = arch["microsoft/Phi-3-mini-4k-instruct"]
    assert [lin.name for lin in linear_modules(phi3)] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    mix = arch["mistralai/Mixtral-8x7B-v0.1"]
    assert (mix.num_experts, mix.experts_per_token, mix.intermediate_size) == (8, 2, 14336)
    assert arch["mistralai/Mistral-7B-v0.1"].sliding_window == 4096
    assert arch["mistralai/Mistral-7B-v0.3"].sliding_window is None
    assert arch["meta-llama/Llama-3.1-8B"].rope_type == "llama3"
    assert arch["meta-llama/Llama-3.2-1B"].tied_embeddings


# ------------------------------------------- exact comparison with transformers


def _meta_model(cfg: dict):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    cfg = dict(cfg)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


def _model_linears(model) -> dict[tuple, int]:
    import torch

    head = model.get_output_embeddings()
    rows: dict[tuple, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            key = (name.rsplit(".", 1)[-1], module.in_features, module.out_features, module.bias is not None)
            rows[key] = rows.get(key, 0) + 1
    return rows


def _model_experts(model) -> dict[tuple, int]:
    import torch

    rows: dict[tuple, int] = {}
    for name, param in model.named_parameters():
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        if param.dim() == 3 and not isinstance(owner, torch.nn.modules.conv._ConvNd):  # not a conv kernel
            suffix = name.split(".layers.", 1)[1].split(".", 1)[1]
            key = (suffix, tuple(param.shape))
            rows[key] = rows.get(key, 0) + 1
    return rows


def _assert_matches_transformers(cfg: dict, where: str, arch=None):
    arch = arch or from_config(cfg, where)
    model = _meta_model(cfg)
    counts = parameter_count(arch)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.embedding == model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == arch.tied_embeddings
    assert counts.lm_head == (0 if tied else model.get_output_embeddings().weight.numel())
    ours = {(lin.name, lin.in_features, lin.out_features, lin.bias): lin.count for lin in linear_modules(arch)}
    assert ours == _model_linears(model)
    ours_experts = {
        (e.path, (e.num_experts, e.out_features, e.in_features)): e.count for e in expert_parameters(arch)
    }
    assert ours_experts == _model_experts(model)


@pytest.mark.parametrize("name", FIXTURES)
def test_tiny_config_matches_transformers(name):
    _assert_matches_transformers(_fixture(name), f"tests/data/configs/{name}/config.json")


def test_fixtures_cover_every_family():
    assert {_fixture(n)["model_type"] for n in FIXTURES} == set(SUPPORTED_FAMILIES)


@pytest.mark.parametrize(
    "name,cfg", _distinct_catalog_configs(), ids=[n for n, _ in _distinct_catalog_configs()]
)
def test_full_size_catalog_config_matches_transformers(name, cfg):
    """Every catalog model: the planner's architecture (from the checked-in descriptor) has exactly the
    parameters, linears and expert tensors of the transformers model built on the meta device."""
    _assert_matches_transformers(cfg, name, _catalog_arch(name))


LEGACY = [(n, c) for n, c in _distinct_catalog_configs() if c["model_type"] in SUPPORTED_FAMILIES]


@pytest.mark.parametrize("name,cfg", LEGACY, ids=[n for n, _ in LEGACY])
def test_descriptor_agrees_with_hand_normaliser(name, cfg):
    """For the families the compiler still normalises by hand (local directories plan without
    transformers), the hand-written architecture equals the derived one, field by field and module by module."""
    derived, by_hand = _catalog_arch(name), from_config(cfg, name)
    assert derived == by_hand
    assert linear_modules(derived) == linear_modules(by_hand)
    assert parameter_count(derived) == parameter_count(by_hand)
    assert parameter_targets(derived) == parameter_targets(by_hand)


@pytest.mark.parametrize("name", FIXTURES)
def test_lora_all_linear_matches_peft(name):
    """linear_modules + parameter_targets are what PEFT's LoRA 'all-linear' adapts, with its parameter count."""
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    cfg = _fixture(name)
    arch = from_config(cfg, name)
    cfg.pop("model_type")
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(arch.family, **cfg))
    r = 4
    lora = peft.get_peft_model(model, peft.LoraConfig(r=r, target_modules="all-linear"))
    config = lora.peft_config["default"]
    assert {t.rsplit(".", 1)[-1] for t in config.target_modules} == {lin.name for lin in linear_modules(arch)}
    assert set(config.target_parameters or ()) == {t.name for t in parameter_targets(arch)}
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    expected = sum(lin.lora_params(r) for lin in linear_modules(arch))
    expected += sum(t.lora_params(r) for t in parameter_targets(arch))
    assert trainable == expected


# ------------------------------------------------------------- config errors


def test_unknown_model_type_names_file_and_families():
    with pytest.raises(UnsupportedArchitecture) as err:
        from_config({"model_type": "t5", "hidden_size": 8}, "x/config.json")
    assert "x/config.json" in err.value.message and "'t5'" in err.value.message and "llama" in err.value.message


def test_missing_model_type():
    with pytest.raises(UnsupportedArchitecture, match="model_type"):
        from_config({"hidden_size": 8}, "x/config.json")


def test_missing_required_field_names_it():
    cfg = _fixture("llama")
    del cfg["intermediate_size"]
    with pytest.raises(UnsupportedArchitecture) as err:
        from_config(cfg, "m/config.json")
    assert "m/config.json" in err.value.message and "'intermediate_size'" in err.value.message


@pytest.mark.parametrize(
    "change,field",
    [
        ({"hidden_size": "64"}, "hidden_size"),
        ({"num_hidden_layers": True}, "num_hidden_layers"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings"),
        ({"num_key_value_heads": 3}, "num_attention_heads"),
    ],
)
def test_bad_field_values(change, field):
    cfg = {**_fixture("llama"), **change}
    with pytest.raises(UnsupportedArchitecture, match=field):
        from_config(cfg, "m/config.json")


def test_defaults_follow_transformers():
    cfg = _fixture("llama")
    del cfg["num_key_value_heads"], cfg["tie_word_embeddings"]
    arch = from_config(cfg, "m")
    assert arch.num_kv_heads == arch.num_heads and not arch.tied_embeddings
    falcon = from_config({k: v for k, v in _fixture("falcon-mqa").items() if k != "multi_query"}, "f")
    assert falcon.num_kv_heads == 1  # FalconConfig.multi_query defaults to true
    legacy = {"model_type": "falcon", "n_embed": 64, "n_layer": 2, "n_head": 4, "vocab_size": 128}
    assert from_config(legacy, "f").hidden_size == 64


# ------------------------------------------------------------------ resolution


def test_resolve_alias_and_hub_id():
    by_alias = resolve_model("llama-3-8b-instruct", Path("."))
    by_id = resolve_model("META-LLAMA/meta-llama-3-8b-instruct", Path("."))
    assert by_alias == by_id
    assert by_alias.name == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert (by_alias.source, by_alias.path, by_alias.published_params) == ("catalog", None, 8030261248)
    assert by_alias.architecture.num_kv_heads == 8


def test_resolve_local_dir_absolute_and_relative(tmp_path):
    model_dir = tmp_path / "models" / "tiny"
    shutil.copytree(CONFIGS / "qwen2", model_dir)
    recipe_dir = tmp_path / "recipes"
    recipe_dir.mkdir()
    absolute = resolve_model(str(model_dir), Path("/nonexistent"))
    relative = resolve_model("../models/tiny", recipe_dir)
    assert absolute == relative
    assert (absolute.source, absolute.path, absolute.published_params) == ("local", model_dir.resolve(), None)
    assert absolute.architecture.family == "qwen2"
    assert resolve_model("../models/tiny/config.json", recipe_dir) == absolute


def test_local_dir_without_config_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound) as err:
        resolve_model("empty", tmp_path)
    assert "no config.json" in err.value.message and str(tmp_path / "empty") in err.value.message


def test_local_dir_with_invalid_json(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFound) as err:
        resolve_model("bad", tmp_path)
    assert "config.json" in err.value.message and "JSON" in err.value.message


def test_local_config_of_unsupported_family_names_the_file(tmp_path):
    (tmp_path / "t5").mkdir()
    (tmp_path / "t5" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(UnsupportedArchitecture) as err:
        resolve_model("t5", tmp_path)
    assert str(tmp_path / "t5" / "config.json") in err.value.message


@pytest.mark.parametrize(
    "base,best",
    [
        ("meta-llama/Llama-3-8B-Instruct", "meta-llama/Meta-Llama-3-8B-Instruct"),
        ("qwen2.5-7b-instrct", "Qwen/Qwen2.5-7B-Instruct"),
        ("gemma-2-9b-instruct", "google/gemma-2-9b-it"),
        ("mistral-7b", "mistralai/Mistral-7B-v0.1"),
    ],
)
def test_unknown_name_suggests_close_catalog_names(tmp_path, base, best):
    with pytest.raises(ModelNotFound) as err:
        resolve_model(base, tmp_path)
    message = err.value.message
    assert f"'{base}'" in message and f"did you mean '{best}'" in message
    assert "config.json" in message and "directory" in message


def test_unknown_name_without_close_match(tmp_path):
    with pytest.raises(ModelNotFound) as err:
        resolve_model("zzzz-nothing-like-it", tmp_path)
    assert "did you mean" not in err.value.message

