"""`recipe calibrate`: per-GPU speed factors fitted from run reports (made here, as `recipe run` on a
GPU would write them) move later plans toward the measured hours, and plans name their calibration."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from recipe_ft.compiler import calibration
from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.runtime import run_report

RECIPE = ("task: chat\nmodel:\n  base: mistralai/Mistral-7B-v0.1\ndata:\n  train: train.jsonl\n  examples: 5000\n"
          "  tokens_per_example: 1000\nmethod:\n  name: qlora\nbudget:\n  gpu: A100-80GB\n")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A repository (its root has .git) with a recipe in a subfolder."""
    monkeypatch.delenv("RECIPE_CALIBRATION", raising=False)
    (tmp_path / ".git").mkdir()
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "train.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}\n')
    (recipes / "r.yaml").write_text(RECIPE)
    return tmp_path


def fake_run(run_dir: Path, plan, speed: float, steps: int, device="NVIDIA A100-SXM4-80GB",
             kind="torch.cuda.max_memory_allocated") -> float:
    """A run report for `steps` steps of `plan` that ran `speed` x as fast as modelled; its hours."""
    modelled = sum(plan.time.step_seconds.values()) / plan.time.calibration_factor
    wall = modelled * steps / speed
    result = SimpleNamespace(
        measured={"wall_seconds": wall, "steps": steps, "tokens": 1000 * steps, "tokens_per_second": 1000 * steps / wall,
                  "train_loss": 1.0, "peak_memory_bytes": 10 * 2**30, "peak_memory_kind": kind, "device": device},
        interrupted=False, adapter_dir=None, resumed_from=None, data_counts={}, loss_curve=[], evaluation={})
    run_report.write(run_dir, run_report.build(plan, result, "0" * 64))
    return wall / 3600


def test_a_resumed_run_counts_only_the_steps_it_trained(project):
    # 100 steps in all, the last 20 in this report's session: 20 steps over its wall time, not 100
    plan = compile_file(project / "recipes" / "r.yaml").plan
    run_dir = project / "runs" / "resumed"
    fake_run(run_dir, plan, speed=1.0, steps=20)
    data = json.loads((run_dir / "run_report.json").read_text())
    data["measured"].update(steps=100, steps_run=20)
    (run_dir / "run_report.json").write_text(json.dumps(data))
    m = calibration.read_run(run_dir)
    assert m.steps == 20 and m.ratio == pytest.approx(1.0)
    data["measured"].update(steps_run=0, wall_seconds=0.0)  # resumed at its last checkpoint: nothing trained
    (run_dir / "run_report.json").write_text(json.dumps(data))
    assert calibration.read_run(run_dir) == f"{run_dir}: no training step in the run's last session"


def test_calibration_moves_later_plans_toward_measured_hours(cli, project):
    recipe = project / "recipes" / "r.yaml"
    before = compile_file(str(recipe)).plan
    assert before.time.calibration is None
    runs = []
    for i, speed in enumerate((0.55, 0.6, 0.65)):
        d = project / "runs" / f"run{i}"
        fake_run(d, before, speed, steps=20 + i)
        runs.append(d)
    code, out, err = cli("calibrate", *runs, cwd=project)
    assert code == 0, out + err
    saved = json.loads((project / ".recipe" / "calibration.json").read_text())
    assert saved["gpus"]["A100-80GB"]["factor"] == pytest.approx(0.6, rel=1e-3)
    assert "A100-80GB: 3 run(s)" in out

    after = compile_file(str(recipe)).plan
    measured_train_hours = (before.time.hours - before.time.setup_hours) / 0.6
    assert abs(after.time.hours - after.time.setup_hours - measured_train_hours) < 0.01 * measured_train_hours
    assert after.time.hours > before.time.hours and after.cost.usd > before.cost.usd
    assert after.time.calibration.startswith("calibrated on 3 runs of this repository on A100-80GB")
    assert after.time.calibration in after.time.assumptions
    assert after.time.calibration_factor == pytest.approx(0.6, rel=1e-3)

    # a run of the calibrated plan refits without compounding the factor
    fake_run(project / "runs" / "run3", after, 0.6 / 0.6, steps=30)  # as fast as the calibrated plan said
    code, out, _ = cli("calibrate", project / "runs" / "run3", cwd=project)
    assert code == 0
    entry = json.loads((project / ".recipe" / "calibration.json").read_text())["gpus"]["A100-80GB"]
    assert len(entry["runs"]) == 4 and entry["factor"] == pytest.approx(0.6, rel=1e-2)


def test_other_gpus_and_ignored_calibration_are_untouched(cli, project, monkeypatch):
    recipe = project / "recipes" / "r.yaml"
    plan = compile_file(str(recipe)).plan
    fake_run(project / "runs" / "a", plan, 0.5, steps=10)
    assert cli("calibrate", project / "runs" / "a", cwd=project)[0] == 0
    on_h100 = compile_file(str(recipe), ["budget.gpu=H100-80GB"]).plan
    assert on_h100.time.calibration is None and on_h100.time.calibration_factor == 1.0
    monkeypatch.setenv("RECIPE_CALIBRATION", "off")
    assert compile_file(str(recipe)).plan.time.calibration is None


def test_cpu_runs_and_missing_reports_are_refused_clearly(cli, project):
    plan = compile_file(str(project / "recipes" / "r.yaml")).plan
    fake_run(project / "runs" / "cpu", plan, 0.01, steps=5, device="cpu", kind="peak RSS (CPU)")
    code, out, err = cli("calibrate", project / "runs" / "cpu", cwd=project)
    assert code != 0 and "trained on a CPU" in err and "Traceback" not in err
    assert not (project / ".recipe" / "calibration.json").exists()
    code, out, err = cli("calibrate", project / "nowhere", cwd=project)
    assert code != 0 and "no run_report.json" in err


def test_a_run_on_another_gpu_than_planned_is_skipped(project):
    plan = compile_file(str(project / "recipes" / "r.yaml")).plan
    fake_run(project / "runs" / "h", plan, 1.0, steps=5, device="H100-80GB")
    got = calibration.read_run(project / "runs" / "h")
    assert isinstance(got, str) and "ran on H100-80GB, planned for A100-80GB" in got


def test_a_broken_calibration_file_is_a_located_error(project):
    (project / ".recipe").mkdir()
    (project / ".recipe" / "calibration.json").write_text("{not json")
    from recipe_ft.schemas.errors import RecipeError

    with pytest.raises(RecipeError, match="not a calibration file"):
        compile_file(str(project / "recipes" / "r.yaml"))


def test_a_plan_is_stale_once_the_calibration_it_used_changes(cli, project):
    from recipe_ft.compiler import lock

    recipe = project / "recipes" / "r.yaml"
    before = compile_file(str(recipe)).plan
    lock.write(before, project / "plan.json")
    assert lock.staleness(lock.read(project / "plan.json")) == []
    fake_run(project / "runs" / "run0", before, 0.5, steps=20)
    assert cli("calibrate", project / "runs" / "run0", cwd=project)[0] == 0
    reasons = lock.staleness(lock.read(project / "plan.json"))
    assert any("speed calibration for A100-80GB changed" in r and "x 0.5 now" in r for r in reasons), reasons
    calibrated = compile_file(str(recipe)).plan  # planned with the calibration: fresh again
    lock.write(calibrated, project / "plan.json")
    assert lock.staleness(lock.read(project / "plan.json")) == []


def test_a_report_that_is_not_one_says_what_is_wrong_in_words(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for text, words in (("{bad", "invalid JSON"), ("[]", "a JSON object"),
                        ('{"measured": {}}', "no 'planned_vs_measured'"), ('{"x": 1}', "no 'planned_vs_measured'")):
        (run / "run_report.json").write_text(text)
        code, out, err = cli("calibrate", run)
        assert code == 1 and words in err and "Error" not in err.replace("error:", ""), (text, err)
    good = json.loads('{"planned_vs_measured": {"tokens_per_second": {}}, "measured": 5}')
    for broken in (good, dict(good, measured={"peak_memory_kind": "torch.cuda", "steps": 3, "wall_seconds": 9},
                                planned_vs_measured={"time_model": {"modelled_seconds_per_step": 1}})):
        (run / "run_report.json").write_text(json.dumps(broken))
        code, out, err = cli("calibrate", run)
        assert code == 1 and "not a run report" in err and "Traceback" not in out + err


def test_an_output_that_cannot_be_written_is_a_usage_error(cli, project):
    plan = compile_file(str(project / "recipes" / "r.yaml")).plan
    fake_run(project / "runs" / "a", plan, 0.6, steps=20)
    (project / "adir").mkdir()
    for target, words in ((project / "adir", "is a directory"), (project / "recipes" / "r.yaml" / "c.json",
                                                                 "not a directory")):
        code, out, err = cli("calibrate", project / "runs" / "a", "-o", target, cwd=project)
        assert code == 2 and words in err and "Traceback" not in out + err, err
    assert list((project / "adir").iterdir()) == []


def test_calibration_file_problems_say_what_to_do(project, monkeypatch):
    from recipe_ft.schemas.errors import RecipeError

    recipe = str(project / "recipes" / "r.yaml")
    monkeypatch.setenv("RECIPE_CALIBRATION", str(project / "nowhere.json"))
    with pytest.raises(RecipeError) as info:
        compile_file(recipe)
    assert "RECIPE_CALIBRATION" in info.value.message and "no such file" in info.value.message
    assert "delete it" not in info.value.message and "Errno" not in info.value.message
    monkeypatch.delenv("RECIPE_CALIBRATION")
    (project / ".recipe").mkdir()
    (project / ".recipe" / "calibration.json").write_text("[1]")
    with pytest.raises(RecipeError) as info:
        compile_file(recipe)
    assert "not a calibration file" in info.value.message and "not a JSON object" in info.value.message
    assert "TypeError" not in info.value.message
