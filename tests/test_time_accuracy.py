"""benchmarks/time_accuracy.py: the time model against published throughput of the same stack."""

import json

import pytest
from conftest import ROOT, benchmark_module

from recipe_ft.compiler import timing


@pytest.fixture(scope="module")
def ta():
    with benchmark_module("time_accuracy") as module:
        yield module


@pytest.fixture(scope="module")
def rows(ta):
    return ta.load_rows()


def test_table_is_the_projects_own_copy_with_a_source_for_every_row(ta, rows):
    assert ta.DATA_FILE.is_relative_to(ROOT)  # never ../shared at run time
    assert len({r["id"] for r in rows}) == len(rows) > 0
    for r in rows:
        assert r["source"].startswith("https://"), r["id"]
        assert r["comparable"] in ("yes", "no") and (r["comparable"] == "no") == bool(r["why_not"]), r["id"]
        assert float(r["train_tokens_per_second"]) > 0


def test_every_comparable_row_within_the_aims(ta, rows):
    results = ta.compare_rows(rows)
    assert sum(r.comparable for r in results) == 12
    median, worst = ta.summary(results)
    assert median <= ta.MEDIAN_AIM and worst <= ta.WORST_AIM, (median, worst)


def test_the_stored_utilization_is_what_the_fit_gives(ta, rows, monkeypatch):
    """time_model.json is the fit of the data file, not a hand-tuned figure."""
    stored = json.loads(timing.MODEL_FILE.read_text())["utilization"]
    monkeypatch.setattr(timing, "time_model", ta._patched)
    try:
        fitted = ta.fit(rows)
    finally:
        ta._PATCH.clear()
    assert set(fitted) == {"Ampere"}
    assert fitted["Ampere"]["value"] == pytest.approx(stored["Ampere"]["value"], abs=2e-3)
    assert fitted["Ampere"]["rows"] == stored["Ampere"]["rows"] == 12


def test_the_plan_moves_with_the_micro_batch_as_the_measurements_do(ta, rows):
    by = {(r["method"], r["framework_config"], r["num_gpus"], r["per_device_micro_batch"]): r for r in rows}
    for method, config in (("full", "none"), ("lora", "none"), ("qlora", "baseline-peft-bnb")):
        small, large = by[(method, config, "1", "4")], by[(method, config, "1", "8")]
        assert ta.planned_per_device(large) >= ta.planned_per_device(small)
        assert float(large["train_tokens_per_second"]) > float(small["train_tokens_per_second"])


def test_script_prints_every_row_and_the_summary(ta, capsys):
    code = ta.main([])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("FMS") == 28 and "12 comparable rows: median |error|" in out and "met" in out
