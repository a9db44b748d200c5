"""The command line's own behaviour: help, version, usage mistakes (exit 2, "did you mean"), exit codes."""

from pathlib import Path

import pytest

from recipe_ft import __version__

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "support-triage-llama3-8b.yaml"


def test_no_command_prints_the_commands(cli):
    code, out, err = cli()
    assert code == 0 and err == ""
    for command in ("validate", "plan", "run", "launch", "eval", "export", "bench", "demo", "calibrate", "schema"):
        assert f"\n    {command}" in out
    assert "--worker" not in out


def test_version(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"recipe {__version__}"


def test_command_help_uses_the_docstring_and_hides_the_worker_flag(cli):
    code, out, _ = cli("run", "--help")
    assert code == 0
    assert "Train: execute a plan on this machine" in out and "--resume" in out
    assert "--worker" not in out


def test_mistyped_command_suggests_the_nearest(cli):
    code, out, err = cli("plna", str(RECIPE))
    assert code == 2 and out == ""
    assert "invalid choice: 'plna'" in err and "did you mean 'plan'?" in err
    assert "Traceback" not in err


def test_mistyped_option_suggests_the_nearest_and_shows_the_command_usage(cli):
    code, out, err = cli("plan", str(RECIPE), "--formt", "json")
    assert code == 2 and out == ""
    assert err.startswith("usage: recipe plan ")
    assert "unrecognized arguments: --formt json" in err and "did you mean --format?" in err


def test_two_mistyped_options_each_get_a_suggestion(cli):
    code, _, err = cli("validate", str(RECIPE), "--quite", "--st", "method.rank=8")
    assert code == 2
    assert "did you mean --quiet for --quite, --set for --st?" in err


def test_options_are_not_abbreviated(cli):
    """`--form` is a typo, not --format: a prefix must not half-work."""
    code, _, err = cli("plan", str(RECIPE), "--form", "json")
    assert code == 2 and "unrecognized arguments: --form" in err


def test_invalid_choice_suggests_the_nearest(cli):
    code, _, err = cli("plan", str(RECIPE), "--format", "jsno")
    assert code == 2 and "invalid choice: 'jsno'" in err and "did you mean 'json'?" in err


@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "argument --rate: 0 is below the minimum, 0.001"),
    (["--requests", "many"], "argument --requests: 'many' is not an integer"),
    (["--warmup", "-1"], "argument --warmup: -1 is below the minimum, 0"),
])
def test_bench_numbers_are_checked_before_anything_runs(cli, args, message):
    code, _, err = cli("bench", str(RECIPE), *args)
    assert code == 2 and message in err


def test_missing_argument(cli):
    code, _, err = cli("plan")
    assert code == 2 and "the following arguments are required: recipe" in err


def test_options_after_and_before_the_argument_and_repeated_set(cli):
    code, out, _ = cli("plan", "--set", "method.rank=8", str(RECIPE), "--format=json", "--set", "method.alpha=16")
    assert code == 0
    assert '"rank": 8' in out and '"alpha": 16' in out


def test_user_errors_exit_with_their_code_and_no_traceback(cli, tmp_path):
    code, _, err = cli("plan", str(tmp_path / "missing.yaml"))
    assert code == 2 and "Traceback" not in err and "missing.yaml" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: classification\nmodel: {base: nope}\nmethod: {rnak: 8}\n")
    code, out, err = cli("plan", str(bad))
    assert code == 1 and "Traceback" not in err and "bad.yaml:3:" in out


def test_interrupt_exits_130_without_a_traceback(cli, monkeypatch):
    from recipe_ft.cli import commands

    def interrupted(**_):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "validate", interrupted)
    code, _, err = cli("validate", str(RECIPE))
    assert code == 130 and err.strip() == "interrupted"


@pytest.mark.parametrize("command", ["validate", "plan", "run", "launch", "eval", "export", "bench", "demo",
                                     "calibrate", "schema"])
def test_every_command_has_help(cli, command):
    """argparse formats help text with %-interpolation: a stray % in a help string breaks -h."""
    code, out, err = cli(command, "-h")
    assert code == 0 and out.startswith(f"usage: recipe {command} ") and err == ""


def test_commands_that_load_models_without_the_training_stack_say_so_in_one_line(cli, tmp_path, monkeypatch):
    """demo writes nothing; eval and export --merge stop before loading (they were tracebacks)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tokenizers", "peft") else real(name, *a))
    for args in ((), ("--preference",)):
        code, out, err = cli("demo", tmp_path / "qs", *args)
        assert code == 1 and "Traceback" not in out + err
        assert "`recipe demo` needs the training stack (tokenizers missing)" in err
        assert "pip install 'recipe-ft[train]'" in err and not (tmp_path / "qs").exists()
    code, out, err = cli("eval", RECIPE)
    assert code == 1 and "`recipe eval` needs the training stack (peft missing)" in err
    code, out, err = cli("export", tmp_path, "--merge")
    assert code == 1 and "`recipe export --merge` needs the training stack (peft missing)" in err
