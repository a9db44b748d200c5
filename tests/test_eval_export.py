"""Baseline vs tuned on the quickstart, the quality gate, `recipe eval`, merge and serving files."""

import json
from pathlib import Path

import pytest
from demo_copy import fresh_copy

pytest.importorskip("trl")

from recipe_ft.runtime import demo  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quickstart as `recipe demo` makes it, trained once (about 20 s on two cores)."""
    from recipe_ft.cli import run

    recipe = demo.make(tmp_path_factory.mktemp("eval") / "qs")
    # the gate: above what always answering the held-out set's most common label scores (13 of 40)
    assert run(["run", str(recipe), "--set", "eval.min_score=0.35"]) == 0
    return recipe


def report(recipe):
    return json.loads((recipe.parent / "runs" / "quickstart" / "run_report.json").read_text())


def test_tuned_beats_baseline_and_is_promoted(trained):
    r = report(trained)
    base, tuned = r["evaluation"]["baseline"], r["evaluation"]["tuned"]
    assert base["metric"] == tuned["metric"] == "exact_match"
    assert tuned["score"] > base["score"] + 0.3
    assert r["evaluation"]["tuned_eval_loss"] < r["evaluation"]["baseline_eval_loss"]
    assert r["promoted"] is True and len(tuned["examples"]) == 5
    md = (trained.parent / "runs" / "quickstart" / "run_report.md").read_text()
    assert "| exact_match |" in md and "**Promoted**" in md


def test_gate_fails_below_min_score(trained, tmp_path, cli):
    project = fresh_copy(trained, tmp_path / "qs").parent
    code, out, err = cli("run", project / "recipe.yaml", "--set", "training.max_steps=1", "--set", "eval.min_score=0.99")
    assert code == 4, out + err
    assert "NOT PROMOTED" in out
    r = report(project / "recipe.yaml")
    assert r["promoted"] is False and "below eval.min_score 0.99" in r["evaluation"]["gate"]["reason"]
    assert "**NOT PROMOTED**" in (project / "runs" / "quickstart" / "run_report.md").read_text()


def test_eval_command_rescores_the_adapter(trained, cli):
    adapter = trained.parent / "runs" / "quickstart" / "adapter"
    code, out, _ = cli("eval", trained, "--adapter", adapter, "--format", "json")
    assert code == 0
    assert json.loads(out)["evaluation"]["score"] == pytest.approx(report(trained)["evaluation"]["tuned"]["score"])
    # the gate, whatever the tuned score: the base model (no --adapter) scores what the run's baseline did
    baseline = report(trained)["evaluation"]["baseline"]["score"]
    code, out, _ = cli("eval", trained, "--format", "json", "--set", f"eval.min_score={baseline + 0.25:.3f}")
    assert code == 4, out
    assert json.loads(out)["evaluation"]["score"] == pytest.approx(baseline)


def test_merge_matches_base_plus_adapter(trained, cli):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir = trained.parent / "runs" / "quickstart"
    code, out, err = cli("export", run_dir, "--merge")
    assert code == 0, out + err
    merged_dir = run_dir / "merged"
    assert list(merged_dir.glob("*.safetensors")) and (merged_dir / "tokenizer.json").is_file()
    assert json.loads((merged_dir / "merge_check.json").read_text())["max_relative_logit_difference"] < 1e-4
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    base = AutoModelForCausalLM.from_pretrained(str(trained.parent / "tiny-llama"))
    with torch.no_grad():
        reference = PeftModel.from_pretrained(base, str(run_dir / "adapter"))(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))(input_ids=ids).logits
    assert torch.allclose(merged, reference, atol=1e-4)
    for name in ("vllm_merged.sh", "vllm_lora.sh", "Modelfile", "Modelfile.adapter"):
        assert (run_dir / "serve" / name).is_file()
    assert f"--enable-lora --lora-modules quickstart={run_dir / 'adapter'}" in (run_dir / "serve" / "vllm_lora.sh").read_text()
    assert (run_dir / "serve" / "Modelfile").read_text().splitlines()[1] == f"FROM {merged_dir}"
    code, out, _ = cli("eval", trained, "--adapter", merged_dir, "--format", "json")
    assert code == 0 and json.loads(out)["evaluation"]["score"] == pytest.approx(
        report(trained)["evaluation"]["tuned"]["score"])


def test_export_errors(tmp_path, cli):
    code, _, err = cli("export", tmp_path, "--merge")
    assert code == 1 and "not a run directory" in err
    assert cli("export", tmp_path / "nope")[0] == 2


def test_qlora_merges_into_the_full_precision_base(trained, tmp_path, cli):
    pytest.importorskip("bitsandbytes")
    from safetensors.torch import load_file

    project = fresh_copy(trained, tmp_path / "qs").parent
    code, out, err = cli("run", project / "recipe.yaml", "--set", "method.name=qlora", "--set", "training.max_steps=3")
    assert code == 0, out + err
    run_dir = project / "runs" / "quickstart"
    code, out, err = cli("export", run_dir, "--merge")
    assert code == 0, out + err
    assert "full-precision base" in out + err
    weights = {}
    for f in (run_dir / "merged").glob("*.safetensors"):
        weights.update(load_file(str(f)))
    q = next(v for k, v in weights.items() if k.endswith("q_proj.weight"))
    assert q.dtype.is_floating_point and q.dim() == 2 and q.shape[0] == 128  # a full matrix, not packed 4-bit


def test_eval_of_a_folder_that_is_neither_an_adapter_nor_a_model_is_a_clear_error(tmp_path, cli):
    # an easy slip: the run directory instead of RUN_DIR/adapter; or an empty folder. Nothing is loaded.
    recipe = demo.make(tmp_path / "qs", train_examples=8, eval_examples=2, epochs=1)
    run_dir = recipe.parent / "runs" / "quickstart"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")
    code, out, err = cli("eval", recipe, "--adapter", run_dir)
    assert code == 1, out + err
    assert "neither a PEFT adapter" in err and f"{run_dir / 'adapter'}" in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = cli("eval", recipe, "--adapter", empty)
    assert code == 1 and "neither a PEFT adapter" in err and "Traceback" not in err, out + err


def _run_dir_without_training(tmp_path, *sets):
    """A run directory as `recipe run` leaves it before its adapter or model is saved (plan.json only)."""
    from recipe_ft.compiler.pipeline import compile_file

    recipe = demo.make(tmp_path / "qs", train_examples=8, eval_examples=2, epochs=1)
    plan = compile_file(str(recipe), list(sets)).plan
    run_dir = recipe.parent / "runs" / "quickstart"
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(plan.model_dump_json())
    return run_dir


def test_export_of_a_run_without_an_adapter_says_so(tmp_path, cli):
    # an interrupted run: there is nothing to serve, which is an error, not a silent exit 0
    run_dir = _run_dir_without_training(tmp_path)
    code, out, err = cli("export", run_dir)
    assert code == 1 and "no adapter" in err and "--resume" in err, out + err
    assert not (run_dir / "serve").exists()


def test_export_of_a_full_fine_tuning_run_serves_its_model(tmp_path, cli):
    run_dir = _run_dir_without_training(tmp_path, "method.name=full")
    (run_dir / "model").mkdir()
    (run_dir / "model" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    code, out, err = cli("export", run_dir)
    assert code == 0, out + err
    assert f"vllm serve {run_dir / 'model'} " in (run_dir / "serve" / "vllm_merged.sh").read_text()
    assert (run_dir / "serve" / "Modelfile").read_text().splitlines()[1] == f"FROM {run_dir / 'model'}"


def test_export_from_a_read_only_run_directory_is_a_clear_error(tmp_path, cli, monkeypatch):
    # a run directory on a read-only mount: refused before any merging, no traceback
    import os

    run_dir = _run_dir_without_training(tmp_path)
    (run_dir / "adapter").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == run_dir and mode == os.W_OK
                        else real(p, mode, **kw))
    for args in ((), ("--merge", "-o", tmp_path / "merged")):
        code, out, err = cli("export", run_dir, *args)
        assert code == 1 and f"{run_dir} is not writable" in err and "Traceback" not in err, out + err
        assert not (tmp_path / "merged").exists()


def test_an_edited_serving_file_is_not_overwritten(tmp_path, cli):
    run_dir = _run_dir_without_training(tmp_path)
    (run_dir / "adapter").mkdir()
    assert cli("export", run_dir)[0] == 0
    assert cli("export", run_dir)[0] == 0  # its own files, unedited: written again
    script = run_dir / "serve" / "vllm_lora.sh"
    script.write_text(script.read_text() + "# mine: --gpu-memory-utilization 0.8\n")
    edited = script.read_text()
    for args in ((), ("--merge",)):  # refused before any merge
        code, out, err = cli("export", run_dir, *args)
        assert code == 1 and "vllm_lora.sh" in err and "edited" in err, out + err
        assert script.read_text() == edited and not (run_dir / "merged").exists()


def test_the_eval_loss_row_shows_base_and_tuned_alike():
    # it read "| eval loss | 6.2679 | 5.182 | -1.0857 |": the tuned figure to 3 places, the others to 4
    from recipe_ft.runtime import run_report

    score = {"metric": "exact_match", "score": 0.0, "examples_scored": 6, "examples": [], "details": {}}
    lines = run_report._evaluation({"baseline": score, "tuned": score, "baseline_eval_loss": 6.267891,
                                    "tuned_eval_loss": 5.182178})
    assert "| eval loss | 6.2679 | 5.1822 | -1.0857 |" in lines, lines
