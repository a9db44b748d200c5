"""Preference tuning end to end on CPU with the demo's tiny Llama: DPO with LoRA raises held-out
preference accuracy above the base, the adapter loads with PEFT, no second model is built for the
reference with an adapter, starting from an adapter (merged or stacked), errors in pairs."""

import json

import pytest
from demo_copy import fresh_copy

pytest.importorskip("trl")
pytest.importorskip("peft")

from recipe_ft.compiler.pipeline import plan_for_run  # noqa: E402
from recipe_ft.runtime import preference_demo  # noqa: E402


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("pref")
    return preference_demo.make(root / "pref", train_examples=96, eval_examples=32, epochs=3)


@pytest.fixture
def project(tiny, tmp_path):
    return fresh_copy(tiny, tmp_path / "pref")


def run(cli, recipe, *sets):
    args = ["run", recipe]
    for s in ("training.logging_steps=1", *sets):
        args += ["--set", s]
    return cli(*args)


class Constructions:
    """Counts model loads (transformers' from_pretrained and trl's create_model_from_path)."""

    def __init__(self, monkeypatch):
        import trl.trainer.dpo_trainer as dpo_module
        from transformers import AutoModelForCausalLM

        self.loads = []
        original = AutoModelForCausalLM.from_pretrained.__func__
        created = dpo_module.create_model_from_path

        def from_pretrained(cls, *args, **kwargs):
            self.loads.append(("from_pretrained", args[0] if args else kwargs.get("pretrained_model_name_or_path")))
            return original(cls, *args, **kwargs)

        def create(*args, **kwargs):
            self.loads.append(("create_model_from_path", args[0] if args else None))
            return created(*args, **kwargs)

        monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(from_pretrained))
        monkeypatch.setattr(dpo_module, "create_model_from_path", create)


def prepared(recipe, *sets):
    from recipe_ft.runtime.train import prepare

    plan, plan_dir = plan_for_run(str(recipe), list(sets), False)
    return plan, prepare(plan, plan_dir, log=lambda *a: None)


def test_dpo_lora_raises_preference_accuracy_above_the_base(cli, project):
    code, out, err = run(cli, project, "eval.min_score=0.99")
    run_dir = project.parent / "runs" / "preference"
    report = json.loads((run_dir / "run_report.json").read_text())
    ev = report["evaluation"]
    base, tuned = ev["baseline"], ev["tuned"]
    assert base["metric"] == tuned["metric"] == "preference_accuracy"
    assert tuned["score"] > base["score"], (base["score"], tuned["score"])
    assert tuned["details"]["mean_reward_margin"] > 0 and base["details"]["mean_reward_margin"] == 0
    assert tuned["details"]["mean_logp_margin"] > base["details"]["mean_logp_margin"]
    assert code == (0 if tuned["score"] >= 0.99 else 4), out + err  # the gate: eval.min_score
    assert "preference_accuracy: base" in out and "mean reward margin" in out
    assert "| mean reward margin |" in (run_dir / "run_report.md").read_text()

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(project.parent / "tiny-llama")),
                                      str(run_dir / "adapter"))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())


def test_with_an_adapter_no_second_model_is_built_for_the_reference(project, monkeypatch):
    counted = Constructions(monkeypatch)
    plan, session = prepared(project, "training.max_steps=1")
    assert plan.preference.reference == "adapter_disabled"
    assert session.trainer.ref_model is None
    assert len(counted.loads) == 1, counted.loads  # the policy only

    counted.loads.clear()  # the check can fail: full fine-tuning without precompute loads a second model
    plan, session = prepared(project, "method.name=full", "training.precompute_ref_log_probs=false",
                             "training.max_steps=1")
    assert plan.preference.reference == "second_model"
    assert session.trainer.ref_model is not None
    assert [kind for kind, _ in counted.loads] == ["from_pretrained", "create_model_from_path"]


@pytest.mark.parametrize("precision", ["fp32", "bf16-pure"])
def test_the_planned_reference_weights_are_what_trl_holds(project, precision):
    """trl builds the second model in the policy's dtype: bf16 under bf16-pure, where the plan counted
    fp32 (twice the bytes)."""
    plan, session = prepared(project, "method.name=full", "training.precompute_ref_log_probs=false",
                             f"training.precision={precision}", "training.max_steps=1")
    ref = session.trainer.ref_model
    held = sum(p.numel() * p.element_size() for p in ref.parameters())
    assert plan.memory.components["reference_weights"] == held, (precision, plan.memory.components, held)


def test_full_fine_tuning_precomputes_the_reference(project, monkeypatch):
    counted = Constructions(monkeypatch)
    plan, session = prepared(project, "method.name=full", "training.max_steps=1")
    assert plan.preference.precompute_ref_log_probs and session.trainer.args.precompute_ref_log_probs
    assert session.trainer.ref_model is None and len(counted.loads) == 1
    assert "ref_chosen_logps" in session.trainer.train_dataset.column_names


def _sft_adapter(project):
    """A LoRA adapter for the tiny model with non-zero weights (as if trained by SFT)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(project.parent / "tiny-llama"))
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    out = project.parent / "sft-adapter"
    model.save_pretrained(str(out))
    return out


def test_start_from_an_sft_adapter_merged_or_stacked(project):
    import torch
    from transformers import AutoModelForCausalLM

    _sft_adapter(project)
    base = AutoModelForCausalLM.from_pretrained(str(project.parent / "tiny-llama"))
    q = dict(base.named_parameters())["model.layers.0.self_attn.q_proj.weight"]

    _, merged = prepared(project, "model.adapter=sft-adapter", "training.max_steps=1")
    model = merged.trainer.model
    assert list(model.peft_config) == ["default"]  # a new adapter, on the merged weights
    merged_q = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.allclose(merged_q, q)
    assert merged.trainer.ref_model is None

    _, stacked = prepared(project, "model.adapter=sft-adapter", "model.adapter_mode=stack", "training.max_steps=1")
    model = stacked.trainer.model
    assert set(model.peft_config) == {"default", "ref"}  # trained further; a frozen copy is the reference
    assert model.peft_config["default"].r == 4
    assert torch.allclose(model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight, q)
    assert stacked.trainer.ref_model is None


def test_full_fine_tuning_from_a_merged_adapter_keeps_it_in_the_reference(project):
    """Without precomputing, trl built the reference from the base's path: the model before the SFT
    adapter, so DPO pulled the policy towards the pre-SFT model instead of the one it starts from."""
    import torch

    _sft_adapter(project)
    _, session = prepared(project, "model.adapter=sft-adapter", "method.name=full",
                          "training.precompute_ref_log_probs=false", "training.max_steps=1")
    policy, ref = session.trainer.model, session.trainer.ref_model
    name = "model.layers.0.self_attn.q_proj.weight"
    assert ref is not None and ref is not policy
    assert torch.equal(dict(ref.named_parameters())[name], dict(policy.named_parameters())[name])
    assert not any(p.requires_grad for p in ref.parameters())


def test_qlora_starts_from_an_adapter_merged_in_full_precision(project):
    pytest.importorskip("bitsandbytes")
    _sft_adapter(project)
    _, session = prepared(project, "model.adapter=sft-adapter", "method.name=qlora", "training.max_steps=1")
    merged = project.parent / "runs" / "preference" / "base-merged"
    assert (merged / "config.json").is_file()  # merged unquantized, then loaded in 4-bit from here
    assert getattr(session.trainer.model.get_base_model(), "is_loaded_in_4bit", False)
    assert session.trainer.ref_model is None


def _kto_data(project):
    for name in ("train", "eval"):
        rows = [json.loads(line) for line in (project.parent / "data" / f"{name}.jsonl").read_text().splitlines()]
        with (project.parent / "data" / f"{name}_kto.jsonl").open("w") as f:
            for r in rows:
                f.write(json.dumps({"prompt": r["prompt"], "completion": r["chosen"], "label": True}) + "\n")
                f.write(json.dumps({"prompt": r["prompt"], "completion": r["rejected"], "label": False}) + "\n")


@pytest.mark.parametrize("objective", ["kto", "orpo"])
def test_kto_and_orpo_train(cli, project, objective):
    sets = [f"training.objective={objective}", "training.max_steps=1", "data.eval=null"]
    if objective == "kto":
        _kto_data(project)
        sets += ["data.format=kto", "data.train=data/train_kto.jsonl"]
    code, out, err = run(cli, project, *sets)
    assert code == 0, out + err
    assert (project.parent / "runs" / "preference" / "adapter" / "adapter_config.json").is_file()
    plan = json.loads((project.parent / "runs" / "preference" / "plan.json").read_text())
    assert plan["preference"]["objective"] == objective
    report = json.loads((project.parent / "runs" / "preference" / "run_report.json").read_text())
    assert report["measured"]["tokens"] > 0 and report["measured"]["tokens_per_second"] > 0  # counted, not 0
    examples = report["planned_vs_measured"]["examples"]
    assert examples["planned"] == examples["measured"] == report["data"]["train_examples"], examples


def test_kto_held_out_rows_are_paired_by_prompt():
    from recipe_ft.runtime.preference_eval import pairs_of

    rows = [{"prompt": "a", "completion": "good", "label": True}, {"prompt": "a", "completion": "bad", "label": False},
            {"prompt": "a", "completion": "worse", "label": False}, {"prompt": "b", "completion": "x", "label": True}]
    assert pairs_of(rows) == [("a", "good", "bad"), ("a", "good", "worse")]


def test_label_smoothing_reaches_trl(project, tmp_path):
    from trl import SFTConfig

    from recipe_ft.runtime.preference import config

    plan, _ = plan_for_run(str(project), ["training.loss_type=exo_pair", "training.label_smoothing=0.001"], False)
    args = config(plan, SFTConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, bf16=False), "dpo")
    assert args.loss_type == ["exo_pair"] and args.label_smoothing == 0.001


def test_full_fine_tuning_reports_the_reward_margin_against_the_base(project):
    """Full fine-tuning's reference is the base, scored on the same pairs before training: the run
    report had no reward margin at all for it (only adapters, disabled, gave one)."""
    from recipe_ft.runtime.preference_eval import against_base

    plan, _ = plan_for_run(str(project), ["method.name=full", "training.beta=0.5"], False)
    base = {"details": {"total": 4, "mean_logp_margin": 2.0, "mean_reward_margin": None}}
    tuned = {"details": {"total": 4, "mean_logp_margin": 5.0, "mean_reward_margin": None}}
    against_base(plan, base, tuned)
    assert tuned["details"]["mean_reward_margin"] == pytest.approx(1.5) and base["details"]["mean_reward_margin"] == 0
    plan, _ = plan_for_run(str(project), ["method.name=full", "training.objective=orpo"], False)
    tuned["details"]["mean_reward_margin"] = None
    against_base(plan, base, tuned)  # ORPO has no reference: no reward to report
    assert tuned["details"]["mean_reward_margin"] is None


def test_kto_held_out_data_without_pairs_is_said_before_training(cli, project):
    """KTO data usually holds one completion per prompt: held-out scoring pairs them by prompt, found
    none, and the run trained to the end, then failed its gate with 'no held-out examples to score'."""
    _kto_data(project)
    rows = [json.loads(line) for line in (project.parent / "data" / "eval_kto.jsonl").read_text().splitlines()]
    (project.parent / "data" / "eval_unpaired.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::2]))
    sets = ["training.objective=kto", "data.format=kto", "data.train=data/train_kto.jsonl",
            "data.eval=data/eval_unpaired.jsonl", "training.max_steps=1"]
    code, out, err = run(cli, project, *sets, "eval.min_score=0.8")
    assert code == 1, out + err
    assert "data.eval: none of the 32 held-out KTO records' prompts has both" in err and "Traceback" not in err
    assert "scoring the base model" not in out + err
    assert not (project.parent / "runs" / "preference").exists()
    code, out, err = run(cli, project, *sets)
    assert code == 0, out + err
    assert "held-out scoring is skipped" in out + err


def test_orpo_reports_no_reward_against_a_reference_it_does_not_have(project):
    """ORPO's plan says 'reference: none', but the run reported a 'mean reward margin vs the reference'
    (the adapter disabled, scaled by ORPO's odds-ratio weight)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipe_ft.runtime.preference_eval import evaluate_pairs

    path = str(project.parent / "tiny-llama")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path), LoraConfig(r=2, target_modules=["q_proj"]))
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = [json.loads(line) for line in (project.parent / "data" / "eval.jsonl").read_text().splitlines()[:2]]
    for objective, has_reward in (("dpo", True), ("orpo", False)):
        plan, _ = plan_for_run(str(project), [f"training.objective={objective}"], False)
        details = evaluate_pairs(plan, model, tokenizer, rows)["details"]
        assert (details["mean_reward_margin"] is not None) is has_reward, (objective, details)


def test_pairs_whose_replies_are_truncated_away_are_not_scored(project):
    """trl drops pairs whose prompt fills max_seq_len; held-out scoring compared two empty replies
    (margin 0) and counted the pair as rejected-preferred, lowering base and tuned accuracy alike."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recipe_ft.runtime.preference_eval import evaluate_pairs

    path = str(project.parent / "tiny-llama")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    rows = [json.loads(line) for line in (project.parent / "data" / "eval.jsonl").read_text().splitlines()[:2]]
    long = {**rows[0], "prompt": [{"role": "user", "content": " ".join(["order blank page"] * 200)}]}
    plan, _ = plan_for_run(str(project), [], False)
    details = evaluate_pairs(plan, model, tokenizer, rows + [long])["details"]
    assert details["total"] == 2 and details["skipped_truncated"] == 1, details


def test_kto_data_of_one_label_is_refused_before_the_model_loads(cli, project, monkeypatch):
    counted = Constructions(monkeypatch)
    _kto_data(project)
    rows = (project.parent / "data" / "train_kto.jsonl").read_text().splitlines()
    (project.parent / "data" / "good_only.jsonl").write_text("".join(r + "\n" for r in rows if '"label": true' in r))
    code, out, err = run(cli, project, "training.objective=kto", "data.format=kto", "data.train=data/good_only.jsonl",
                         "data.eval=null", "training.max_steps=1")
    assert code == 1 and "every record is desirable (label true); KTO needs both kinds" in err, out + err
    assert counted.loads == [] and "Traceback" not in err  # refused before loading the model
    assert not (project.parent / "runs" / "preference").exists()


def test_sources_mixing_plain_and_conversational_pairs_are_refused():
    from recipe_ft.runtime.preference import one_form
    from recipe_ft.schemas.errors import RecipeError

    chat = {"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"}
    one_form([chat, chat], "train")
    with pytest.raises(RecipeError) as exc:
        one_form([chat, {"prompt": "hi", "chosen": "a", "rejected": "b"}], "train")
    assert exc.value.message.startswith("data.train: its sources mix plain"), exc.value.message


def test_missing_or_foreign_adapter_is_a_clear_error(cli, project):
    code, out, err = run(cli, project, "model.adapter=nowhere")
    assert code == 1 and "model.adapter: no PEFT adapter at nowhere" in err and "Traceback" not in err


def test_malformed_pairs_stop_the_run_with_their_lines(cli, project):
    train = project.parent / "data" / "train.jsonl"
    lines = train.read_text().splitlines()
    row = json.loads(lines[2])
    row["rejected"] = row["chosen"]
    lines[2] = json.dumps(row)
    train.write_text("\n".join(lines) + "\n")
    code, out, err = run(cli, project)
    assert code == 1
    assert "data/train.jsonl:3: 'chosen' and 'rejected' are identical" in out + err  # located, before loading
    assert "Traceback" not in out + err
    assert not (project.parent / "runs" / "preference" / "adapter").exists()


def test_qlora_dpo_trains(cli, project):
    pytest.importorskip("bitsandbytes")
    code, out, err = run(cli, project, "method.name=qlora", "training.max_steps=2", "data.eval=null")
    assert code == 0, out + err
    adapter = project.parent / "runs" / "preference" / "adapter"
    assert (adapter / "adapter_config.json").is_file()


@pytest.mark.parametrize("method", ["dora", "qdora"])
def test_dora_dpo_trains_with_dora_adapters(cli, project, method):
    """DoRA and QDoRA under DPO: the adapter carries DoRA magnitudes, and no second model is loaded."""
    pytest.importorskip("bitsandbytes")
    code, out, err = run(cli, project, f"method.name={method}", "training.max_steps=2", "data.eval=null")
    assert code == 0, out + err
    adapter = project.parent / "runs" / "preference" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["use_dora"] is True
    from safetensors import safe_open

    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        assert any("lora_magnitude_vector" in k for k in f.keys())
    report = json.loads((project.parent / "runs" / "preference" / "run_report.json").read_text())
    assert report["measured"]["steps"] == 2


def test_dpo_checkpoints_and_resumes(cli, project):
    sets = ("data.eval=null", "training.save_steps=1")
    code, out, err = run(cli, project, "training.max_steps=2", *sets)
    assert code == 0, out + err
    checkpoints = project.parent / "runs" / "preference" / "checkpoints"
    assert (checkpoints / "checkpoint-2" / "CHECKPOINT_COMPLETE").is_file()
    code, out, err = cli("run", project, "--resume", *[x for s in ("training.max_steps=3", *sets) for x in ("--set", s)])
    assert code == 0, out + err
    report = json.loads((project.parent / "runs" / "preference" / "run_report.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-2") and report["measured"]["steps"] == 3
