"""`recipe run` end to end on CPU with a tiny local Llama: methods, data formats, masking, errors,
checkpoints, kill and resume, the run report."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from demo_copy import fresh_copy

pytest.importorskip("trl")
pytest.importorskip("peft")

from recipe_ft.compiler.pipeline import compile_file  # noqa: E402
from recipe_ft.runtime import demo  # noqa: E402
from recipe_ft.schemas.errors import RecipeError  # noqa: E402

FAST = ["training.epochs=1", "training.logging_steps=1"]


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The demo's tiny model, tokenizer, data and recipe, made once."""
    root = tmp_path_factory.mktemp("demo")
    recipe = demo.make(root / "qs", train_examples=48, eval_examples=8, epochs=1)
    return recipe


@pytest.fixture
def project(tiny, tmp_path):
    """A fresh copy to run in (runs write under the recipe's folder)."""
    return fresh_copy(tiny, tmp_path / "qs")


def run_cli(cli, recipe, *sets, extra=()):
    args = ["run", recipe]
    for s in [*FAST, *sets]:
        args += ["--set", s]
    return cli(*args, *extra)


def report(recipe):
    return json.loads((recipe.parent / "runs" / "quickstart" / "run_report.json").read_text())


def test_lora_end_to_end(cli, project):
    code, out, err = run_cli(cli, project, "training.epochs=3")
    assert code == 0, out + err
    adapter = project.parent / "runs" / "quickstart" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    r = report(project)
    assert r["status"] == "completed" and r["method"] == "lora"
    curve = [p["loss"] for p in r["loss_curve"]]
    assert curve[-1] < curve[0] - 0.5, curve  # the loss visibly falls
    assert r["data"]["train_examples"] == 48 and r["data"]["as"] == "messages"
    assert r["measured"]["tokens_per_second"] > 0 and r["measured"]["peak_memory_bytes"] > 0
    assert "RSS" in r["measured"]["peak_memory_kind"]
    assert r["versions"]["torch"] and r["hashes"]["recipe_sha256"]
    rates = [p["learning_rate"] for p in r["loss_curve"]]
    assert None not in rates and max(rates) == pytest.approx(3e-3)  # warmup from 0 to the recipe's rate
    import matplotlib.image

    image = matplotlib.image.imread(str(project.parent / "runs" / "quickstart" / "loss.png"))
    assert image.shape[:2] == (400, 1300) and (image[..., :3] < 0.9).mean() > 0.02  # read back; not blank
    md = (project.parent / "runs" / "quickstart" / "run_report.md").read_text()
    assert "Run report: quickstart" in md and "](loss.png)" in md

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(project.parent / "tiny-llama"))
    model = PeftModel.from_pretrained(base, str(adapter))
    assert any("lora_A" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("method,sets", [
    ("dora", ["method.name=dora"]),
    ("qlora", ["method.name=qlora", "training.optimizer=adamw_8bit"]),
])
def test_other_methods(cli, project, method, sets):
    pytest.importorskip("bitsandbytes")
    code, out, err = run_cli(cli, project, "training.max_steps=3", *sets)
    assert code == 0, out + err
    config = json.loads((project.parent / "runs" / "quickstart" / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is (method == "dora")
    assert report(project)["method"] == method


@pytest.mark.parametrize("method", ["qdora", "full"])
def test_qdora_and_full(cli, project, method):
    pytest.importorskip("bitsandbytes")
    code, out, err = run_cli(cli, project, "training.max_steps=2", f"method.name={method}")
    assert code == 0, out + err
    saved = project.parent / "runs" / "quickstart" / ("model" if method == "full" else "adapter")
    assert (saved / ("config.json" if method == "full" else "adapter_config.json")).is_file()


def test_report_to_a_tracker_that_is_not_installed(cli, project, monkeypatch):
    import importlib.util

    from recipe_ft.runtime import preflight

    real = importlib.util.find_spec
    monkeypatch.setattr(preflight.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))  # absent, installed or not
    code, out, err = run_cli(cli, project, "training.report_to=[mlflow]")
    assert code == 1 and "pip install mlflow" in err and not (project.parent / "runs").exists()


def test_truncated_examples_are_counted(cli, project):
    code, out, err = run_cli(cli, project, "training.max_steps=1", "training.max_seq_len=43")
    assert code == 0, out + err
    data = report(project)["data"]
    assert 0 < data["train_truncated"] < 48
    assert 0 < data["train_dropped"] <= data["train_truncated"]  # answers cut off entirely are dropped
    # said where a user looks, not only in the JSON: the log warns, the report's data line counts them
    dropped = data["train_dropped"]
    assert f"warning: {dropped} of {data['train_examples']} training examples are left out" in out + err, out + err
    md = (project.parent / "runs" / "quickstart" / "run_report.md").read_text()
    assert f"{dropped} left out: truncation cut their whole answer" in md, md
    # the plan counted every example; the report sets the two side by side and the log says they differ
    full = report(project)["planned_vs_measured"]["examples"]
    assert full == {"planned": data["train_examples"], "measured": data["train_examples"] - dropped}, full
    assert f"| training examples | {full['planned']} | {full['measured']} |" in md, md
    assert report(project)["planned_vs_measured"]["steps"] == {"planned": 1, "measured": 1}
    assert f"the plan counted {full['planned']} training examples (tokenizer); this run trains on " \
           f"{full['measured']}" in out + err, out + err


def test_truncation_that_leaves_nothing_is_a_clear_error(cli, project):
    code, out, err = run_cli(cli, project, "training.max_steps=1", "training.max_seq_len=16")
    assert code == 1 and "max_seq_len" in err and "Traceback" not in err


def _batch_masks(recipe, sets):
    from recipe_ft.runtime.train import prepare

    plan = compile_file(str(recipe), [*FAST, *sets]).plan
    session = prepare(plan, recipe.parent, log=lambda *a: None)
    batch = next(iter(session.trainer.get_train_dataloader()))
    return batch, session.tokenizer


def _write_rows(recipe, name, rows):
    path = recipe.parent / "data" / name
    if name.endswith(".csv"):
        import csv

        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"data/{name}"


def _trained_text(batch, tokenizer):
    """The text of the tokens the loss is computed on, per sequence."""
    labels, ids = batch["labels"], batch["input_ids"]
    return [tokenizer.decode([int(t) for t, l in zip(ids[i], labels[i]) if l != -100]) for i in range(len(ids))]


def test_chat_loss_only_on_assistant_turns(project):
    batch, tok = _batch_masks(project, ["data.eval=null"])
    for text in _trained_text(batch, tok):
        assert text.strip().replace("<|end|>", "").strip() in {"billing", "bug", "account", "shipping"}, text


@pytest.mark.parametrize("fmt,rows,expect", [
    ("prompt_completion", [{"prompt": "Classify: card declined.", "completion": " billing"}] * 8, " billing"),
    ("alpaca", [{"instruction": "Classify the ticket", "input": "app crashes", "output": "bug"}] * 8, "bug"),
    ("text", [{"text": "just some text to learn"}] * 8, None),
])
def test_formats_mask_what_they_should(project, fmt, rows, expect):
    train = _write_rows(project, f"{fmt}.jsonl", rows)
    batch, tok = _batch_masks(project, [f"data.format={fmt}", f"data.train={train}", "data.eval=null",
                                        "task=generation"])
    code = __import__("recipe_ft.cli", fromlist=["run"]).run(
        ["run", str(project), *sum([["--set", x] for x in [*FAST, "training.max_steps=1", f"data.format={fmt}",
                                                          f"data.train={train}", "data.eval=null",
                                                          "task=generation"]], [])])
    assert code == 0  # and it trains end to end
    for text in _trained_text(batch, tok):
        if expect is None:  # text: every token is trained on
            assert "just some text to learn" in text
        else:
            assert text.replace("<|end|>", "").strip() == expect.strip(), text
    assert (batch["labels"] == -100).any() or expect is None


def test_template_format_from_csv(project):
    rows = [{"ticket": "parcel lost", "label": "shipping"}] * 8
    train = _write_rows(project, "t.csv", rows)
    sets = ["data.format=template", f"data.train={train}", "data.eval=null",
            "data.template={prompt: 'Ticket: {{ ticket }}\nLabel:', completion: ' {{ label }}'}"]
    batch, tok = _batch_masks(project, sets)
    assert all(t.replace("<|end|>", "").strip() == "shipping" for t in _trained_text(batch, tok))


def test_malformed_data_is_located_and_nothing_is_written(cli, project):
    path = project.parent / "data" / "train.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "hi"}]}'
    lines[4] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(cli, project)
    assert code == 1  # found by the recipe's validation, which reads records as the run does
    assert "data/train.jsonl:3: the last message must be the assistant's" in out + err
    assert "data/train.jsonl:5: invalid JSON" in out + err
    assert "Traceback" not in out + err
    assert not (project.parent / "runs").exists()
    code, out, err = run_cli(cli, project, "data.on_error=skip", "training.max_steps=1")
    assert code == 0, out + err
    assert report(project)["data"]["train_skipped"] == 2


def test_stale_lock_is_refused(cli, project, tmp_path):
    plan_file = tmp_path / "plan.json"
    assert cli("plan", project, "-o", plan_file)[0] == 0
    (project.parent / "data" / "train.jsonl").write_text(
        (project.parent / "data" / "train.jsonl").read_text().splitlines()[0] + "\n")
    code, out, err = cli("run", plan_file)
    assert code == 1 and "stale" in err and "data file data/train.jsonl changed" in err


def test_set_on_a_lock_file_is_refused_unless_replanned(cli, project, tmp_path):
    # a lock is the plan that was reviewed: --set would silently run another one
    plan_file = tmp_path / "plan.json"
    assert cli("plan", project, "-o", plan_file)[0] == 0
    code, out, err = cli("run", plan_file, "--set", "method.rank=4")
    assert code == 1 and "--set" in err and "--replan" in err and "recipe plan" in err, out + err
    assert not (project.parent / "runs").exists()


def _cmd(recipe, *extra):
    args = [sys.executable, "-m", "recipe_ft", "run", str(recipe)]
    for s in ["training.epochs=1", "training.max_steps=200", "training.save_steps=2", "training.logging_steps=1",
              "data.eval=null"]:
        args += ["--set", s]
    return args + list(extra)


def _adapter(recipe):
    from safetensors.torch import load_file

    return load_file(str(recipe.parent / "runs" / "quickstart" / "adapter" / "adapter_model.safetensors"))


def _wait_for_checkpoint(recipe, proc, step):
    """Until a complete checkpoint at `step` or later exists (older ones rotate away), or the process
    ends (a failure). Waits on these events only: no deadline, however loaded the machine is."""
    folder = recipe.parent / "runs" / "quickstart" / "checkpoints"
    while not any(int(m.parent.name.split("-")[1]) >= step for m in folder.glob("checkpoint-*/CHECKPOINT_COMPLETE")):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)  # a poll interval, not a deadline


def test_kill_and_resume_gives_the_same_adapter(project, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    other = tmp_path / "uninterrupted"
    shutil.copytree(project.parent, other)
    done = subprocess.run(_cmd(other / "recipe.yaml"), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    proc = subprocess.Popen(_cmd(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_checkpoint(project, proc, 4)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (project.parent / "runs" / "quickstart" / "adapter").exists()
    resumed = subprocess.run(_cmd(project, "--resume"), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    resumed_from = report(project)["resumed_from"]
    assert resumed_from and int(resumed_from.rsplit("checkpoint-", 1)[1]) >= 4
    a, b = _adapter(project), _adapter(other / "recipe.yaml")
    assert a.keys() == b.keys()
    import torch

    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_saves_a_checkpoint_and_exits_130(project, sig):
    # SIGTERM is what a scheduler or `docker stop` sends before killing: the same orderly stop as Ctrl-C
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cmd(project), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _wait_for_checkpoint(project, proc, 2)
    proc.send_signal(sig)
    out, err = proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in out + err and "Traceback" not in err
    checkpoints = list((project.parent / "runs" / "quickstart" / "checkpoints").glob("checkpoint-*/CHECKPOINT_COMPLETE"))
    assert checkpoints
    assert report(project)["status"] == "interrupted"


def test_a_resumed_run_measures_only_the_steps_it_trained(cli, project):
    # 2 steps, then resumed to 4: the speed is the resumed session's tokens over its own seconds (the
    # restored step count and tokens are not counted again); `recipe calibrate` reads steps_run
    sets = ["training.save_steps=1", "data.eval=null"]
    assert run_cli(cli, project, *sets, "training.max_steps=2")[0] == 0
    state = json.loads((project.parent / "runs" / "quickstart" / "checkpoints" / "checkpoint-2" /
                        "trainer_state.json").read_text())
    code, out, err = run_cli(cli, project, *sets, "training.max_steps=4", extra=["--resume"])
    assert code == 0, out + err
    m = report(project)["measured"]
    assert m["steps"] == 4 and m["steps_run"] == 2
    assert m["tokens"] > m["tokens_run"] == m["tokens"] - state["num_input_tokens_seen"] > 0
    assert m["tokens_per_second"] == pytest.approx(m["tokens_run"] / m["wall_seconds"], rel=0.02)


def test_resuming_a_completed_run_changes_nothing(cli, project):
    # a retried job, or --resume by habit: the finished run's report and adapter stay as they are
    sets = ["training.max_steps=2", "data.eval=null"]
    assert run_cli(cli, project, *sets)[0] == 0
    run_dir = project.parent / "runs" / "quickstart"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != outdir_lock_name()}
    code, out, err = run_cli(cli, project, *sets, extra=["--resume"])
    assert code == 0, out + err
    assert "already completed" in out and "nothing to resume" in out and "--fresh" in out, out
    after = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != outdir_lock_name()}
    assert after == before
    # another plan (more steps) does resume
    code, out, err = run_cli(cli, project, "training.max_steps=3", "data.eval=null", extra=["--resume"])
    assert code == 0 and report(project)["measured"]["steps"] == 3, out + err


def test_resume_from_the_last_step_trains_no_step_past_max_steps(cli, project):
    # killed after its last checkpoint, before the adapter and report (e.g. during the final evaluation):
    # resumed, it trains nothing more (transformers would train one step past a max_steps inside an epoch)
    sets = ["training.max_steps=2", "data.eval=null"]
    assert run_cli(cli, project, *sets)[0] == 0
    run_dir = project.parent / "runs" / "quickstart"
    shutil.rmtree(run_dir / "adapter")
    for name in ("run_report.json", "run_report.md"):
        (run_dir / name).unlink()
    code, out, err = run_cli(cli, project, *sets, extra=["--resume"])
    assert code == 0, out + err
    m = report(project)["measured"]
    assert m["steps"] == 2 and m["steps_run"] == 0 and m["train_loss"] is None
    assert not (run_dir / "checkpoints" / "checkpoint-3").exists()
    from safetensors.torch import load_file

    final = load_file(str(run_dir / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors"))
    saved = _adapter(project)
    assert saved.keys() == final.keys() and all((saved[k] == final[k]).all() for k in final)


def test_the_loss_curve_ends_at_the_last_step(cli, project):
    # 3 steps logged every 2: the curve (and the report's first -> last loss) includes step 3
    code, out, err = run_cli(cli, project, "training.max_steps=3", "training.logging_steps=2", "data.eval=null")
    assert code == 0, out + err
    assert [p["step"] for p in report(project)["loss_curve"]] == [1, 2, 3]


def test_resume_with_another_adapter_shape_is_refused_before_loading(cli, project):
    # the checkpoint holds rank-16 weights: a rank-4 resume cannot load them (it was a size-mismatch traceback,
    # after the run's plan.json had been overwritten with the new plan)
    assert run_cli(cli, project, "training.max_steps=2", "data.eval=null")[0] == 0
    recorded = (project.parent / "runs" / "quickstart" / "plan.json").read_text()
    code, out, err = run_cli(cli, project, "training.max_steps=4", "data.eval=null", "method.rank=4",
                             extra=["--resume"])
    assert code == 1 and "rank 16 -> 4" in err and "--fresh" in err and "Traceback" not in err, out + err
    assert "device:" not in out  # refused before the model was loaded
    assert (project.parent / "runs" / "quickstart" / "plan.json").read_text() == recorded


def outdir_lock_name():
    from recipe_ft.runtime import outdir

    return outdir.LOCK_FILE


def test_preflight_refuses_a_big_model_on_cpu(project):
    from recipe_ft.runtime.preflight import preflight

    plan = compile_file(str(project)).plan
    big = plan.model_copy(update={"model": plan.model.model_copy(update={"parameters": 8_000_000_000})})
    with pytest.raises(RecipeError, match="too large to train on a CPU"):
        preflight(big, project.parent)


def test_preflight_needs_weights(project):
    from recipe_ft.runtime.preflight import preflight

    for f in (project.parent / "tiny-llama").glob("*.safetensors"):
        f.unlink()
    plan = compile_file(str(project)).plan
    with pytest.raises(RecipeError, match="no weights"):
        preflight(plan, project.parent)
