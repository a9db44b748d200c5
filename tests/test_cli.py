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
    assert code == 1 and "Traceback" not in err and "bad.yaml:3:" in err and not out  # errors on stderr


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


def test_output_paths_that_cannot_be_written_are_clean_errors(cli, tmp_path):
    """schema -o and launch -o onto a directory, under a file or into a place that is not writable:
    exit 2, the path and what to do, no traceback, nothing written; a missing folder is created."""
    (tmp_path / "adir").mkdir()
    (tmp_path / "afile").write_text("mine\n")
    for args, words in [(("schema", "-o", tmp_path / "adir"), "is a directory"),
                        (("schema", "-o", tmp_path / "afile" / "s.json"), "not a directory"),
                        (("launch", RECIPE, "-o", tmp_path / "afile"), "not a directory"),
                        (("launch", RECIPE, "-o", tmp_path / "afile" / "sub"), "not a directory")]:
        code, out, err = cli(*args)
        assert code == 2 and words in err and "Traceback" not in out + err, (args, out, err)
        assert f"-o {args[-1]}" in err
    assert (tmp_path / "afile").read_text() == "mine\n" and list((tmp_path / "adir").iterdir()) == []
    assert cli("schema", "-o", tmp_path / "new" / "s.json")[0] == 0
    assert (tmp_path / "new" / "s.json").read_text().startswith("{")


def test_a_reader_that_goes_away_is_not_a_traceback(tmp_path):
    """`recipe validate DIR | head -1`: the pipe closes early; the command stops quietly (exit 1, as
    rich does for `recipe plan`), without a BrokenPipeError traceback."""
    import subprocess
    import sys

    for i in range(400):
        (tmp_path / f"r{i:03}.yaml").write_text("task: chat\n")
    for args in (["validate", str(tmp_path)], ["schema"]):
        proc = subprocess.Popen([sys.executable, "-m", "recipe_ft", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdout.readline()
        proc.stdout.close()  # the reader goes away
        err = proc.stderr.read().decode()
        proc.wait()
        assert "Traceback" not in err and "BrokenPipeError" not in err, err
        assert proc.returncode in (0, 1), (args, proc.returncode)


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


def test_a_file_where_a_folder_is_expected_is_named_as_a_file(cli, tmp_path):
    """eval --adapter FILE and export FILE said 'no such directory' of a file that exists."""
    (tmp_path / "adapter_model.safetensors").write_bytes(b"x")
    code, _, err = cli("eval", RECIPE, "--adapter", tmp_path / "adapter_model.safetensors")
    assert code == 2 and "a file; give the adapter's folder" in err and "no such" not in err
    code, _, err = cli("export", tmp_path / "adapter_model.safetensors")
    assert code == 2 and "a file; give the run's folder" in err
    code, _, err = cli("eval", RECIPE, "--adapter", tmp_path / "missing")
    assert code == 2 and "no such directory" in err
