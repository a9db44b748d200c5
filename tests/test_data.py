"""Record checks and conversion per format, and the held-out split (no model needed)."""

import json

import pytest

from recipe_ft.runtime.data import duplicates, read_records, split_eval
from recipe_ft.schemas.errors import RecipeError
from recipe_ft.schemas.recipe import TemplateSpec


def write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_chat_records_and_their_errors(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    path = write(tmp_path, "d.jsonl", [good, '{"messages": []}', "", '{"messages": [{"role": "bot", "content": "x"}]}',
                                        "[1, 2]", "{oops"])
    with pytest.raises(RecipeError) as info:
        read_records(path, "d.jsonl", "chat")
    text = info.value.message
    assert "4 bad record(s) of 5" in text
    assert "d.jsonl:2: expected 'messages': a non-empty list" in text
    assert "d.jsonl:4: messages[0].role is 'bot'" in text
    assert "d.jsonl:5: expected an object, got list" in text
    assert "d.jsonl:6: invalid JSON" in text
    records = read_records(path, "d.jsonl", "chat", on_error="skip")
    assert records.read == 5 and records.skipped == 4 and len(records.rows) == 1
    assert records.rows[0] == json.loads(good) and records.kind == "messages"
    plain = read_records(path, "d.jsonl", "chat", on_error="skip", generation_markers=False)
    assert plain.rows[0] == {"prompt": [{"role": "user", "content": "hi"}],
                             "completion": [{"role": "assistant", "content": "yo"}]}


def test_alpaca_prompt_completion_text(tmp_path):
    a = write(tmp_path, "a.jsonl", [json.dumps({"instruction": "Sum", "input": "1 2", "output": "3"}),
                                    json.dumps({"instruction": "Hi", "output": "hello"}),
                                    json.dumps({"instruction": "x"})])
    records = read_records(a, "a.jsonl", "alpaca", on_error="skip")
    # alpaca records are conversations, rendered by the chat template (data.chat_template: alpaca for the classic prompt)
    assert records.rows[0] == {"messages": [{"role": "user", "content": "Sum\n\n1 2"},
                                            {"role": "assistant", "content": "3"}]}
    assert records.rows[1]["messages"][0] == {"role": "user", "content": "Hi"} and records.kind == "messages"
    assert records.problems[0].line == 3 and records.problems[0].message == "missing 'output'"
    p = write(tmp_path, "p.jsonl", [json.dumps({"prompt": "q", "completion": 5})])
    with pytest.raises(RecipeError, match="'completion' must be a string"):
        read_records(p, "p.jsonl", "prompt_completion")
    t = write(tmp_path, "t.jsonl", [json.dumps({"text": "hello"})])
    assert read_records(t, "t.jsonl", "text").rows == [{"text": "hello"}]


def test_template_over_csv_columns_in_a_sandbox(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("ticket,label\nlost parcel,shipping\nno label here,\n")
    spec = TemplateSpec(prompt="T: {{ ticket }}", completion="{{ label }}")
    records = read_records(path, "d.csv", "template", spec, on_error="skip")
    assert records.rows == [{"prompt": "T: lost parcel", "completion": "shipping"}]
    assert records.problems[0].line == 3 and "renders empty" in records.problems[0].message
    missing = TemplateSpec(prompt="{{ nope }}", completion="{{ label }}")
    with pytest.raises(RecipeError, match="'nope' is undefined"):
        read_records(path, "d.csv", "template", missing)


# Each escape renders something (or mutates a value) under a plain jinja2.Environment; the sandbox
# must refuse every one of them, and say so.
ESCAPES = {
    "dunder attribute": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "function globals": "{{ lipsum.__globals__ }}",
    "str.format reaching attributes": "{{ '{0.__class__}'.format(ticket) }}",
    "method of a column's value": "{{ ticket.__init__.__globals__ }}",
    "mutating a list": "{% set seen = [] %}{{ seen.append(ticket) }}{{ seen }}",
    "mutating a dict": "{% set d = {} %}{{ d.update(a=1) }}{{ d }}",
}


@pytest.mark.parametrize("escape", list(ESCAPES), ids=list(ESCAPES))
def test_the_sandbox_refuses_each_escape(tmp_path, escape):
    path = tmp_path / "d.csv"
    path.write_text("ticket,label\nlost parcel,shipping\n")
    evil = TemplateSpec(prompt=ESCAPES[escape], completion="{{ label }}")
    with pytest.raises(RecipeError) as info:
        read_records(path, "d.csv", "template", evil)
    message = info.value.message
    assert "d.csv:2: template refused by the sandbox" in message, (escape, message)
    assert "unsafe" in message, (escape, message)


def test_split_is_deterministic_and_disjoint():
    rows = [{"text": str(i)} for i in range(100)]
    train, held = split_eval(rows, 0.1, seed=42)
    assert len(held) == 10 and len(train) == 90
    assert {r["text"] for r in train}.isdisjoint(r["text"] for r in held)
    assert split_eval(rows, 0.1, seed=42) == (train, held)
    assert split_eval(rows, 0.1, seed=43)[1] != held
    assert duplicates(train + [held[0]], held) == 1


def test_a_utf8_byte_order_mark_is_read_past_in_every_format(tmp_path, cli):
    """Excel's "CSV UTF-8" and Windows editors start files with a byte-order mark: the CSV header's first
    column used to be '\\ufeffprompt' ('missing prompt' on every row), the first JSONL line invalid JSON.
    validate, plan and run read them all as the same records."""
    bom = b"\xef\xbb\xbf"
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    (tmp_path / "d.jsonl").write_bytes(bom + ((chat + "\n") * 3).encode())
    (tmp_path / "d.json").write_bytes(bom + f"[{chat}, {chat}]".encode())
    (tmp_path / "d.csv").write_bytes(bom + b"prompt,completion\na,b\nc,d\n")
    assert len(read_records(tmp_path / "d.jsonl", "d.jsonl", "chat").rows) == 3
    assert len(read_records(tmp_path / "d.json", "d.json", "chat").rows) == 2
    assert len(read_records(tmp_path / "d.csv", "d.csv", "prompt_completion").rows) == 2
    for name, fmt in (("d.jsonl", "chat"), ("d.json", "chat"), ("d.csv", "prompt_completion")):
        recipe = tmp_path / f"r-{name}.yaml"
        recipe.write_text(f"task: chat\nmodel: {{base: Qwen/Qwen2.5-0.5B-Instruct}}\ndata: {{train: {name}, "
                          f"format: {fmt}}}\nbudget: {{gpu: L4}}\n")
        assert cli("validate", recipe)[0] == 0, name
        code, out, err = cli("plan", recipe, "--format", "json")
        assert code == 0, (name, out, err)
        assert json.loads(out)["data"]["examples"] == (3 if name == "d.jsonl" else 2), name


def test_a_utf16_file_is_named_as_such(tmp_path, cli):
    """PowerShell's `>` writes UTF-16: say so, and what to do, for a recipe and for a data file."""
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes("task: chat\nmodel: {base: Qwen/Qwen2.5-0.5B-Instruct}\ndata: {train: d.jsonl}\n"
                       .encode("utf-16"))
    code, out, _ = cli("validate", recipe)
    assert code == 1 and "the file is UTF-16" in out and "save it as UTF-8" in out
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    (tmp_path / "d.jsonl").write_bytes(((chat + "\n") * 2).encode("utf-16"))
    recipe.write_text("task: chat\nmodel: {base: Qwen/Qwen2.5-0.5B-Instruct}\ndata: {train: d.jsonl}\n")
    code, out, _ = cli("validate", recipe)
    assert code == 1 and "d.jsonl:1: the file is UTF-16" in out and "save it as UTF-8" in out


@pytest.mark.parametrize("name", ["d.parquet", "d.json"])
def test_validate_names_the_file_of_a_bad_row(tmp_path, cli, name):
    """A bad Parquet row or JSON record is located with its file, as a JSONL line is (`d.jsonl:3`): it
    said only 'row 2: missing 'completion''."""
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": None}]
    if name.endswith(".parquet"):
        pytest.importorskip("datasets").Dataset.from_list(rows).to_parquet(str(tmp_path / name))
    else:
        (tmp_path / name).write_text(json.dumps(rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: chat\nmodel: {{base: Qwen/Qwen2.5-0.5B-Instruct}}\ndata: {{train: {name}, "
                      f"format: prompt_completion}}\nbudget: {{gpu: L4}}\n")
    code, out, err = cli("validate", recipe)
    word = "row" if name.endswith(".parquet") else "record"
    assert code != 0 and f"{name} {word} 2: " in out + err, out + err


def test_a_template_that_renders_an_empty_completion_is_caught_before_the_run(tmp_path, cli):
    """`recipe run` refuses a record whose completion template renders empty; validate said ok and the plan
    counted it (3 examples where the run, with data.on_error: skip, trains on 2)."""
    (tmp_path / "d.csv").write_text("q,a\nhello,world\nfoo,\nbar,baz\n")
    recipe = tmp_path / "r.yaml"
    text = ("task: chat\nmodel: {base: Qwen/Qwen2.5-0.5B-Instruct}\nbudget: {gpu: L4}\ndata: {train: d.csv, "
            "format: template, template: {prompt: 'Q: {{ q }}', completion: ' {{ a }}'}%s}\n")
    recipe.write_text(text % "")
    code, out, err = cli("validate", recipe)
    assert code != 0 and "d.csv:3: the completion template renders empty" in out + err, out + err
    code, out, err = cli("plan", recipe)
    assert code != 0 and "d.csv:3: the completion template renders empty" in out + err, out + err
    recipe.write_text(text % ", on_error: skip")
    code, out, err = cli("plan", recipe, "--format", "json")
    assert code == 0 and json.loads(out)["data"]["examples"] == 2, out + err


def test_json_lines_in_a_json_file_is_named_as_such(tmp_path, cli):
    """A .json file holding JSON Lines (as `datasets` writes with to_json) said 'record 2: invalid JSON
    (Extra data)'; it says what the file holds and what to do."""
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    (tmp_path / "d.json").write_text((chat + "\n") * 3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: chat\nmodel: {base: Qwen/Qwen2.5-0.5B-Instruct}\ndata: {train: d.json}\nbudget: {gpu: L4}\n")
    code, out, err = cli("validate", recipe)
    assert code != 0 and "holds JSON Lines (one record per line), not a JSON array of records: rename it d.jsonl" \
        in out + err and "Extra data" not in out + err, out + err
    with pytest.raises(RecipeError) as info:
        read_records(tmp_path / "d.json", "d.json", "chat")
    assert "rename it d.jsonl" in info.value.message
    (tmp_path / "d.json").write_text("[" + chat + "]\n{")  # a broken array stays a JSON error
    assert "invalid JSON" in cli("validate", recipe)[1]
