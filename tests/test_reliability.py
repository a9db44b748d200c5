"""Issue 12, case by case: nothing a user owns is deleted, nothing hangs, no input gives a traceback.

These need no training: every refusal here happens before a model is loaded. The cases that train
(a full disk during a save, the lock while a run is alive, random run / kill / resume / export
sequences) are in test_reliability_runs.py.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from demo_copy import fresh_copy

from recipe_ft.compiler import lock
from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.runtime import outdir

pytest.importorskip("transformers")

from recipe_ft.runtime import demo  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return demo.make(tmp_path_factory.mktemp("rel") / "qs", train_examples=24, eval_examples=4, epochs=1)


@pytest.fixture
def project(tiny, tmp_path):
    return fresh_copy(tiny, tmp_path / "qs")


def recipe_cli(*args, cwd):
    """`python -m recipe_ft ...` in a subprocess: (exit code, stdout + stderr)."""
    proc = subprocess.run([sys.executable, "-m", "recipe_ft", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True)
    return proc.returncode, proc.stdout + proc.stderr


def fake_run_dir(recipe: Path) -> Path:
    """A run directory as `recipe run` leaves it (plan, adapter config, a checkpoint, a report), no training."""
    plan = compile_file(str(recipe)).plan
    run_dir = recipe.parent / plan.output_dir
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")
    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    ckpt = run_dir / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True)
    (ckpt / "CHECKPOINT_COMPLETE").write_text("2")
    (run_dir / "run_report.json").write_text("{}")
    (run_dir / "plan.json").write_text(plan.model_dump_json())
    (run_dir / outdir.RUN_MARKER).write_text("{}")
    return run_dir


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# 1. export -o never empties a directory it did not write

def test_1_export_refuses_directories_it_did_not_write(cli, project, tmp_path, monkeypatch):
    run_dir = fake_run_dir(project)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before_run, before_mine = tree(run_dir), tree(mine)
    for target in (mine, run_dir, run_dir / "adapter", run_dir.parent):
        code, out, err = cli("export", run_dir, "--merge", "-o", target)
        assert code == 1 and "refusing to export" in err and "Traceback" not in out + err, (target, err)
    monkeypatch.chdir(mine)
    code, out, err = cli("export", run_dir, "--merge", "-o", ".")
    assert code == 1 and "current directory" in err
    assert tree(run_dir) == before_run and tree(mine) == before_mine
    (mine / "notes.txt").unlink()
    outdir.check_export_dir(mine)  # empty: nothing to lose, allowed
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "model.safetensors").write_text("x")
    (ours / outdir.EXPORT_MARKER).write_text(json.dumps({"files": ["model.safetensors"]}))
    outdir.check_export_dir(ours)  # an earlier export: may be replaced
    (ours / "README.md").write_text("added by the user")
    with pytest.raises(Exception, match="did not write"):
        outdir.check_export_dir(ours)


# 2. checkpoints are never cleared without --resume or --fresh; a locked directory is refused

def test_2_earlier_run_is_kept_and_a_locked_directory_refused(cli, project):
    run_dir = fake_run_dir(project)
    before = tree(run_dir)
    code, out, err = cli("run", project)
    assert code == 1 and "--resume" in err and "--fresh" in err and "Traceback" not in err
    assert tree(run_dir) == before
    with outdir.RunLock.acquire(run_dir, log=lambda *a: None):
        code, out, err = cli("run", project, "--resume")
        assert code == 1 and f"pid {os.getpid()}" in err and "in use by another run" in err
        code, out, err = cli("run", project, "--fresh")
        assert code == 1 and "in use" in err
    assert {k: v for k, v in tree(run_dir).items() if k != outdir.LOCK_FILE} == {
        k: v for k, v in before.items() if k != outdir.LOCK_FILE}
    code, out, err = cli("run", project, "--resume", "--fresh")
    assert code == 2 and "contradict" in err


def test_2_fresh_moves_the_earlier_run_aside(project):
    run_dir = fake_run_dir(project)
    before = tree(run_dir)
    notes = []
    held = outdir.RunLock.acquire(run_dir, fresh=True, log=notes.append)
    held.release()
    assert tree(Path(f"{run_dir}.1")) == before and "moved the earlier run" in notes[0]
    assert not (run_dir / "checkpoints").exists() and (run_dir / outdir.RUN_MARKER).is_file()


def test_2_a_stale_lock_is_reported_and_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / outdir.LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "gone", "started": "earlier"}))
    notes = []
    with outdir.RunLock.acquire(run_dir, log=notes.append):
        assert json.loads((run_dir / outdir.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert any("stale lock" in n and "pid 999999" in n for n in notes)
    assert (run_dir / outdir.LOCK_FILE).read_text() == ""  # a clean exit leaves no stale lock


# 3. parsing is bounded: an alias bomb and deep nesting fail fast, located, exit 1

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))


@pytest.mark.parametrize("name,text,message", [
    ("bomb.yaml", BOMB, "expands to more than"),
    ("deep.yaml", "task: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than"),
    ("deep.toml", "task = " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than"),
    ("deepblock.yaml", "task:\n" + "".join("  " * i + "- \n" for i in range(200)), "nested"),
])
def test_3_parsing_limits(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    code, out = recipe_cli("validate", name, cwd=tmp_path)
    assert code == 1 and message in out and "Traceback" not in out, out[-2000:]
    assert out.startswith(f"{name}:")  # located


# 4. templates are bounded, and the sandbox's refusals are located errors in validate, plan and run

TEMPLATE_RECIPE = """\
task: generation
model:
  base: tiny-llama
data:
  train: data/t.jsonl
  format: template
  template:
    prompt: "{prompt}"
    completion: "{{{{ label }}}}"
training:
  max_seq_len: 96
  precision: fp32
budget:
  gpu: L4
"""


@pytest.mark.parametrize("prompt,message", [
    ("{{ 'a' * 10**10 }}", "stopped"),
    ("{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}", "stopped"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}", "stopped"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "stopped"),
    ("{{ label.__class__.__mro__ }}", "refused by the sandbox"),
    ("{{ cycler.__init__.__globals__ }}", "refused by the sandbox"),
    ("{{ '{:>9999999999}'.format(label) }}", "stopped"),
])
def test_4_runaway_and_unsafe_templates(cli, project, prompt, message):
    folder = project.parent
    (folder / "data" / "t.jsonl").write_text(json.dumps({"label": "billing"}) + "\n")
    recipe = folder / "t.yaml"
    recipe.write_text(TEMPLATE_RECIPE.format(prompt=prompt.replace('"', '\\"')))
    code, out = recipe_cli("validate", recipe.name, cwd=folder)  # the command, in its own process
    assert code == 1 and message in out and "Traceback" not in out, out[-2000:]
    assert "data.template.prompt" in out and "t.yaml:8:" in out  # located at the template
    code, out, err = cli("plan", recipe)
    assert code == 1 and message in out + err and "Traceback" not in out + err, out + err
    from recipe_ft.runtime.data import read_records
    from recipe_ft.schemas.errors import RecipeError
    from recipe_ft.schemas.recipe import TemplateSpec

    with pytest.raises(RecipeError, match=message):
        read_records(folder / "data" / "t.jsonl", "data/t.jsonl", "template",
                     TemplateSpec(prompt=prompt, completion="{{ label }}"))


# 5. plan refuses data it cannot train on

@pytest.mark.parametrize("name,content,message", [
    ("empty.jsonl", b"", "empty"),
    ("latin1.jsonl", '{"text": "caf\u00e9"}\n'.encode("latin-1") * 3, "not UTF-8"),
    ("fake.parquet", b"this is not parquet at all\n", "not a Parquet file"),
    ("numbers.jsonl", b"1\n2\n3\n", "expected an object"),
    ("dir.jsonl", None, "is a directory"),
])
def test_5_plan_exits_1_on_unusable_data(cli, project, name, content, message):
    path = project.parent / "data" / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    code, out, err = cli("plan", project, "--set", f"data.train=data/{name}", "--set", "data.format=text")
    assert code == 1 and message in out + err and "Traceback" not in out + err, out + err
    code, out, err = cli("validate", project, "--set", f"data.train=data/{name}", "--set", "data.format=text")
    assert code == 1 and message in out + err


# 6. validate and plan agree

@pytest.mark.parametrize("edit", ["base", "hidden_size"])
def test_6_validate_fails_where_plan_fails(cli, project, edit):
    if edit == "base":
        sets = ["--set", "model.base=/etc"]
    else:
        config = project.parent / "tiny-llama" / "config.json"
        cfg = json.loads(config.read_text())
        cfg["hidden_size"] = 0
        config.write_text(json.dumps(cfg))
        sets = []
    code, out, err = cli("validate", project, *sets)
    assert code == 1 and "model.base" in out, out + err
    assert cli("plan", project, *sets)[0] == 1


# 7. no tracebacks: unusable output paths, absurd numbers, context length

def test_7_output_dir_that_is_a_file_is_refused_before_loading(cli, project):
    (project.parent / "afile").write_text("mine")
    for target in ("afile", "afile/sub"):
        code, out, err = cli("run", project, "--set", f"output.dir={target}")
        assert code == 1 and "afile" in err and "Traceback" not in err and "device:" not in out, out + err
    assert (project.parent / "afile").read_text() == "mine"


def test_7_output_dir_that_holds_the_recipe_is_refused(cli, project):
    for target in (".", ".."):
        code, out, err = cli("run", project, "--fresh", "--set", f"output.dir={target}")
        assert code == 1 and "a directory of its own" in err, out + err
    assert project.is_file()


def test_7_fake_parquet_in_run_is_an_error(cli, project):
    (project.parent / "data" / "x.parquet").write_bytes(b"PAR1 but not really parquet")
    code, out, err = cli("run", project, "--set", "data.train=data/x.parquet", "--set", "data.format=text")
    assert code == 1 and "Parquet" in out + err and "Traceback" not in out + err, out + err


@pytest.mark.parametrize("key,value,message", [
    ("training.epochs", ".inf", "finite"),
    ("training.epochs", "1e300", "less than or equal to 1000"),
    ("training.max_seq_len", "100000000", "less than or equal to"),
])
def test_7_absurd_numbers_are_bounded(cli, project, key, value, message):
    code, out, err = cli("validate", project, "--set", f"{key}={value}")
    assert code == 1 and message in out, out + err
    code, out, err = cli("plan", project, "--set", f"{key}={value}")
    assert code == 1 and "Traceback" not in out + err


def test_7_absurd_config_and_context_length(cli, project):
    code, out, err = cli("validate", project, "--set", "training.max_seq_len=4096")
    assert code == 0 and "past the model's context of 256" in out
    config = project.parent / "tiny-llama" / "config.json"
    cfg = json.loads(config.read_text())
    cfg["vocab_size"] = 10**15
    config.write_text(json.dumps(cfg))
    code, out, err = cli("validate", project)
    assert code == 1 and "vocab_size" in out and "beyond any real model" in out
    assert cli("plan", project)[0] == 1


# 8. a bad byte is located by line and skippable

def test_8_non_utf8_line_is_located_and_skippable(cli, project):
    from recipe_ft.runtime.data import read_records
    from recipe_ft.schemas.errors import RecipeError

    path = project.parent / "data" / "train.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b"billing", b"bill\xe9ng").replace(b"bug", b"b\xffg").replace(
        b"account", b"acc\xe9unt").replace(b"shipping", b"sh\xe9pping")
    path.write_bytes(b"".join(lines))
    with pytest.raises(RecipeError, match=r"data/train.jsonl:3: not UTF-8 text \(byte 0x"):
        read_records(path, "data/train.jsonl", "chat")
    records = read_records(path, "data/train.jsonl", "chat", on_error="skip")
    assert records.skipped == 1 and len(records.rows) == len(lines) - 1
    code, out, err = cli("plan", project)
    assert code == 1 and "data/train.jsonl:3: not UTF-8" in out + err
    assert cli("plan", project, "--set", "data.on_error=skip")[0] == 0


# 9. generated launch files are not read as recipes; skypilot.yaml is relative to its workdir

def test_9_launch_files_and_validate(cli, project):
    folder = project.parent
    code, out, err = cli("launch", project, "--target", "skypilot")
    assert code == 0, out + err
    launch_dir = folder / "runs" / "quickstart" / "launch"
    assert (launch_dir / "skypilot.yaml").is_file() and (launch_dir / "accelerate.yaml").is_file()
    code, out, err = cli("validate", folder)
    assert code == 0 and "1 recipe checked" in err, out + err
    from ruamel.yaml import YAML

    task = YAML(typ="safe").load((launch_dir / "skypilot.yaml").read_text())
    assert task["workdir"] == "."
    assert str(folder) not in task["run"] and "recipe run runs/quickstart/launch/plan.json" in task["run"]
    assert (folder / "runs/quickstart/launch/plan.json").is_file()
    # a recipe the user keeps in a folder next to generated files is still checked
    (launch_dir / "mine.yaml").write_text("task: [\n")
    assert cli("validate", folder)[0] == 1
    # launching again replaces its own files; a user's file of the same name is not overwritten
    assert cli("launch", project, "--target", "skypilot")[0] == 0
    theirs = folder / "theirs"
    theirs.mkdir()
    (theirs / "accelerate.yaml").write_text("my config")
    code, out, err = cli("launch", project, "--target", "skypilot", "-o", theirs)
    assert code == 1 and "not written by `recipe launch`" in err
    assert (theirs / "accelerate.yaml").read_text() == "my config" and not (theirs / "plan.json").exists()


# 10. editing the local model's config (or tokenizer) makes a plan stale

def test_10_model_config_change_makes_the_plan_stale(cli, project, tmp_path):
    plan_file = tmp_path / "plan.json"
    assert cli("plan", project, "-o", plan_file)[0] == 0
    assert lock.staleness(lock.read(plan_file)) == []
    config = project.parent / "tiny-llama" / "config.json"
    cfg = json.loads(config.read_text())
    cfg["num_hidden_layers"] = 3
    config.write_text(json.dumps(cfg))
    code, out, err = cli("run", plan_file)
    assert code == 1 and "stale" in err and "tiny-llama/config.json changed" in err
    (project.parent / "tiny-llama" / "tokenizer.json").write_text("{}")
    assert any("tokenizer.json" in r for r in lock.staleness(lock.read(plan_file)))


# 11. the demo does not overwrite what the user edited

def test_11_demo_refuses_to_overwrite_edits(cli, tmp_path):
    folder = tmp_path / "qs"
    demo.make(folder, train_examples=8, eval_examples=2, epochs=1)
    demo.make(folder, train_examples=8, eval_examples=2, epochs=1)  # unchanged: may be written again
    recipe = folder / "recipe.yaml"
    recipe.write_text(recipe.read_text() + "# my edit\n")
    code, out, err = cli("demo", folder)
    assert code == 1 and "recipe.yaml" in err and "--force" in err
    assert recipe.read_text().endswith("# my edit\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "recipe.yaml").write_text("mine")
    assert cli("demo", other)[0] == 1 and (other / "recipe.yaml").read_text() == "mine"
    code, out, err = cli("demo", folder, "--force")
    assert code == 0 and not recipe.read_text().endswith("# my edit\n")
