"""Data from where users keep it: save_to_disk datasets, a hub cache (offline), mixtures with weights and
column mappings, sharegpt, chat templates, train_on_inputs. Each trains the demo model on a CPU; masks
are checked on real batches from the trainer's dataloader."""

import json
import shutil

import pytest
from demo_copy import fresh_copy

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

from recipe_ft.compiler import lock, mixture  # noqa: E402
from recipe_ft.compiler.pipeline import compile_file  # noqa: E402
from recipe_ft.runtime import demo  # noqa: E402

FAST = ["training.max_steps=1", "training.logging_steps=1", "data.eval=null", "training.micro_batch_size=4",
        "training.batch_size=4"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LABELS = ("billing", "bug", "account", "shipping")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return demo.make(tmp_path_factory.mktemp("demo") / "qs", train_examples=24, eval_examples=4, epochs=1)


@pytest.fixture
def project(tiny, tmp_path, offline_hub):
    """A copy of the demo, an offline hub cache and a saved dataset next to the recipe."""
    dst = fresh_copy(tiny, tmp_path / "qs").parent
    tickets = [json.loads(line) for line in (dst / "data" / "train.jsonl").read_text().splitlines()]
    # a save_to_disk dataset: question / answer columns (alpaca, mapped), train and test splits
    qa = [{"question": r["messages"][1]["content"], "answer": r["messages"][2]["content"]} for r in tickets]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(qa[:16]),
                          "test": datasets.Dataset.from_list(qa[16:])}).save_to_disk(str(dst / "saved"))
    # a hub repository as `hf download --repo-type dataset acme/tickets` leaves it: sharegpt conversations
    repo = tmp_path / "hub" / "datasets--acme--tickets"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT / "data"
    snap.mkdir(parents=True)
    share = [{"conversations": [{"from": "human", "value": r["messages"][1]["content"]},
                                {"from": "gpt", "value": r["messages"][2]["content"]}]} for r in tickets]
    datasets.Dataset.from_list(share[:20]).to_parquet(str(snap / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(share[20:]).to_parquet(str(snap / "test-00000-of-00001.parquet"))
    return dst / "recipe.yaml"


def _set(recipe, text: str):
    """Replace the recipe's data section."""
    lines = recipe.read_text().splitlines()
    start = lines.index("data:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    recipe.write_text("\n".join(lines[:start] + text.strip("\n").splitlines() + lines[end:]) + "\n")


def _validate(cli, recipe):
    code, out, err = cli("validate", str(recipe))
    return code, out + err


def _batch(recipe, sets=()):
    from recipe_ft.runtime.train import prepare

    plan = compile_file(str(recipe), [*FAST, *sets]).plan
    session = prepare(plan, recipe.parent, log=lambda *a: None)
    return next(iter(session.trainer.get_train_dataloader())), session


def _trained(batch, tokenizer):
    labels, ids = batch["labels"], batch["input_ids"]
    return [tokenizer.decode([int(t) for t, l in zip(ids[i], labels[i]) if l != -100]) for i in range(len(ids))]


def _run(cli, recipe, *sets):
    args = ["run", str(recipe)]
    for s in [*FAST, *sets]:
        args += ["--set", s]
    code, out, err = cli(*args)
    assert code == 0, out + err
    return json.loads((recipe.parent / "runs" / "quickstart" / "run_report.json").read_text())


def test_saved_dataset_with_a_column_mapping(cli, project):
    _set(project, """
data:
  train: {disk: saved, split: train, format: alpaca, columns: {instruction: question, output: answer}}
  system_prompt: Classify the support ticket.
""")
    code, text = _validate(cli, project)
    assert code == 0, text
    plan = compile_file(str(project), FAST).plan
    assert plan.data.examples == 16 and plan.data.train_path == "saved"
    assert plan.lock.data_sha256["saved"].startswith("saved:")
    batch, session = _batch(project)
    assert all(t.replace("<|end|>", "").strip() in LABELS for t in _trained(batch, session.tokenizer))
    first = session.tokenizer.decode(batch["input_ids"][0])
    assert "<|system|>\nClassify the support ticket." in first  # the system prompt where records lack one
    report = _run(cli, project)
    assert report["data"]["train_examples"] == 16 and report["status"] == "completed"


def test_hub_cache_offline_sharegpt(cli, project):
    _set(project, """
data:
  train: hf://acme/tickets
  format: sharegpt
""")
    code, text = _validate(cli, project)
    assert code == 0, text
    plan = compile_file(str(project), FAST).plan
    assert plan.data.examples == 20 and plan.lock.data_sha256["hf://acme/tickets"] == f"revision:{COMMIT}"
    batch, session = _batch(project)
    assert all(t.replace("<|end|>", "").strip() in LABELS for t in _trained(batch, session.tokenizer))
    report = _run(cli, project)
    assert report["data"]["train_examples"] == 20


def test_hub_errors_are_located(cli, project):
    _set(project, """
data:
  train:
    - {hub: acme/tickets, split: tset, format: sharegpt}
    - {hub: acme/nothere, format: sharegpt}
    - {disk: saved, format: alpaca, columns: {instruction: questoin, output: answer}}
""")
    code, text = _validate(cli, project)
    assert code != 0 and "Traceback" not in text
    assert "data.train[0].split: hf://acme/tickets: no split 'tset'; did you mean 'test'? (splits: train, test)" \
        in text, text
    assert "data.train[1].hub: hf://acme/nothere: not in the local hub cache" in text and "offline" in text
    assert "data.train[2].columns.instruction: saved: no column 'questoin' (mapped to instruction); did you mean " \
           "'question'?" in text, text


def test_bad_record_in_a_hub_source_is_located(cli, project, tmp_path):
    snap = tmp_path / "hub" / "datasets--acme--tickets" / "snapshots" / COMMIT / "data"
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "bug"}]}] * 3
    rows[1] = {"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "bug"}]}
    datasets.Dataset.from_list(rows).to_parquet(str(snap / "train-00000-of-00001.parquet"))
    _set(project, "data:\n  train: hf://acme/tickets\n  format: sharegpt\n")
    code, text = _validate(cli, project)
    assert code != 0
    assert "hf://acme/tickets[train] row 2: conversations[1].from is 'robot'" in text, text
    assert "roles: {robot: assistant}" in text
    code, out, err = cli("run", str(project), *sum([["--set", s] for s in FAST], []))
    assert code == 1 and "hf://acme/tickets[train] row 2:" in out + err and "Traceback" not in out + err, out + err


MIXTURE = """
data:
  train:
    - {path: data/train.jsonl, weight: 2}
    - {disk: saved, format: alpaca, columns: {instruction: question, output: answer}, weight: 1}
    - {hub: acme/tickets, format: sharegpt, weight: 1, max_examples: 12}
"""


def test_three_source_mixture_with_weights_and_columns(cli, project):
    _set(project, MIXTURE)
    code, text = _validate(cli, project)
    assert code == 0, text
    plan = compile_file(str(project), FAST).plan
    # 24 + 16 + 12 examples, shared 2:1:1
    assert plan.data.examples == 52
    assert "data/train.jsonl: 26 of 24" in plan.data.note and "saved: 13 of 16" in plan.data.note \
        and "hf://acme/tickets: 13 of 12" in plan.data.note, plan.data.note
    assert set(plan.lock.data_sha256) == {"data/train.jsonl", "saved", "hf://acme/tickets"}
    report = _run(cli, project)
    drawn = [(s["source"], s["drawn"], s["usable"]) for s in report["data"]["sources"]]
    assert drawn == [("data/train.jsonl", 26, 24), ("saved", 13, 16), ("hf://acme/tickets", 13, 12)]
    assert report["data"]["train_examples"] == 52
    # second plan: the hub and saved sources' sizes come from the cache
    again = compile_file(str(project), FAST).plan
    assert again.data.note.count("(cached)") == 2 and again.data.examples == 52


def test_held_out_share_is_split_per_source_before_mixing(cli, project):
    """A source repeated by its weight never repeats a held-out example into training; the plan counts
    what the run trains on."""
    _set(project, MIXTURE + "  eval_fraction: 0.25\n")
    plan = compile_file(str(project), FAST).plan
    report = _run(cli, project)
    # held out: 6 of 24, 4 of 16, 3 of 12; the 39 left are shared 2:1:1 (20, 10, 9 -> 19.5, 9.75, 9.75)
    assert report["data"]["eval_examples"] == 13 and report["data"]["train_examples"] == plan.data.examples == 39


def test_a_repeated_source_never_repeats_a_held_out_example_into_training(project):
    from recipe_ft.compiler.pipeline import check_file
    from recipe_ft.runtime.data import read_sources

    data = project.parent / "data"
    for name, n in (("a", 10), ("b", 4)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": f"{name} question {i}"}, {"role": "assistant", "content": f"{name} {i}"}]})
            + "\n" for i in range(n)))
    _set(project, """
data:
  train: [{path: data/a.jsonl, weight: 1}, {path: data/b.jsonl, weight: 3}]
  eval_fraction: 0.25
""")
    recipe = check_file(str(project)).recipe
    records, report = read_sources(recipe, project.parent)
    train = {json.dumps(r, sort_keys=True) for r in records.rows}
    held = [json.dumps(r, sort_keys=True) for r in records.held_out]
    assert len(held) == 2 + 1 and not train & set(held)  # round(2.5) = 2 of a, 1 of b
    # the 8 + 3 left are shared 1:3 (2.75, 8.25 -> 3, 8): b's 3 rows repeated, none of them held out
    assert [s["drawn"] for s in report] == [3, 8] and len(records.rows) == 11
    assert compile_file(str(project), FAST).plan.data.examples == 11


def test_mixture_is_deterministic_with_the_seed():
    assert mixture.draw_counts([24, 16, 12], [2, 1, 1]) == [26, 13, 13]
    assert mixture.draw_counts([24, 16, 12], [None, None, None]) == [24, 16, 12]
    a, b = mixture.pick(16, 13, 7, 1), mixture.pick(16, 13, 7, 1)
    assert a == b and len(set(a)) == 13 and mixture.pick(16, 13, 8, 1) != a
    repeated = mixture.pick(12, 13, 7, 2)
    assert len(repeated) == 13 and set(repeated) == set(range(12))


def test_mixture_errors(cli, project):
    _set(project, """
data:
  train:
    - {path: data/train.jsonl, weight: 2}
    - {disk: saved, format: text}
""")
    code, text = _validate(cli, project)
    assert "data.train: data.train: 1 of 2 sources have a weight" in text
    assert "saved: format 'text' cannot be mixed with data/train.jsonl" in text, text
    _set(project, "data:\n  train: [data/none-*.jsonl]\n")
    code, text = _validate(cli, project)
    assert code != 0 and "data/none-*.jsonl: no data file matches this pattern" in text, text


def test_changed_hub_revision_makes_the_plan_stale(cli, project, tmp_path):
    _set(project, "data:\n  train: hf://acme/tickets\n  format: sharegpt\n")
    code, out, err = cli("plan", str(project), "-o", str(project.parent / "plan.json"))
    assert code == 0, out + err
    assert lock.staleness(lock.read(project.parent / "plan.json")) == []
    repo = tmp_path / "hub" / "datasets--acme--tickets"
    shutil.copytree(repo / "snapshots" / COMMIT, repo / "snapshots" / ("f" * 40))
    (repo / "refs" / "main").write_text("f" * 40)
    assert lock.staleness(lock.read(project.parent / "plan.json")) == \
        ["the data source hf://acme/tickets changed since the plan was made"]


CUSTOM = """{%- for m in messages -%}
{%- if m.role == 'assistant' -%}<|assistant|>
{{ m.content }}<|end|>
{% else -%}<|user|>
{{ m.content }}<|end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}<|assistant|>
{% endif -%}"""


def _two_turns(project):
    rows = [{"messages": [{"role": "user", "content": "card declined"}, {"role": "assistant", "content": "billing"},
                          {"role": "user", "content": "and the app crashes"}, {"role": "assistant", "content": "bug"}]}]
    (project.parent / "data" / "turns.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 8))


def test_custom_template_without_markers_masks_every_assistant_turn(cli, project):
    (project.parent / "chat.jinja").write_text(CUSTOM)
    _two_turns(project)
    _set(project, "data:\n  train: data/turns.jsonl\n  chat_template: chat.jinja\n")
    code, text = _validate(cli, project)
    assert code == 0, text
    batch, session = _batch(project)
    assert "endgeneration" not in session.tokenizer.chat_template  # no markers: masks come from rendering
    for text in _trained(batch, session.tokenizer):
        assert text == "billing<|end|>\nbug<|end|>\n", text  # both replies and their end of turn, nothing else
    _run(cli, project)


def test_train_on_inputs_both_ways(cli, project):
    _two_turns(project)
    _set(project, "data:\n  train: data/turns.jsonl\n  chat_template: chatml\n")
    # chatml's markers are plain text to the demo's tokenizer: many tokens, so longer rows
    batch, session = _batch(project, ["data.train_on_inputs=false", "training.max_seq_len=256"])
    for text in _trained(batch, session.tokenizer):
        assert text == "billing<|im_end|>\nbug<|im_end|>\n", text
    batch, session = _batch(project, ["data.train_on_inputs=true", "training.max_seq_len=256"])
    for i, text in enumerate(_trained(batch, session.tokenizer)):
        real = batch["attention_mask"][i].bool() if "attention_mask" in batch else slice(None)
        assert text.startswith("<|im_start|>user\ncard declined") and "bug<|im_end|>" in text
        assert (batch["labels"][i][real] != -100).all()
    report = _run(cli, project, "data.train_on_inputs=true", "training.max_seq_len=256")  # and it trains
    assert report["data"]["train_on_inputs"] is True and report["data"]["chat_template"] == "chatml"


def test_a_sandbox_escape_in_a_chat_template_is_refused(cli, project):
    (project.parent / "evil.jinja").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    _set(project, "data:\n  train: data/train.jsonl\n  chat_template: evil.jinja\n")
    code, text = _validate(cli, project)
    assert code != 0 and "data.chat_template: evil.jinja: rendering a sample conversation: refused by the sandbox" \
        in text, text


def test_a_second_plan_reads_sizes_from_the_cache_without_opening_the_datasets(project):
    """The first plan samples the hub and saved datasets; the second finds their sizes (and clean
    checks) under the sources' fingerprints and never imports `datasets` (timing: benchmarks/plan_sources.py)."""
    import os
    import subprocess
    import sys

    _set(project, MIXTURE)
    probe = ("import sys; from recipe_ft.cli import run; code = run(['plan', sys.argv[1], '--format', 'json']); "
             "print('DATASETS', 'datasets' in sys.modules, code)")
    results = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", probe, str(project)], capture_output=True, text=True,
                             env=dict(os.environ))
        results.append(out.stdout.strip().splitlines()[-1])
    assert results == ["DATASETS True 0", "DATASETS False 0"], results


def test_plan_sources_benchmark_runs(tmp_path):
    """benchmarks/plan_sources.py works (one pair, small sources); no timing assertion."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "plan_sources.py"
    out = subprocess.run([sys.executable, str(script), "--pairs", "1", "--hub-rows", "200", "--saved-rows", "100"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "warm  median" in out.stdout and "second plan:" in out.stdout
