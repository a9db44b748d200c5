"""benchmarks/runtime_overhead.py works: a tiny version (1 repeat, a few steps, a small variable-length
file) produces every number. No timing assertions (those belong to the benchmark, not the tests)."""

import pytest

from conftest import benchmark_module

pytest.importorskip("trl")
pytest.importorskip("peft")



@pytest.fixture(scope="module")
def runtime_overhead():
    with benchmark_module("runtime_overhead") as module:
        yield module


def test_padding_fraction(runtime_overhead):
    assert runtime_overhead.padding_fraction([10] * 16, batch=8) == 0
    assert runtime_overhead.padding_fraction([10, 30], batch=2) == pytest.approx(1 - 40 / 60)


def test_tiny_benchmark_produces_the_numbers(runtime_overhead, tmp_path):
    lines = []
    r = runtime_overhead.benchmark(tmp_path, steps=4, repeats=1, train_examples=48, variable_examples=40,
                                   packing_repeats=1, log=lines.append)
    assert len(r.recipe) == len(r.plain) == 1
    for m in r.recipe + r.plain + (r.packing_off or []) + (r.packing_on or []):
        assert m.tokens_per_second > 0 and m.wall_seconds > 0 and m.tokens > 0 and m.process_seconds > 0
        assert m.cpu_seconds > 0 and m.extra["probe"]["tokens"] == m.tokens  # the probe saw the same run
        assert 0 < m.first_step_seconds < m.process_seconds and 0 < m.first_step_cpu_seconds < m.process_cpu_seconds
    # both arms train the same examples in the same order with the same settings
    assert r.recipe[0].steps == r.plain[0].steps == 4
    assert r.same_tokens, (r.recipe[0].tokens, r.plain[0].tokens)
    assert r.recipe[0].train_loss == pytest.approx(r.plain[0].train_loss, abs=1e-3)
    assert r.plain[0].extra["settings"]["activation_checkpointing"] is False
    assert r.ratio > 0 and r.cpu_ratio > 0 and r.first_step_ratio > 0 and r.process_cpu_ratio > 0
    assert r.steady_cpu_ratio > 0 and r.recipe[0].extra["probe"]["steady_steps"] == [1, 4]
    text = "\n".join(runtime_overhead.report(r))
    assert "verdict:" in text and text.splitlines()[-1].startswith("recipe run / plain trl: ")
    if runtime_overhead.packing_unavailable():
        # packing is measured only on its correct path (flash_attention_2 on CUDA); here it says why not
        assert r.packing_on is None and "attend across the packed row" in r.packing_skipped
        assert "packing: not measured: " in text
    else:
        # one epoch each of the same data, so the same useful tokens, in fewer steps when packed
        v = r.variable
        assert v["examples"] == 40 and v["min"] < 30 and v["max"] > 120
        assert r.packing_on[0].tokens == r.packing_off[0].tokens == v["tokens"]
        assert r.packing_on[0].steps < r.packing_off[0].steps
        assert r.packing_gain > 0 and r.packing_epoch_speedup > 0
        assert "recipe run, packing on" in text
        assert "packing gain on variable-length data: " in text.splitlines()[-1]
    assert any(line.startswith("  repeat 1/1 plain trl") for line in lines)
