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


def _section_commands(title: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```sh\n(.+?)\n```", section, re.S):
        lines += [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]
    return lines


def test_readme_run_and_export_commands_run_literally_in_order(tmp_path):
    """The commands of "Run" and "Evaluate, gate, merge and serve", as written, in a fresh folder.
    `recipe ...` lines run; `sh` and `ollama` lines need vLLM / Ollama, so the files they name must
    exist and the scripts must parse."""
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    pytest.importorskip("trl")
    commands = _section_commands("Run") + _section_commands("Evaluate, gate, merge and serve")
    assert commands[0].startswith("recipe demo quickstart") and any("recipe export" in c for c in commands)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    assert shutil.which("recipe", path=env["PATH"]), "the `recipe` command is not installed"
    for command in commands:
        words = command.split()
        if words[0] == "sh":
            assert (tmp_path / words[1]).is_file(), command
            assert subprocess.run(["sh", "-n", words[1]], cwd=tmp_path).returncode == 0, command
        elif words[0] == "ollama":
            assert (tmp_path / words[words.index("-f") + 1]).is_file(), command
        else:
            assert words[0] == "recipe", command
            done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True)
            assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])


def test_readme_examples_table_lists_every_recipe():
    text = (ROOT / "README.md").read_text()
    table = text.split("each headed by the command that uses it:", 1)[1].split("\n### ", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)` \|", table, re.M))
    files = {p.name for p in (ROOT / "recipes").iterdir() if p.suffix in (".yaml", ".toml")}
    assert listed == files


def test_readme_validate_example_lists_the_schemas_values():
    from typing import get_args

    from recipe_ft.schemas.recipe import MethodName, Task

    text = (ROOT / "README.md").read_text()
    tasks = re.search(r"task: unknown value 'clasification'; expected one of: ([^;]+);", text).group(1)
    methods = re.search(r"method.name: unknown value 'qlor'; expected one of: ([^;]+);", text).group(1)
    assert tasks.split(", ") == list(get_args(Task)) and methods.split(", ") == list(get_args(MethodName))
    checked = re.search(r"(\d+) recipes checked: (\d+) valid, 1 invalid", text)
    files = [p for p in (ROOT / "recipes").iterdir() if p.suffix in (".yaml", ".toml")]
    assert (int(checked.group(1)), int(checked.group(2))) == (len(files) + 1, len(files))
