"""`recipe validate`, `--set` overrides, discovery, exit codes and the JSON Schema."""

import json
import shutil
from pathlib import Path

import pytest

from recipe_ft.compiler.pipeline import check_file
from recipe_ft.schemas.errors import RecipeError
from recipe_ft.schemas.json_schema import SCHEMA_FILE, recipe_schema_text
from recipe_ft.schemas.recipe import Recipe


def load_recipe(path: str, overrides: list[str] = ()):
    """A valid recipe and its check result, or RecipeError carrying every problem."""
    result = check_file(path, overrides)
    if not result.ok:
        raise RecipeError(f"{path}: invalid recipe", result.problems)
    return result.recipe, result


ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p for p in (ROOT / "recipes").iterdir() if p.suffix in (".yaml", ".toml"))

MINIMAL = """\
task: chat
model:
  base: Qwen/Qwen2.5-0.5B-Instruct
data:
  train: train.jsonl
"""


@pytest.fixture
def minimal(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n")
    path = tmp_path / "r.yaml"
    path.write_text(MINIMAL)
    return path


def test_examples_are_many_and_varied():
    assert len(RECIPES) >= 5
    assert any(p.suffix == ".toml" for p in RECIPES)
    tasks = {load_recipe(str(p))[0].task for p in RECIPES}
    assert {"classification", "extraction", "generation"} <= tasks


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_example_recipe_validates_cleanly(path):
    result = check_file(str(path))
    assert result.ok, [str(p) for p in result.problems]
    assert result.problems == []  # not even a warning: sample data ships beside them
    first = path.read_text().splitlines()[0]
    assert first == f"# recipe plan recipes/{path.name}"


@pytest.mark.parametrize("path", [p for p in RECIPES if p.suffix == ".yaml"], ids=lambda p: p.name)
def test_yaml_examples_point_editors_at_the_schema(path):
    assert "# yaml-language-server: $schema=../schemas/recipe.schema.json" in path.read_text()


def test_minimal_recipe_is_valid_with_defaults(minimal):
    recipe, result = load_recipe(str(minimal))
    assert result.problems == []
    assert recipe.method.name == "auto" and recipe.method.rank == 16
    assert recipe.training.micro_batch_size == "auto" and recipe.data.format == "chat"
    with pytest.raises(Exception):
        recipe.task = "generation"  # frozen


def test_exit_codes(cli, minimal, tmp_path):
    assert cli("validate", minimal)[0] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(MINIMAL.replace("chat", "chatt"))
    code, out, err = cli("validate", bad)
    assert code == 1 and "did you mean 'chat'?" in out
    assert cli("validate", tmp_path / "missing.yaml")[0] == 2
    assert cli("validate", minimal, "--set", "no-equals-sign")[0] == 2
    assert cli("validate")[0] == 2
    assert cli("frobnicate")[0] == 2


def test_one_bad_file_among_good_ones(cli, minimal, tmp_path):
    bad = tmp_path / "sub" / "bad.toml"
    bad.parent.mkdir()
    bad.write_text('task = "chat"\n')
    code, out, err = cli("validate", tmp_path)
    assert code == 1
    assert f"{minimal}: ok" in out
    assert f"{bad}:1:1: data: required key is missing" in out
    assert "2 recipes checked: 1 valid, 1 invalid" in err


def test_directories_and_globs(cli, tmp_path, minimal):
    shutil.copy(minimal, tmp_path / "b.yml")
    (tmp_path / "notes.txt").write_text("not a recipe")
    code, out, _ = cli("validate", str(tmp_path / "*.y*ml"))
    assert code == 0 and out.count(": ok") == 2
    code, _, err = cli("validate", str(tmp_path / "*.toml"))
    assert code == 2 and "matches no recipe files" in err
    # every path that names no recipe, at once (the first one used to stop the command)
    code, out, err = cli("validate", str(tmp_path / "nope.yaml"), minimal, str(tmp_path / "*.toml"))
    assert code == 2 and not out and "2 paths name no recipe" in err
    assert "nope.yaml: no such file or directory" in err and "*.toml: the pattern matches no recipe files" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("validate", empty)[0] == 2


def test_overrides_apply_and_validate(cli, minimal):
    code, out, _ = cli("validate", minimal, "--set", "method.rank=64", "--set", "budget.gpus=[L4, A10G]")
    assert code == 0, out
    recipe, _ = load_recipe(str(minimal), ["method.rank=64", "method.targets=[q_proj, v_proj]",
                                           "economics.api_model=gpt-4o-mini",
                                           "economics.requests_per_day=100",
                                           "economics.input_tokens_per_request=10",
                                           "economics.output_tokens_per_request=5"])
    assert recipe.method.rank == 64 and recipe.method.targets == ["q_proj", "v_proj"]
    assert recipe.economics.api_model == "gpt-4o-mini"


def test_override_errors_are_located_on_the_command_line(cli, minimal):
    code, out, _ = cli("validate", minimal, "--set", "method.rank=32",
                       "--set", "method.rank=abc", "--set", "metod.rank=3", "--set", "task.x=1")
    assert code == 1
    assert out.splitlines() == [
        "--set:2:13: method.rank: should be a valid integer, got string 'abc'",
        "--set:3:1: metod: unknown key 'metod'; did you mean 'method'?",
        "--set:4:1: task.x: 'task' is a string, not a section",
    ]


def test_override_null_restores_the_default(minimal):
    recipe, _ = load_recipe(str(minimal), ["method.rank=8", "method.rank=null"])
    assert recipe.method.rank == 16


def test_override_list_items(minimal):
    recipe, _ = load_recipe(str(minimal), ["budget.gpus=[L4, T4]", "budget.gpus[1]=A10G",
                                           "budget.gpus[2]=H100-80GB"])
    assert recipe.budget.gpus == ["L4", "A10G", "H100-80GB"]
    with pytest.raises(RecipeError) as info:
        load_recipe(str(minimal), ["budget.gpus=[L4]", "budget.gpus[5]=T4"])
    assert "no list item [5]" in str(info.value.problems[0])


def test_yaml_and_toml_report_the_same_problems(tmp_path):
    yaml_text = """\
task: clasification
model:
  base: Qwen/Qwen2.5-7B-Instruct
  trust_remote_code: 1
data:
  train: a.jsonl
  fromat: chat
method:
  quantization: {bits: 3}
budget:
  gpus: [L4, A10]
  gpu: T4
"""
    toml_text = """\
task = "clasification"
[model]
base = "Qwen/Qwen2.5-7B-Instruct"
trust_remote_code = 1
[data]
train = "a.jsonl"
fromat = "chat"
[method]
quantization = {bits = 3}
[budget]
gpus = ["L4", "A10"]
gpu = "T4"
"""
    (tmp_path / "a.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                              {"role": "assistant", "content": "hello"}]}) + "\n")
    (tmp_path / "r.yaml").write_text(yaml_text)
    (tmp_path / "r.toml").write_text(toml_text)
    y = check_file(str(tmp_path / "r.yaml")).problems
    t = check_file(str(tmp_path / "r.toml")).problems
    assert [(p.key, p.message) for p in y] == [(p.key, p.message) for p in t]
    assert [(p.line) for p in y] == [1, 4, 7, 9, 12]
    assert [(p.line) for p in t] == [1, 4, 7, 9, 12]


def test_checked_in_schema_is_in_sync(cli):
    assert SCHEMA_FILE.read_text() == recipe_schema_text(), "run: recipe schema -o schemas/recipe.schema.json"
    code, out, _ = cli("schema")
    assert code == 0 and json.loads(out)["title"] == "recipe"


def test_json_schema_accepts_examples_and_rejects_typos():
    jsonschema = pytest.importorskip("jsonschema")
    from recipe_ft.compiler.pipeline import load

    schema = json.loads(SCHEMA_FILE.read_text())
    for path in RECIPES:
        jsonschema.validate(load(str(path))[0].data, schema)
    doc = load(str(RECIPES[0]))[0]
    doc.data["method"]["rnak"] = 4
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc.data, schema)


def test_precommit_hook_definition():
    from ruamel.yaml import YAML

    hooks = YAML(typ="safe").load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = hooks[0]
    assert hook["id"] == "recipe-validate" and hook["entry"].startswith("recipe validate")
    assert hook["language"] == "python"


def test_programmatic_model_rejects_unknown_keys():
    with pytest.raises(Exception) as info:
        Recipe.model_validate({"task": "chat", "model": {"base": "x", "bsae": 1}, "data": {"train": "a.jsonl"}})
    assert "bsae" in str(info.value)


def test_pinned_gpu_is_matched_to_the_candidates_by_catalog_name(cli, minimal):
    """budget.gpu 'h100' is the catalog's H100-80GB, which budget.gpus lists: no conflict; an unknown
    budget.gpu is reported once, as unknown, not also as missing from the candidates."""
    base = ["--set", "budget.gpus=[L4, H100-80GB]"]
    for alias in ("H100", "h100-80gb"):
        code, out, _ = cli("validate", minimal, *base, "--set", f"budget.gpu={alias}")
        assert code == 0, out
    code, out, _ = cli("validate", minimal, *base, "--set", "budget.gpu=Z99")
    assert code == 1 and "unknown GPU 'Z99'" in out and "not among the candidates" not in out
    code, out, _ = cli("validate", minimal, *base, "--set", "budget.gpu=A10G")
    assert code == 1 and "gpu 'A10G' is not among the candidates in budget.gpus" in out


def test_a_byte_order_mark_is_read_as_utf8_in_toml_as_in_yaml(cli, tmp_path, minimal):
    """Editors on Windows save UTF-8 with a BOM; YAML recipes read fine with one, so TOML ones must."""
    toml = tmp_path / "r.toml"
    toml.write_bytes(b"\xef\xbb\xbf" + b'task = "chat"\n[model]\nbase = "Qwen/Qwen2.5-0.5B-Instruct"\n'
                                        b'[data]\ntrain = "train.jsonl"\n[method]\nrnak = 8\n')
    code, out, _ = cli("validate", toml)
    assert code == 1 and out.splitlines() == [f"{toml}:7:1: method.rnak: unknown key 'rnak'; did you mean 'rank'?"]
    yaml = tmp_path / "b.yaml"
    yaml.write_bytes(b"\xef\xbb\xbf" + minimal.read_bytes())
    assert cli("validate", yaml)[0] == 0


def test_eval_json_schema_file_is_checked(cli, minimal, tmp_path):
    """A missing schema file is warned about (`recipe run` needs it, after loading the model); one that is
    not a JSON object is an error; a schema the metric never reads is warned about."""
    extract = ["--set", "task=extraction"]
    code, out, _ = cli("validate", minimal, *extract, "--set", "eval.json_schema=missing.json")
    assert code == 0 and "--set:2:" in out and "eval.json_schema: warning: file not found: missing.json" in out
    (tmp_path / "bad.json").write_text("{not json")
    code, out, _ = cli("validate", minimal, *extract, "--set", "eval.json_schema=bad.json")
    assert code == 1 and "eval.json_schema: bad.json is not a JSON Schema (invalid JSON" in out
    (tmp_path / "s.json").write_text('{"type": "object"}')
    assert cli("validate", minimal, *extract, "--set", "eval.json_schema=s.json")[0] == 0
    code, out, _ = cli("validate", minimal, "--set", "eval.json_schema=s.json")
    assert code == 0 and "warning: only the json_fields metric uses it" in out


def test_missing_train_file_is_an_error_when_nothing_declares_the_size(cli, minimal, tmp_path):
    """Without the file and without data.examples a plan has nothing to size (it used to plan 0 examples,
    0 steps, $0 and exit 0; a mixture's plan failed with an unlocated 'no such data file')."""
    (tmp_path / "train.jsonl").unlink()
    code, out, _ = cli("validate", minimal)
    assert code == 1 and f"{minimal}:5:10: data.train: file not found: train.jsonl" in out
    assert "declare data.examples" in out
    code, out, err = cli("plan", minimal)
    assert code == 1 and f"{minimal}:5:10: data.train: file not found" in err and "Traceback" not in out + err
    code, out, _ = cli("validate", minimal, "--set", "data.examples=1000")
    assert code == 0 and "warning: file not found" in out
    mix = ["--set", "data.train=[{path: a.jsonl, weight: 1}, {path: b.jsonl, weight: 1}]"]
    code, _, err = cli("plan", minimal, *mix, "--set", "data.examples=1000")
    assert code == 1 and "--set:1:" in err and "data.train[0].path: file not found: a.jsonl" in err
    assert "data.train[1].path: file not found: b.jsonl" in err
    code, out, err = cli("plan", minimal, *mix, "--set", "data.examples=1000", "--set", "data.tokens_per_example=100")
    assert code == 0, out + err


def test_message_wording_for_hub_names_overrides_and_records(cli, minimal, tmp_path):
    """A bad hub name is reported once, in words (not a regular expression); --set messages name list
    items as the recipe does and say how long the list is; a record that is not an object is named in
    JSON's words, not Python's."""
    code, out, _ = cli("validate", minimal, "--set", "data.train=[{hub: not a hub id}]")
    assert code == 1 and out.splitlines() == [
        "--set:1:12: data.train[0].hub: 'not a hub id' is not a hub dataset name; expected org/name"]
    code, out, _ = cli("validate", minimal, "--set", "budget.gpus=[L4]", "--set", "budget.gpus[5]=T4",
                       "--set", "method.rank=8", "--set", "method.rank.x=1")
    assert code == 1 and out.splitlines() == [
        "--set:2:1: budget.gpus[5]: no list item [5] here (the list has 1 item; [1] appends one)",
        "--set:4:1: method.rank.x: 'rank' is an integer, not a section"]
    (tmp_path / "train.jsonl").write_text('"text"\nnull\n')
    code, out, _ = cli("validate", minimal)
    assert code == 1 and "train.jsonl:1: expected an object, got string" in out
    assert "train.jsonl:2: expected an object, got null" in out


def test_yaml_merge_keys_are_read_and_located(cli, tmp_path, minimal):
    """`<<: *defaults` (a YAML merge key) used to end in a traceback; merged keys are located where the
    anchored mapping writes them."""
    path = tmp_path / "m.yaml"
    path.write_text(MINIMAL + "defaults: &d\n  rank: 8\n  rnak: 4\nmethod:\n  <<: *d\n  name: lora\n")
    code, out, err = cli("validate", path)
    assert "Traceback" not in out + err
    assert code == 1 and f"{path}:6:1: defaults: unknown key 'defaults'" in out
    assert f"{path}:8:3: method.rnak: unknown key 'rnak'; did you mean 'rank'?" in out
    path.write_text(MINIMAL + "method:\n  <<: [{rank: 8}, {alpha: 4}]\n  name: lora\n")
    assert cli("validate", path)[0] == 0


def test_yaml_tags_are_named_in_messages(cli, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(MINIMAL + "name: !!python/object:os.system echo\nmethod: {rank: !custom 16}\n")
    code, out, err = cli("validate", path)
    assert code == 1 and "TaggedScalar" not in out
    assert f"{path}:6:7: name: should be a valid string, got YAML-tagged value !!python/object:os.system 'echo'" in out
    assert "method.rank: should be a valid integer, got YAML-tagged value !custom '16'" in out


def test_a_recipe_that_is_not_a_regular_file_is_refused_not_waited_on(cli, tmp_path):
    """A named pipe called r.yaml: plan used to block forever reading it; validate called it missing."""
    import os

    fifo = tmp_path / "r.yaml"
    os.mkfifo(fifo)
    for command in ("plan", "validate"):
        code, out, err = cli(command, fifo)
        assert code == 2 and f"{fifo}: not a regular file" in err, (command, err)
    recipe = tmp_path / "ok.yaml"
    recipe.write_text(MINIMAL.replace("train.jsonl", "train.jsonl\n  examples: 100"))
    os.mkfifo(tmp_path / "t.jinja")
    os.mkfifo(tmp_path / "s.json")
    code, out, _ = cli("validate", recipe, "--set", "data.chat_template=t.jinja", "--set", "task=extraction",
                       "--set", "eval.json_schema=s.json")
    assert code == 1 and "data.chat_template: t.jinja is not a regular file" in out
    assert "eval.json_schema: s.json is not a regular file" in out


def test_source_roles_map_to_known_roles_and_only_where_read(cli, minimal, tmp_path):
    """roles maps a sharegpt source's role names onto system / user / assistant / tool: a target that is
    none of them is an error at the recipe's key, and roles on a source whose format ignores them a warning."""
    (tmp_path / "c.jsonl").write_text(json.dumps({"conversations": [{"from": "customer", "value": "hi"},
                                                                    {"from": "agent", "value": "hello"}]}) + "\n")
    code, out, _ = cli("validate", minimal, "--set",
                       "data.train=[{path: c.jsonl, format: sharegpt, roles: {customer: usr, agent: assistant}}]")
    assert code == 1 and "data.train[0].roles.customer: unknown value 'usr'; expected one of: system, user, " \
                         "assistant, tool; did you mean 'user'?" in out
    code, out, _ = cli("validate", minimal, "--set", "data.train=[{path: train.jsonl, roles: {usr: user}}]")
    assert code == 0 and "data.train[0].roles: warning: roles maps sharegpt role names; format 'chat' " \
                         "does not read it" in out
    code, out, _ = cli("validate", minimal, "--set",
                       "data.train=[{path: c.jsonl, format: sharegpt, roles: {customer: user, agent: assistant}}]")
    assert code == 0 and "warning" not in out, out


def test_a_cross_field_rule_does_not_blame_a_key_that_has_its_own_error(cli, minimal):
    """serving.sla {p95_latency_ms: 0} sets a target, a wrong one: one error, not also 'sets no target'."""
    code, out, _ = cli("validate", minimal, "--set", "serving.sla={p95_latency_ms: 0}")
    assert code == 1 and out.splitlines() == [
        "--set:1:13: serving.sla.p95_latency_ms: should be greater than 0, got integer 0"], out


@pytest.mark.parametrize("value", ["[{path: 3}]", "[{hub: [a]}]", "[{disk: {}}, {path: train.jsonl}]",
                                   "[{path: train.jsonl, columns: [a]}]", "[{path: train.jsonl, roles: 5}]"])
def test_a_source_of_the_wrong_shape_is_a_located_error_not_a_crash(cli, minimal, value):
    code, out, err = cli("validate", minimal, "--set", f"data.train={value}")
    assert code == 1 and "--set:1:" in out and "Traceback" not in out + err


def test_found_by_fuzzing_recipes_no_crash(cli, minimal, tmp_path):
    """Values a fuzzer put in the example recipes that ended in a traceback."""
    code, out, err = cli("validate", minimal, "--set", "data.format=[]", "--set", "data.system_prompt=hi")
    assert code == 1 and "data.format:" in out and "Traceback" not in out + err
    (tmp_path / "b.jsonl").write_text((tmp_path / "train.jsonl").read_text())
    code, out, err = cli("plan", minimal, "--set", "data.train=[{path: train.jsonl, weight: 1e308}, "
                                                   "{path: b.jsonl, weight: 1e308}]")
    assert code == 0 and "Traceback" not in out + err, out + err


def test_mistakes_only_the_model_reveals_are_found_by_validate_all_at_once(cli, minimal):
    """An unknown target module, packing under eager attention and bf16-pure under DeepSpeed passed
    `recipe validate` and `recipe plan` then named only the first; both now report all three, each once
    with its key (not 'method.targets: method.targets: ...')."""
    args = ["--set", "method.targets=[q_proj, vv_proj]", "--set", "training.packing=true",
            "--set", "training.attention=eager", "--set", "training.precision=bf16-pure",
            "--set", "distributed.strategy=deepspeed"]
    for command in ("validate", "plan"):
        code, out, err = cli(command, minimal, *args)
        assert code == 1 and "Traceback" not in out + err, (command, out, err)
        out = out if command == "validate" else err  # validate's findings on stdout, as linters do; plan's on stderr
        lines = out.splitlines()
        assert any(l.startswith("--set:1:16: method.targets: no module named 'vv_proj' (did you mean 'v_proj'?)")
                   for l in lines), (command, out)
        assert any(l.startswith("--set:2:18: training.packing: with eager attention") for l in lines), (command, out)
        assert any(l.startswith("--set:4:20: training.precision: training.precision bf16-pure cannot run under")
                   or l.startswith("--set:4:20: training.precision: bf16-pure cannot run under") for l in lines), out
        assert len(lines) == 3, (command, out)


def test_a_byte_order_mark_in_a_chat_template_or_json_schema_file_is_not_content(tmp_path, minimal):
    """A Jinja chat template saved with a BOM put U+FEFF at the start of every rendered prompt; a JSON
    Schema saved with one was invalid JSON."""
    from recipe_ft.compiler import chat_templates
    from recipe_ft.runtime.evaluate import load_schema

    (tmp_path / "chat.jinja").write_bytes(b"\xef\xbb\xbf{% for m in messages %}{{ m.content }}{% endfor %}")
    assert not chat_templates.resolve("chat.jinja", tmp_path).startswith("\ufeff")
    (tmp_path / "s.json").write_bytes(b'\xef\xbb\xbf{"type": "object"}')
    recipe, _ = load_recipe(str(minimal), ["task=extraction", "eval.json_schema=s.json"])
    plan = type("P", (), {"recipe": recipe})()
    assert load_schema(plan, tmp_path) == {"type": "object"}
