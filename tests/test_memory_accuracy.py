"""benchmarks/memory_accuracy.py: the memory estimate against published peak-GPU-memory figures."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import memory_accuracy as ma  # noqa: E402

GIB = 2**30


@pytest.fixture(scope="module")
def rows():
    return ma.load_rows()


@pytest.fixture(scope="module")
def report(rows):
    return ma.evaluate(rows)


def test_table_is_the_projects_own_copy_with_a_source_for_every_row(rows):
    assert ma.DATA_FILE.is_relative_to(ROOT)  # never ../shared at run time
    assert rows
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    for r in rows:
        assert r["source"].strip(), r["id"]
        assert r["comparable"] in ("yes", "no"), r["id"]
        assert (r["comparable"] == "no") == bool(r["why_not"].strip()), r["id"]
        assert r["measure"] in ("allocated", "reserved", "nvidia_smi", "oom", "bound", "estimate"), r["id"]
        assert r["outcome"] in ("fits", "oom"), r["id"]
        assert r["figure_unit"] in ("GB", "GiB"), r["id"]
        if r["num_gpus"] not in ("", "1"):
            assert r["why_not"] == "multi-GPU", r["id"]
        if r["comparable"] == "yes":
            assert r["est_method"] and r["model_name"], r["id"]


def test_no_oom_row_is_claimed_to_fit(report):
    counted = [c for c in report.oom_checks if c.counted]
    assert counted  # the check is not vacuous
    assert [c.id for c in report.oom_claimed_fit] == []


def test_reported_median_is_the_computed_one_and_within_the_guard(report, capsys):
    code = ma.main([])
    out = capsys.readouterr().out
    assert code == 0
    summary = out.strip().splitlines()[-1]
    m = re.match(r"comparable rows: (\d+), median \|error\| ([\d.]+)%, max ([\d.]+)%", summary)
    assert m, summary
    median = ma.median_abs(report.comparable)
    assert int(m.group(1)) == len(report.comparable) > 0
    assert float(m.group(2)) == pytest.approx(100 * median, abs=0.05)
    assert float(m.group(3)) == pytest.approx(100 * ma.max_abs(report.comparable), abs=0.05)
    assert "OOM rows claimed to fit: 0" in summary
    assert median <= 0.25, f"median |error| on comparable rows is {median:.1%}"


def test_gb_and_gib_are_converted():
    assert ma.figure_bytes({"peak_mem_value": "18", "figure_unit": "GB"}) == 18 * 10**9
    assert ma.figure_bytes({"peak_mem_value": "18", "figure_unit": "GiB"}) == 18 * GIB
    assert ma.figure_bytes({"peak_mem_value": "15.57", "figure_unit": "GB"}) / GIB == pytest.approx(14.501, abs=1e-3)
    assert ma.figure_bytes({"peak_mem_value": "OOM", "figure_unit": "GB"}) is None
    with pytest.raises(ValueError):
        ma.to_bytes(1, "G")


def _hand_made(measure, value, unit):
    return {
        "id": "X1", "source": "hand-made", "model": "Llama-2-7B", "num_gpus": "1", "peak_mem_value": value,
        "comparable": "yes", "why_not": "", "model_name": "meta-llama/Llama-2-7b-hf", "measure": measure,
        "outcome": "fits", "figure_unit": unit, "gpu_name": "", "outcome_transfers": "both",
        "est_method": "lora", "est_rank": "8", "est_targets": "q_proj,v_proj", "est_seq_len": "1024",
        "est_micro_batch": "4", "est_grad_ckpt": "yes", "est_optimizer": "adamw", "est_precision": "bf16",
        "est_dropout": "0.0", "est_quant_bits": "", "est_double_quant": "", "oom_seq_len": "",
    }


@pytest.mark.parametrize("measure", ["allocated", "reserved", "nvidia_smi"])
def test_each_figure_is_compared_with_the_estimate_of_the_same_meaning(measure):
    (c,) = ma.evaluate([_hand_made(measure, "18", "GB")]).comparisons
    est = c.estimate
    expected = {
        "allocated": est.allocated_peak_bytes,
        "reserved": est.allocated_peak_bytes + est.components["allocator_overhead"],
        "nvidia_smi": est.required_bytes,
    }[measure]
    assert c.estimate_bytes == expected
    assert c.published_bytes == 18 * 10**9
    assert c.error == pytest.approx(expected / 18e9 - 1)
    (g,) = ma.evaluate([_hand_made(measure, "18", "GiB")]).comparisons
    assert g.error == pytest.approx(expected / (18 * GIB) - 1)
