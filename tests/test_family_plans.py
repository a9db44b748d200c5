"""One catalog model of each current family validates and plans, for LoRA and QLoRA, from the catalog alone
(no transformers): the plan names the model, counts what the catalog publishes, and says for MoE models
what QLoRA leaves in the compute dtype."""

import json
from pathlib import Path

import pytest

from recipe_ft.compiler.models import catalog_entry

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "support-triage-llama3-8b.yaml"

ONE_PER_FAMILY = [
    "Qwen/Qwen3-8B", "Qwen/Qwen3-30B-A3B", "Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-35B-A3B", "google/gemma-3-4b-it", "openai/gpt-oss-20b",
    "mistralai/Mistral-Small-24B-Instruct-2501", "mistralai/Ministral-8B-Instruct-2410", "microsoft/phi-4",
    "microsoft/Phi-4-mini-instruct", "HuggingFaceTB/SmolLM3-3B", "allenai/OLMo-2-1124-7B",
    "allenai/Olmo-3-1025-7B", "ibm-granite/granite-3.3-8b-instruct",
]

MOE = ("Qwen/Qwen3-30B-A3B", "Qwen/Qwen3.5-35B-A3B", "openai/gpt-oss-20b")


@pytest.mark.parametrize("method", ["lora", "qlora"])
@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_validates_and_plans_from_the_catalog(cli, name, method):
    sets = ["--set", f"model.base={name}", "--set", f"method.name={method}"]
    if method == "lora":
        sets += ["--set", "method.quantization=null"]
    if name in MOE:  # peft's LoRA on fused expert tensors refuses dropout (a located error otherwise)
        sets += ["--set", "method.dropout=0"]
    code, out, err = cli("validate", "-q", RECIPE, *sets)
    assert code == 0, out + err
    code, out, err = cli("plan", "--format", "json", RECIPE, *sets)
    assert code in (0, 3), err  # 3: nothing fits the budget; the plan is still printed
    plan = json.loads(out)
    assert plan["model"]["name"] == name and plan["model"]["source"] == "catalog"
    entry = catalog_entry(name)  # a model card's rounded figure carries its precision; else 0.5%
    tolerance = entry.get("published_params_precision") or 0.005 * entry["published_params"]
    assert abs(plan["model"]["parameters"] - entry["published_params"]) <= tolerance
    assert "note: model_type" not in err  # read from the catalog's descriptor, not derived
    if method == "qlora" and name in MOE:
        assert "stay in the compute dtype" in json.dumps(plan)
