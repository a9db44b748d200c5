"""Malformed documents and values never produce a traceback: always exit 1 with located messages."""

import re
import subprocess
import sys

from hypothesis import HealthCheck, given, settings, strategies as st

from recipe_ft.compiler.pipeline import check_file

LOCATED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): \S")

VALID = """\
task: classification
model:
  base: meta-llama/Meta-Llama-3-8B-Instruct
data:
  train: train.jsonl
  format: chat
method:
  name: qlora
  rank: 16
training:
  epochs: 3
  micro_batch_size: auto
budget:
  gpus: [L4, A10G]
"""

KEYS = ["task", "model", "model.base", "data", "data.train", "data.format", "method", "method.name",
        "method.rank", "method.targets", "method.quantization", "training.epochs",
        "training.micro_batch_size", "training.gradient_checkpointing", "budget.gpus", "budget.gpu",
        "eval", "eval.min_score", "economics", "nonsense", "method.nonsense", "output.dir"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def _check(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = check_file(str(path))  # must not raise
    if result.ok:
        return
    assert result.errors
    for problem in result.problems:
        assert LOCATED.match(str(problem)), str(problem)
        assert problem.line >= 1 and problem.col >= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_random_text_as_yaml(tmp_path, text):
    _check(tmp_path, "r.yaml", text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_random_text_as_toml(tmp_path, text):
    _check(tmp_path, "r.toml", text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEYS), values), min_size=1, max_size=4))
def test_wrong_values_in_a_valid_recipe(tmp_path, edits):
    from ruamel.yaml import YAML
    import io

    yaml = YAML(typ="safe", pure=True)
    data = yaml.load(VALID)
    for key, value in edits:
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    out = io.StringIO()
    yaml.dump(data, out)
    _check(tmp_path, "r.yaml", out.getvalue())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.text(max_size=10)), min_size=1, max_size=3))
def test_random_overrides(tmp_path, sets):
    (tmp_path / "r.yaml").write_text(VALID)
    from recipe_ft.schemas.errors import UsageError

    try:
        result = check_file(str(tmp_path / "r.yaml"), [f"{k}={v}" for k, v in sets])
    except UsageError:
        return
    for problem in result.problems:
        assert LOCATED.match(str(problem)) or str(problem).startswith("--set:")


def test_cli_process_exits_1_without_traceback(tmp_path):
    cases = {"a.yaml": "task: [\n", "b.yaml": "task: chat\nmodel: 3\n", "c.toml": "task = \n",
             "d.yaml": "\x00\x01", "e.toml": 'task = "x"\n[model]\nbase = 1\n'}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        proc = subprocess.run([sys.executable, "-m", "recipe_ft", "validate", "-q", name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1, (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
        assert any(LOCATED.match(line) for line in proc.stdout.splitlines()), proc.stdout
