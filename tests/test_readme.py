"""The README's two quickstart commands stay true: CI runs the test command, the plan command's recipe exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", quick)


def test_readme_has_two_commands():
    assert len(_commands()) == 2


def test_ci_runs_the_readme_test_command():
    test_command = _commands()[1]
    assert "pytest" in test_command and "torch==2.13.0" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_plan_command_names_a_real_recipe():
    plan = _commands()[0]
    recipe = re.search(r"recipe plan (\S+)", plan).group(1)
    assert (ROOT / recipe).is_file()
