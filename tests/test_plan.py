"""`recipe plan`: method, GPU, micro batch and checkpointing choices, budget, outputs and lock files."""

import json
import shutil
from pathlib import Path

import pytest

from recipe_ft.compiler import lock
from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.schemas.errors import RecipeError
from recipe_ft.schemas.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").iterdir() if p.suffix in (".yaml", ".toml"))
CONFIGS = Path(__file__).parent / "data" / "configs"
GIB = 2**30


def write(tmp_path, text, name="r.yaml"):
    (tmp_path / "train.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]}\n')
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def recipe(base="meta-llama/Meta-Llama-3-8B-Instruct", method="auto", budget="", training="", extra=""):
    return (f"task: chat\nmodel:\n  base: {base}\ndata:\n  train: train.jsonl\n  examples: 10000\n"
            f"  tokens_per_example: 400\nmethod:\n  name: {method}\n{extra}training:\n  max_seq_len: 1024\n"
            f"  batch_size: 16\n{training}budget:\n{budget or '  max_gpus: 1'}\n")


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_example_plans(path):
    compiled = compile_file(str(path))
    plan = compiled.plan
    assert compiled.exit_code == 0 and plan.fits
    assert plan.memory.required_bytes <= plan.memory.capacity_bytes
    assert plan.memory.allocated_peak_bytes < plan.memory.required_bytes
    t = plan.training
    assert t.micro_batch_size * t.gradient_accumulation_steps * plan.hardware.count >= plan.recipe.training.batch_size
    assert plan.time.hours > 0 and plan.cost.usd is not None and plan.cost.usd > 0
    assert {d.what for d in plan.decisions} >= {"method", "gpu", "micro_batch_size", "gradient_checkpointing"}


def test_json_has_the_documented_fields(cli):
    code, out, _ = cli("plan", "--format", "json", ROOT / "recipes" / "support-triage-llama3-8b.yaml")
    assert code == 0
    data = json.loads(out)
    for key in ("method", "hardware", "fits", "memory", "training", "time", "cost", "decisions"):
        assert key in data
    assert {"gpu", "count"} <= set(data["hardware"])
    assert {"allocated_peak_bytes", "required_bytes", "capacity_bytes", "components"} <= set(data["memory"])
    assert {"micro_batch_size", "gradient_accumulation_steps", "gradient_checkpointing"} <= set(data["training"])
    assert "hours" in data["time"] and "usd" in data["cost"]
    comps = data["memory"]["components"]
    assert {"weights", "activations", "optimizer_states", "cuda_context", "logits_and_loss"} <= set(comps)


def test_auto_takes_lora_when_it_fits_with_margin(tmp_path):
    plan = compile_file(write(tmp_path, recipe(budget="  gpu: A100-80GB"))).plan
    assert plan.method == "lora"
    assert "LoRA fits A100-80GB with margin" in plan.decisions[0].reason


def test_auto_falls_back_to_qlora_on_a_small_card(tmp_path):
    plan = compile_file(write(tmp_path, recipe(base="Qwen/Qwen2.5-14B-Instruct", budget="  gpu: L4\n  max_gpus: 1"))).plan
    assert plan.method == "qlora" and plan.fits
    assert "QLoRA's 4-bit base fits" in plan.decisions[0].reason


def test_pinned_method_and_gpu_are_honoured(tmp_path):
    plan = compile_file(write(tmp_path, recipe(method="dora", budget="  gpu: H100-80GB\n  gpu_count: 2\n  max_gpus: 2"))).plan
    assert plan.method == "dora" and plan.hardware.gpu == "H100-80GB" and plan.hardware.count == 2
    assert plan.adapter.use_dora


def test_cheapest_gpu_is_chosen(tmp_path):
    plan = compile_file(write(tmp_path, recipe(method="qlora", budget="  gpus: [A100-80GB, L4, H100-80GB]\n  max_gpus: 1"))).plan
    options = [a for a in plan.alternatives if a.fits and a.within_budget]
    assert plan.cost.usd == min(a.usd for a in options)


def test_checkpointing_turns_on_only_when_needed(tmp_path):
    roomy = compile_file(write(tmp_path, recipe(method="qlora", budget="  gpu: H100-80GB"))).plan
    assert roomy.training.gradient_checkpointing is False
    tight = compile_file(write(tmp_path, recipe(
        method="lora", budget="  gpu: A100-80GB", training="  micro_batch_size: 8\n",
    ).replace("max_seq_len: 1024", "max_seq_len: 4096"))).plan
    assert tight.training.gradient_checkpointing is True


def test_nothing_fits_exits_3_and_says_what_would(tmp_path, cli):
    path = write(tmp_path, recipe(base="meta-llama/Llama-3.3-70B-Instruct", method="lora", budget="  gpu: L4"))
    compiled = compile_file(path)
    assert compiled.exit_code == 3 and not compiled.plan.fits
    text = " ".join(compiled.suggestions)
    assert "QLORA" in text or "fits on" in text
    code, out, _ = cli("plan", path, "-o", tmp_path / "plan.json")
    assert code == 3 and "nothing fits" in out.lower()
    assert not (tmp_path / "plan.json").exists()


def test_budget_too_small_names_the_knob(tmp_path):
    compiled = compile_file(write(tmp_path, recipe(method="qlora", budget="  gpu: A100-80GB\n  max_cost_usd: 0.01")))
    assert compiled.exit_code == 3
    assert "max_cost_usd" in compiled.suggestions[0]


def test_a_plan_that_does_not_fit_says_so_in_its_reasons(tmp_path, cli):
    """The closest option is shown, but no reason claims that it fits; its time is not estimated."""
    path = write(tmp_path, recipe(base="meta-llama/Llama-3.3-70B-Instruct", method="lora",
                                  budget="  gpus: [L4]\n  max_gpus: 1"))
    compiled = compile_file(path)
    assert compiled.exit_code == 3
    reasons = {d.what: d.reason for d in compiled.plan.decisions}
    assert reasons["gpu"].startswith("nothing fits; the closest option") and "GiB more" in reasons["gpu"]
    assert reasons["gpu_count"] == "budget.max_gpus is 1"  # the constraint, not "the cheapest option"
    for what in ("micro_batch_size", "gradient_checkpointing"):
        assert reasons[what].startswith("nothing fits"), reasons[what]
    assert compiled.plan.time.assumptions[0] == "time not estimated: no step of this plan runs on the L4"
    code, out, _ = cli("plan", path)
    assert code == 3 and "fits      NO: needs" in out


def test_a_plan_over_budget_names_the_budget_not_memory(tmp_path, cli):
    path = write(tmp_path, recipe(method="qlora", budget="  gpus: [A100-80GB]\n  max_cost_usd: 0.01"))
    compiled = compile_file(path)
    assert compiled.exit_code == 3 and compiled.plan.memory.required_bytes <= compiled.plan.memory.capacity_bytes
    gpu_reason = next(d.reason for d in compiled.plan.decisions if d.what == "gpu")
    assert gpu_reason.startswith("nothing fits within the budget") and "> max_cost_usd 0.01" in gpu_reason
    code, out, _ = cli("plan", path)
    fits_line = next(line for line in out.splitlines() if line.startswith("fits"))
    assert code == 3 and fits_line.split()[1:3] == ["over", "budget:"] and "> max_cost_usd" in fits_line


def test_a_plan_whose_gpu_lacks_the_stack_says_why_not_zero_time(tmp_path, cli):
    """QLoRA on an MI300X only: memory fits, bitsandbytes does not run there; no '0 min at 0 tokens/s'."""
    path = write(tmp_path, recipe(method="qlora", budget="  gpus: [MI300X]\n  max_gpus: 1"))
    compiled = compile_file(path)
    assert compiled.exit_code == 3 and compiled.plan.memory.required_bytes <= compiled.plan.memory.capacity_bytes
    reasons = {d.what: d.reason for d in compiled.plan.decisions}
    assert reasons["gpu"].startswith("nothing fits; the closest option") and "MI300X" in reasons["gpu"]
    assert reasons["micro_batch_size"].startswith("largest power of two that fits")  # it does fit memory
    code, out, _ = cli("plan", path)
    rows = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert code == 3 and rows["fits"].startswith("fits      NO: needs") and "bitsandbytes 4-bit" in rows["fits"]
    assert rows["time"].startswith("time      not estimated: bitsandbytes") and "0 tokens/s" not in out


def test_a_plan_without_data_or_declared_sizes_says_it_assumed_them(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("task: chat\nmodel:\n  base: meta-llama/Meta-Llama-3-8B-Instruct\ndata:\n  train: missing.jsonl\n")
    with pytest.raises(RecipeError) as info:  # validation refuses it: nothing says how much to plan
        compile_file(str(path))
    assert "data.train: file not found: missing.jsonl" in str(info.value.problems[0])
    from recipe_ft.compiler.planner import compile_plan  # the planner alone, unvalidated, still says so
    from recipe_ft.schemas.recipe import Recipe

    unchecked = Recipe.model_validate({"task": "chat", "model": {"base": "meta-llama/Meta-Llama-3-8B-Instruct"},
                                       "data": {"train": "missing.jsonl"}})
    plan = compile_plan(unchecked, path).plan
    assert plan.data.examples == 0 and plan.data.counted_with == "assumed"  # not "declared": nothing was
    reason = next(d.reason for d in plan.decisions if d.what == "data")
    assert reason.startswith("not measured") and "declared in the recipe" not in reason
    assert any(w.startswith("no training examples") for w in plan.warnings)
    path.write_text(path.read_text() + "  examples: 100\n  tokens_per_example: 50\n")
    plan = compile_file(str(path)).plan
    assert plan.data.counted_with == "declared" and not any("no training examples" in w for w in plan.warnings)


def test_max_seq_len_suggestion(tmp_path):
    text = recipe(base="meta-llama/Meta-Llama-3-8B-Instruct", method="qlora", budget="  gpu: T4",
                  training="  micro_batch_size: 1\n  gradient_checkpointing: true\n  precision: fp16\n")
    text = text.replace("max_seq_len: 1024", "max_seq_len: 131072")
    compiled = compile_file(write(tmp_path, text))
    assert compiled.exit_code == 3
    assert any(s.startswith("max_seq_len ") for s in compiled.suggestions), compiled.suggestions


def test_local_config_directory(tmp_path):
    shutil.copytree(CONFIGS / "qwen2", tmp_path / "my-model")
    plan = compile_file(write(tmp_path, recipe(base="my-model", budget="  gpu: L4"))).plan
    assert plan.model.source == "local" and plan.model.family == "qwen2"


def test_unknown_model_is_a_located_error(tmp_path, cli):
    path = write(tmp_path, recipe(base="meta-llama/Llama-3-8B-Instruct"))
    code, out, err = cli("plan", path)
    assert code == 1
    assert f"{path}:3:9: model.base:" in err and "did you mean 'meta-llama/Meta-Llama-3-8B-Instruct'" in err
    assert "Traceback" not in out + err
    code, _, err = cli("plan", write(tmp_path, recipe(base="tiiuae/falcon-7b")))  # no close name: the sentence ends
    assert code == 1 and "(relative to the recipe file). For another model, set model.base" in err


def test_unknown_target_module_is_a_located_error(tmp_path, cli):
    path = write(tmp_path, recipe(method="lora", extra="  targets: [q_proj, vv_proj]\n"))
    code, _, err = cli("plan", path)
    assert code == 1 and "method.targets" in err and "did you mean 'v_proj'" in err


def test_markdown_output(cli):
    code, out, _ = cli("plan", "--format", "markdown", ROOT / "recipes" / "support-triage-llama3-8b.yaml")
    assert code == 0 and out.startswith("### Plan: `support-triage`")
    assert "| GPU | n | strategy | method |" in out and "**Decisions**" in out


def test_lock_file_round_trips_and_goes_stale(tmp_path, cli):
    path = write(tmp_path, recipe(method="qlora", budget="  gpu: L4"))
    out_file = tmp_path / "plans" / "plan.json"
    code, _, err = cli("plan", path, "-o", out_file, "--format", "json")
    assert code == 0 and f"wrote {out_file}" in err
    plan = lock.read(out_file)
    assert isinstance(plan, Plan) and plan.schema_version.startswith("1.")
    assert plan.lock.recipe_sha256 and plan.lock.data_sha256["train.jsonl"]
    assert set(plan.lock.catalogs) >= {"models.json", "gpus.csv"}
    assert lock.staleness(plan) == []
    (tmp_path / "train.jsonl").write_text('{"messages": []}\n')
    assert any("data file train.jsonl changed" in r for r in lock.staleness(plan))
    Path(path).write_text(Path(path).read_text() + "\n# edited\n")
    assert any("recipe" in r for r in lock.staleness(plan))


def test_lock_file_errors(tmp_path):
    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    with pytest.raises(RecipeError, match="not a plan file"):
        lock.read(bad)
    bad.write_text(json.dumps({"schema_version": "9.0"}))
    with pytest.raises(RecipeError, match="schema version 9.0"):
        lock.read(bad)


def test_overrides_apply_to_plan(tmp_path):
    path = write(tmp_path, recipe(method="qlora", budget="  gpu: L4"))
    plan = compile_file(path, ["method.rank=64", "training.max_seq_len=512"]).plan
    assert plan.adapter.rank == 64 and plan.training.max_seq_len == 512
    assert plan.lock.overrides == ["method.rank=64", "training.max_seq_len=512"]


def test_data_counted_from_file_with_heuristic(tmp_path):
    text = recipe(method="qlora", budget="  gpu: L4").replace("  examples: 10000\n  tokens_per_example: 400\n", "")
    plan = compile_file(write(tmp_path, text)).plan
    assert plan.data.examples == 1 and plan.data.counted_with == "heuristic"
    # "hello there" + "hi" = 14 characters -> 4 tokens, 2 messages x 5 + 8 overhead
    assert plan.data.tokens_per_example == 4 + 2 * 5 + 8


def test_data_counted_with_a_local_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    shutil.copytree(CONFIGS / "llama", tmp_path / "m")
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "there": 2, "hi": 3}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "m" / "tokenizer.json"))
    text = recipe(base="m", method="lora", budget="  gpu: L4").replace(
        "  examples: 10000\n  tokens_per_example: 400\n", "")
    plan = compile_file(write(tmp_path, text)).plan
    assert plan.data.counted_with == "tokenizer"
    assert plan.data.tokens_per_example == 3 + 2 * 5 + 8  # hello, there, hi


def test_custom_gpu_and_price_override(tmp_path):
    budget = ("  gpus: [my-4090, L4]\n  custom_gpus:\n    - {name: my-4090, memory_gb: 24, bf16_tflops: 165, "
              "usd_per_hour: 0.1}\n  prices: {L4: 5.0}\n  max_gpus: 1")
    plan = compile_file(write(tmp_path, recipe(method="qlora", budget=budget))).plan
    assert plan.hardware.gpu == "my-4090" and plan.hardware.usd_per_gpu_hour == 0.1
    l4 = next(a for a in plan.alternatives if a.gpu == "L4")
    assert l4.usd is not None and plan.cost.usd < l4.usd


def test_70b_qlora_example_fits_one_80gb_card():
    plan = compile_file(str(ROOT / "recipes" / "legal-summaries-llama3.3-70b-qlora.yaml")).plan
    assert plan.method == "qlora" and plan.hardware.count == 1 and plan.fits
    assert 35 * GIB < plan.memory.components["weights"] < 45 * GIB


def test_parameter_counts_in_plan_match_published():
    plan = compile_file(str(ROOT / "recipes" / "support-triage-llama3-8b.yaml")).plan
    assert abs(plan.model.parameters - plan.model.published_parameters) / plan.model.published_parameters < 0.005


def test_trace_flag_measures_the_planned_step(tmp_path, cli):
    pytest.importorskip("peft")
    shutil.copytree(CONFIGS / "llama", tmp_path / "tiny")
    text = recipe(base="tiny", method="lora", budget="  gpu: L4").replace("max_seq_len: 1024", "max_seq_len: 256")
    code, out, _ = cli("plan", write(tmp_path, text), "--trace", "--format", "json")
    assert code == 0
    data = json.loads(out)
    traced = data["trace"]
    assert traced["peak_bytes"] > 0 and traced["trainable_params"] == data["model"]["trainable_parameters"]
    assert abs(traced["error"]) < 0.25  # tiny models are dominated by fixed-size buffers; see test_memory_vs_trace


def test_70b_lora_bf16_example_shards_across_gpus():
    plan = compile_file(str(ROOT / "recipes" / "long-docs-llama3.1-70b-lora.yaml")).plan
    assert plan.fits and plan.method == "lora" and plan.hardware.count > 1
    assert plan.distributed.strategy in ("fsdp", "deepspeed") and plan.distributed.processes == plan.hardware.count
    single = [a for a in plan.alternatives if a.count == 1]
    assert single and not any(a.fits for a in single)
    assert any(d.what == "strategy" for d in plan.decisions)


def test_sharding_arithmetic():
    from recipe_ft.compiler import memory
    from recipe_ft.compiler.models import resolve_model

    arch = resolve_model("meta-llama/Llama-3.1-70B-Instruct", ROOT).architecture
    base = memory.StepShape(method="lora", seq_len=1024, gradient_checkpointing=True)
    one = memory.estimate(arch, base).components
    fsdp = memory.estimate(arch, __import__("dataclasses").replace(base, processes=4, strategy="fsdp")).components
    ddp = memory.estimate(arch, __import__("dataclasses").replace(base, processes=4, strategy="ddp")).components
    zero2 = memory.estimate(arch, __import__("dataclasses").replace(base, processes=4, strategy="deepspeed",
                                                                     zero_stage=2)).components
    offload = memory.estimate(arch, __import__("dataclasses").replace(base, processes=4, strategy="deepspeed",
                                                                       zero_stage=3, cpu_offload=True)).components
    assert fsdp["weights"] == one["weights"] // 4 and fsdp["optimizer_states"] == one["optimizer_states"] // 4
    assert fsdp["gradients"] == one["gradients"] // 4 and fsdp["activations"] == one["activations"]
    assert ddp["weights"] == one["weights"] and ddp["communication_buffers"] >= one["gradients"]
    assert zero2["weights"] == one["weights"] and zero2["optimizer_states"] == one["optimizer_states"] // 4
    assert offload["optimizer_states"] == 0 and offload["weights"] == 0 and offload["offloaded_to_cpu"] > 0
    assert one["communication_buffers"] == 0


def test_multi_node_when_one_machine_is_not_enough(tmp_path):
    text = recipe(base="meta-llama/Llama-3.1-70B-Instruct", method="lora",
                  budget="  gpu: H100-80GB\n  gpu_count: 16\n  max_gpus: 16\n  nodes: 2\n  gpus_per_node: 8",
                  training="  gradient_checkpointing: true\n")
    plan = compile_file(write(tmp_path, text)).plan
    assert plan.distributed.nodes == 2 and plan.distributed.gpus_per_node == 8 and plan.distributed.processes == 16
    assert plan.time.scaling_efficiency < 0.9


def test_training_cost_counts_every_gpu(tmp_path):
    """Two GPUs at $2.00 each for H hours cost 2 x 2.00 x H, and the price per hour is $4.00."""
    budget = "  gpu: H100-80GB\n  gpu_count: {n}\n  max_gpus: 2\n  prices:\n    H100-80GB: 2.0"
    one = compile_file(write(tmp_path, recipe(method="lora", budget=budget.format(n=1)))).plan
    two = compile_file(write(tmp_path, recipe(method="lora", budget=budget.format(n=2)))).plan
    assert (one.hardware.count, two.hardware.count) == (1, 2)
    assert one.cost.usd_per_hour == pytest.approx(2.0) and two.cost.usd_per_hour == pytest.approx(4.0)
    assert one.cost.usd == pytest.approx(2.0 * one.time.hours, abs=0.01), "training cost of one GPU"
    assert two.cost.usd == pytest.approx(2 * 2.0 * two.time.hours, abs=0.01), \
        "training cost must count both GPUs (GPU-hours x price), not one"
    assert two.time.hours < one.time.hours < 2 * two.time.hours  # two GPUs: faster, but not free


def test_output_path_mistakes_are_clean_errors_and_nothing_is_overwritten(tmp_path, cli):
    """-o onto a directory, under a file, onto the recipe or its data, or without .json: exit 2, no
    traceback, the file the user made untouched, no plan printed first."""
    path = write(tmp_path, recipe(method="qlora", budget="  gpu: L4"))
    (tmp_path / "adir").mkdir()
    recipe_text, data_text = Path(path).read_text(), (tmp_path / "train.jsonl").read_text()
    cases = {tmp_path / "adir": "is a directory", tmp_path / "r.yaml" / "plan.json": "is not a directory",
             tmp_path / "r.yaml": "end in .json", tmp_path / "train.jsonl": "end in .json"}
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}\n')
    cases[notes] = "not a plan file"
    for target, words in cases.items():
        code, out, err = cli("plan", path, "-o", target)
        assert code == 2 and words in err and "Traceback" not in out + err, (target, out, err)
        assert out == "", target  # refused before the plan is printed
    assert Path(path).read_text() == recipe_text and (tmp_path / "train.jsonl").read_text() == data_text
    assert notes.read_text() == '{"mine": 1}\n' and list((tmp_path / "adir").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "notes.json", "r.yaml", "train.jsonl"]
    plan_file = tmp_path / "plan.json"
    assert cli("plan", path, "-o", plan_file)[0] == 0
    assert cli("plan", path, "-o", plan_file)[0] == 0  # a plan file it wrote is replaced
    assert lock.read(plan_file).name == "r"


def test_no_price_under_a_cost_limit_names_the_price_knobs(tmp_path):
    """Spot prices at a provider that sells none: every option is 'over budget' for want of a price;
    raising max_cost_usd cannot help, so the suggestion must not say it does."""
    text = recipe(method="qlora", budget="  gpu: H100-80GB\n  provider: lambda\n  spot: true\n  max_cost_usd: 100")
    compiled = compile_file(write(tmp_path, text))
    assert compiled.exit_code == 3
    first = compiled.suggestions[0]
    assert "raise budget.max_cost_usd" not in first, first
    assert "no spot price at lambda" in first and "budget.prices" in first and "budget.spot" in first, first


def test_a_pinned_strategy_on_one_gpu_is_said_not_dropped(cli, tmp_path):
    """distributed.strategy: fsdp with budget.max_gpus: 1 planned a single process and said nothing about
    the strategy it dropped; a strategy decision now says it is not used and why."""
    path = write(tmp_path, recipe(method="qlora", extra="distributed:\n  strategy: fsdp\n"))
    code, out, err = cli("plan", "--format", "json", path)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["distributed"]["strategy"] == "single"
    strategy = [d for d in plan["decisions"] if d["what"] == "strategy"]
    assert len(strategy) == 1 and strategy[0]["choice"] == "single"
    assert "distributed.strategy fsdp is not used" in strategy[0]["reason"] and "budget.max_gpus is 1" in strategy[0]["reason"]
    code, out, _ = cli("plan", "--format", "json", write(tmp_path, recipe(method="qlora")))  # auto: no such line
    assert not [d for d in json.loads(out)["decisions"] if d["what"] == "strategy"]


def test_a_rank_above_a_targeted_modules_smaller_dimension_is_warned(cli, tmp_path):
    """Llama-3-8B's k_proj is 4096 x 1024: rank 2048 adds parameters there, not capacity."""
    code, out, err = cli("plan", "--format", "json", write(tmp_path, recipe(method="qlora", extra="")),
                         "--set", "method.rank=2048")
    assert code in (0, 3), err
    warned = [w for w in json.loads(out)["warnings"] if w.startswith("method.rank 2048")]
    assert len(warned) == 1 and "k_proj (4096 x 1024" in warned[0] and "at most 1024" in warned[0]
    code, out, _ = cli("plan", "--format", "json", write(tmp_path, recipe(method="qlora")), "--set", "method.rank=1024")
    assert not [w for w in json.loads(out)["warnings"] if w.startswith("method.rank")]
