"""benchmarks/plan_speed.py works: once, with --runs 1. No timing assertions (those belong to the
benchmark, not the tests)."""

import json

import pytest

from conftest import benchmark_module



@pytest.fixture(scope="module")
def plan_speed():
    with benchmark_module("plan_speed") as module:
        yield module


def test_recipe_side_valid_json_and_no_training_stack(plan_speed):
    timing, plan = plan_speed.time_recipe_plan(plan_speed.DEFAULT_RECIPE, runs=1, warmup=0)
    assert len(timing.times) == 1 and timing.times[0] > 0
    assert plan["model"]["name"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    json.dumps(plan)  # round-trips

    probe = plan_speed.heavy_modules_after_plan(plan_speed.DEFAULT_RECIPE)
    ours = probe.pop("ours")
    assert probe == {"code": 0, "heavy": [], "plan_ok": True}
    assert "recipe_ft.compiler.planner" in ours and not any(m.startswith("recipe_ft.runtime") for m in ours)

    assert len(plan_speed.time_import(runs=1, warmup=0).times) == 1


def test_model_config_is_the_catalog_config(plan_speed, tmp_path):
    name, config = plan_speed.model_config(plan_speed.DEFAULT_RECIPE)
    assert name == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 32
    written = plan_speed.write_config(config, tmp_path / "m")
    assert json.loads((written / "config.json").read_text()) == config


def test_whole_script_with_peer(plan_speed, capsys):
    if not plan_speed.peer_available():  # find_spec only: keeps torch out of the pytest process
        pytest.skip("the peer path needs torch, transformers and accelerate (the [train] extra)")
    assert plan_speed.main(["--runs", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "accelerate estimate path:" in out and "ratio" in out
    assert "importing torch, transformers and accelerate" in out  # says where the peer's time goes
    assert "of which: import accelerate.commands.estimate" in out
    assert "torch imported by recipe plan: no" in out


def test_whole_script_without_peer(plan_speed, capsys):
    assert plan_speed.main(["--runs", "1", "--warmup", "0", "--no-peer", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "recipe plan:" in out and "ratio" not in out
    assert "stage: + recipe_ft's pydantic models" in out
    for stage in ("pydantic's schema machinery (first model)", "building recipe_ft's pydantic models",
                  "importing the other recipe_ft modules", "reading, compiling and printing the plan"):
        assert stage in out
    assert "torch imported by recipe plan: no" in out


def test_data_file_of_n_lines(plan_speed, tmp_path):
    source = plan_speed.ROOT / "recipes" / "data" / "support" / "train.jsonl"
    for n in (7, 40, 100_003):
        path = plan_speed.write_lines(source, n, tmp_path / f"d{n}.jsonl")
        lines = path.read_bytes().splitlines()
        assert len(lines) == n and lines[0] == source.read_bytes().splitlines()[0]


def test_paired_alternates_and_pairs(tmp_path):
    import sys

    sys.path.insert(0, str(plan_speed_dir()))
    import paired

    log = tmp_path / "order"
    arms = [paired.Arm(name, [sys.executable, "-c", f"open({str(log)!r}, 'a').write({name!r})"]) for name in "ABC"]
    paired.alternate(arms, rounds=3, warmup=1)
    assert log.read_text() == "ABC" + "BCA" + "CAB" + "ABC"  # the warm-up round, then the order rotates
    assert all(len(a.samples) == 3 and all(s.wall > 0 and s.cpu > 0 and s.max_rss_mib > 0 for s in a.samples)
               for a in arms)
    a, b = arms[0], arms[1]
    a.samples = [paired.Sample(2.0, 1.0, 1.0), paired.Sample(9.0, 3.0, 1.0), paired.Sample(4.0, 1.0, 1.0)]
    b.samples = [paired.Sample(1.0, 1.0, 1.0), paired.Sample(3.0, 1.0, 1.0), paired.Sample(1.0, 2.0, 1.0)]
    assert paired.ratio(a, b) == 3.0 and paired.ratio(a, b, "cpu") == 1.0  # medians of the per-round ratios


def plan_speed_dir():
    from conftest import ROOT

    return ROOT / "benchmarks"
