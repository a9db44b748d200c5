"""Sources at validate and plan time (no model loaded): preference pairs from a mapped hub dataset, a hub
dataset that is not cached, sharegpt in a plain file, sources that the schema refuses."""

import json

import pytest

datasets = pytest.importorskip("datasets")

from recipe_ft.compiler.pipeline import compile_file  # noqa: E402
from recipe_ft.runtime import data as data_mod  # noqa: E402
from recipe_ft.schemas.errors import RecipeError  # noqa: E402

COMMIT = "c" * 40
HEAD = "model: {base: Qwen/Qwen2.5-7B-Instruct}\nbudget: {gpu: L4}\n"


def _hub(root, name: str, rows: list[dict]) -> None:
    repo = root / "hub" / f"datasets--acme--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows).to_parquet(str(repo / "snapshots" / COMMIT / "data" / "train-00000-of-00001.parquet"))


def test_preference_pairs_from_a_mapped_hub_dataset(cli, offline_hub):
    rows = [{"question": f"Refund order {i}?", "good": "Yes, refunded today.", "bad": "No."} for i in range(30)]
    _hub(offline_hub, "pairs", rows)
    recipe = offline_hub / "r.yaml"
    recipe.write_text("task: preference\n" + HEAD + "data:\n  train: {hub: acme/pairs, format: preference, "
                      "columns: {prompt: question, chosen: good, rejected: bad}}\n  format: preference\n")
    code, out, err = cli("validate", str(recipe))
    assert code == 0, out + err
    plan = compile_file(str(recipe)).plan
    assert plan.data.examples == 30 and "hf://acme/pairs: 30 of 30, sampled 30" in plan.data.note
    records, report = data_mod.read_sources(plan.recipe, offline_hub)
    assert records.rows[0] == {"prompt": "Refund order 0?", "chosen": "Yes, refunded today.", "rejected": "No."}
    assert report[0]["drawn"] == 30


def test_a_hub_dataset_that_is_not_cached(cli, offline_hub):
    recipe = offline_hub / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: hf://acme/elsewhere\n")
    code, out, err = cli("validate", str(recipe))
    assert code != 0 and "data.train: hf://acme/elsewhere: not in the local hub cache" in out + err
    with pytest.raises(RecipeError) as info:  # `recipe plan` refuses it too (it never downloads)
        compile_file(str(recipe))
    assert any("not in the local hub cache" in p.message for p in info.value.problems)
    # declared sizes stand in for it at plan time, and the plan says why
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: hf://acme/elsewhere\n  examples: 5000\n")
    plan = compile_file(str(recipe)).plan
    assert plan.data.examples == 5000 and plan.data.counted_with == "declared"
    assert "not in the local hub cache" in plan.data.note
    assert plan.data.tokens_per_example == 512 and "assumed 512 tokens per example" in plan.data.note


def test_sharegpt_in_a_plain_file_is_checked_and_counted(cli, tmp_path):
    good = {"conversations": [{"from": "human", "value": "hi there"}, {"from": "gpt", "value": "hello!"}]}
    bad = {"conversations": [{"from": "human", "value": "hi"}, {"from": "wizard", "value": "?"}]}
    (tmp_path / "d.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: d.jsonl\n  format: sharegpt\n")
    code, out, err = cli("validate", str(recipe))
    assert code != 0 and "d.jsonl:2: conversations[1].from is 'wizard'" in out + err, out + err
    (tmp_path / "d.jsonl").write_text(json.dumps(good) + "\n")
    plan = compile_file(str(recipe)).plan
    assert plan.data.examples == 1 and plan.data.tokens_per_example > 8


@pytest.mark.parametrize("data,expect", [
    ("{train: {path: a.jsonl, split: test}}", "data.train.split: split is for hub and saved (disk) datasets"),
    ("{train: {disk: d, revision: v1}}", "data.train.revision: revision is for hub sources"),
    ("{train: []}", "data.train: "),
    ("{train: [{hub: not-a-name}]}", "data.train[0].hub: "),
    ("{train: [a.jsonl, {path: b.jsonl, weight: 0}]}", "data.train[1].weight: should be greater than 0"),
    ("{train: 'hf://justaname'}", "data.train: hf://justaname: not a hub dataset name"),
])
def test_sources_the_schema_refuses(cli, tmp_path, data, expect):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + f"data: {data}\n")
    code, out, err = cli("validate", str(recipe))
    assert code != 0 and expect in out + err and "Traceback" not in out + err, out + err


def test_the_sample_is_tokenized_with_a_cached_hub_tokenizer(offline_hub):
    """A hub model id whose tokenizer is in the local hub cache counts the sample with it (else chars / 4)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    rows = [{"conversations": [{"from": "human", "value": "where is my parcel " * 5},
                               {"from": "gpt", "value": "on its way"}]}] * 10
    _hub(offline_hub, "dialogs", rows)
    recipe = offline_hub / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: {hub: acme/dialogs, format: sharegpt}\n")
    heuristic = compile_file(str(recipe)).plan.data
    assert heuristic.counted_with == "heuristic"
    model = offline_hub / "hub" / "models--Qwen--Qwen2.5-7B-Instruct"
    (model / "refs").mkdir(parents=True)
    (model / "refs" / "main").write_text(COMMIT)
    (model / "snapshots" / COMMIT).mkdir(parents=True)
    words = {w: i for i, w in enumerate(["[UNK]", "where", "is", "my", "parcel", "on", "its", "way"])}
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(model / "snapshots" / COMMIT / "tokenizer.json"))
    counted = compile_file(str(recipe)).plan.data
    assert counted.counted_with == "tokenizer"
    # 20 + 3 words, 2 messages x 5 and 8 overhead: 41 tokens; characters / 4 gives more
    assert counted.tokens_per_example == 41 and heuristic.tokens_per_example > 41


@pytest.mark.parametrize("fraction", [0.15, 0.02, 0.5])
def test_eval_fraction_of_a_plain_file_holds_out_what_the_run_holds_out(tmp_path, fraction):
    """The plan counts the training examples `recipe run` keeps after data.eval_fraction's split:
    24 records at 0.15 hold out 4 (not 3), at 0.02 one (not none)."""
    row = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"}]}
    (tmp_path / "d.jsonl").write_text((json.dumps(row) + "\n") * 24)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + f"data:\n  train: d.jsonl\n  eval_fraction: {fraction}\n"
                      "training: {batch_size: 4, micro_batch_size: 4, epochs: 1}\n")
    plan = compile_file(str(recipe)).plan
    records, _ = data_mod.read_sources(plan.recipe, tmp_path)
    assert plan.data.examples == len(records.rows) == 24 - len(records.held_out)
    assert plan.training.steps == -(-len(records.rows) // 4)


def test_a_source_whose_records_are_all_bad_says_why(cli, tmp_path):
    """With data.on_error: skip (and in validate's sample of a listed source) a source with no usable
    record said only 'no usable records (all 3 were bad)': it shows the first bad record and what is wrong."""
    row = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"}]}
    (tmp_path / "chat.jsonl").write_text((json.dumps(row) + "\n") * 3)
    (tmp_path / "pc.jsonl").write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: [pc.jsonl, chat.jsonl]\n  format: prompt_completion\n"
                      "  on_error: skip\n")
    code, out, err = cli("validate", str(recipe))
    assert code != 0 and "chat.jsonl: no usable records (all 3 were bad; chat.jsonl:1: missing 'prompt'" in out + err, \
        out + err


def test_a_plain_file_with_no_usable_record_is_an_error_even_with_skip(cli, tmp_path):
    """validate said 'ok' (a warning) for a file whose every record is bad under data.on_error: skip;
    `recipe plan` and `recipe run` then refused it."""
    row = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"}]}
    (tmp_path / "chat.jsonl").write_text((json.dumps(row) + "\n") * 3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: chat.jsonl\n  format: prompt_completion\n"
                      "  on_error: skip\n")
    code, out, err = cli("validate", str(recipe))
    assert code != 0 and "no usable record is left" in out + err and "warning:" not in out + err, out + err
    with pytest.raises(RecipeError):
        compile_file(str(recipe))
    (tmp_path / "chat.jsonl").write_text((json.dumps(row) + "\n") * 2 + json.dumps({"prompt": "a", "completion": "b"}))
    code, out, err = cli("validate", str(recipe))  # one usable record: skipping the others is a warning
    assert code == 0 and "warning:" in out + err, out + err


@pytest.mark.parametrize("train", ["d.jsonl", "[d.jsonl]"])
def test_the_plan_counts_the_system_prompt_the_run_adds(tmp_path, train):
    """data.system_prompt is added to every conversation without a system message; the plan's tokens per
    example left it out (and a cached count of the file without it was reused)."""
    row = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"}]}
    (tmp_path / "d.jsonl").write_text((json.dumps(row) + "\n") * 4)
    recipe = tmp_path / "r.yaml"
    base = "task: chat\n" + HEAD + f"data:\n  train: {train}\n"
    recipe.write_text(base)
    without = compile_file(str(recipe)).plan.data.tokens_per_example
    recipe.write_text(base + "  system_prompt: " + "Answer in one short sentence. " * 14 + "\n")  # 420 characters
    plan = compile_file(str(recipe)).plan
    records, _ = data_mod.read_sources(plan.recipe, tmp_path)
    assert records.rows[0]["messages"][0]["role"] == "system"
    assert plan.data.tokens_per_example >= without + 100, (without, plan.data.tokens_per_example)


def test_max_examples_of_a_hub_source_with_bad_rows_counts_usable_ones(offline_hub):
    """`recipe run` takes a source's first max_examples usable records, reading past bad ones: 3 bad
    rows then 20 good with max_examples 10 train on 10; the plan said 7."""
    good = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"}]}
    _hub(offline_hub, "mixed", [{"messages": []}] * 3 + [good] * 20)
    recipe = offline_hub / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: {hub: acme/mixed, max_examples: 10}\n"
                      "  on_error: skip\n")
    plan = compile_file(str(recipe)).plan
    records, report = data_mod.read_sources(plan.recipe, offline_hub)
    assert plan.data.examples == len(records.rows) == 10 and report[0]["skipped"] == 3


def test_a_hub_dataset_with_several_subsets_asks_for_one(cli, offline_hub):
    """datasets' 'Config name is missing.' (its first line) left out which subsets there are."""
    repo = offline_hub / "hub" / "datasets--acme--langs"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snap = repo / "snapshots" / COMMIT
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    for lang, n in (("en", 3), ("fr", 5)):
        (snap / lang).mkdir(parents=True)
        datasets.Dataset.from_list([row] * n).to_parquet(str(snap / lang / "train-00000-of-00001.parquet"))
    (snap / "README.md").write_text("---\nconfigs:\n" + "".join(
        f"- config_name: {lang}\n  data_files:\n  - split: train\n    path: {lang}/*.parquet\n" for lang in ("en", "fr"))
        + "---\n")
    recipe = offline_hub / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: {hub: acme/langs}\n")
    code, out, err = cli("validate", str(recipe))
    assert code != 0 and "hf://acme/langs: it has several subsets (en, fr); choose one with subset: NAME" in out + err, \
        out + err
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: {hub: acme/langs, subset: fr}\n")
    plan = compile_file(str(recipe)).plan
    assert plan.data.examples == 5 == len(data_mod.read_sources(plan.recipe, offline_hub)[0].rows)


def test_a_file_read_twice_or_also_held_out_is_a_warning(cli, tmp_path):
    """A glob and a file it matches, or a training file given as data.eval too: validate said ok, and the
    run's held-out set held examples it trained on."""
    row = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello!"}]}
    (tmp_path / "d").mkdir()
    for name in ("a", "b"):
        (tmp_path / "d" / f"{name}.jsonl").write_text((json.dumps(row) + "\n") * 3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: ['d/*.jsonl', d/a.jsonl]\n  eval_fraction: 0.2\n")
    code, out, err = cli("validate", str(recipe))
    assert code == 0 and "data.train[1]: warning: d/a.jsonl is read by d/*.jsonl too: its examples count twice; " \
                         "data.eval_fraction's held-out examples" in out + err, out + err
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: 'd/*.jsonl'\n  eval: d/b.jsonl\n")
    code, out, err = cli("validate", str(recipe))
    assert code == 0 and "data.eval: warning: d/b.jsonl is in data.train (d/*.jsonl) and data.eval" in out + err, \
        out + err
    recipe.write_text("task: chat\n" + HEAD + "data:\n  train: d/a.jsonl\n  eval: d/b.jsonl\n")
    code, out, err = cli("validate", str(recipe))
    assert code == 0 and "warning:" not in out + err, out + err
