"""`recipe bench --serve` on a CPU: the demo's tiny model served on 127.0.0.1 by our transformers server,
benched at a fixed rate, bounded by requests and time, and stopped at the end."""

import json
import os
import shutil
import socket

import pytest

pytest.importorskip("transformers")

from recipe_ft.runtime import demo  # noqa: E402


def test_serve_demo_model_and_bench_it(tmp_path, cli):
    recipe = demo.make(tmp_path / "quick", train_examples=16, eval_examples=6)
    # What `recipe export --merge` leaves: a model directory in the run's merged/ (here the untrained model).
    shutil.copytree(recipe.parent / "tiny-llama", recipe.parent / "runs" / "quickstart" / "merged")
    recipe.write_text(recipe.read_text() + "serving:\n  sla:\n    max_error_rate: 0.5\n    min_tokens_per_s: 0.01\n")
    code, stdout, err = cli("bench", recipe, "--serve", "--rate", 4, "--duration", 30, "--requests", 6,
                            "--timeout", 120, "--max-tokens", 4, "--serve-timeout", 600)
    assert code == 0, stdout + err
    (out,) = (recipe.parent / "runs" / "quickstart" / "bench").iterdir()
    report = json.loads((out / "bench_report.json").read_text())
    serve = report["serve"]
    assert serve["engine"] == "transformers" and serve["url"].startswith("http://127.0.0.1:")
    # Stopped at the end: the process is gone and nothing listens on its port.
    with pytest.raises(ProcessLookupError):
        os.kill(serve["pid"], 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", serve["port"]), timeout=5):
        pass
    assert report["load"]["mode"] == "rate" and report["load"]["rate"] == 4 and report["load"]["source"] == "--rate"
    (tuned,) = report["endpoints"]
    st = tuned["stats"]
    assert st["requests_sent"] == 6 and st["requests_ok"] == 6 and st["error_rate"] == 0
    assert st["tokens_counted_from"] == "server usage"
    assert 6 <= st["output_tokens"] <= 6 * 4  # at most --max-tokens each
    for key in ("p50", "p95", "p99"):
        assert st["latency_ms"][key] > 0
    assert 0 < st["ttft_ms"]["p50"] <= st["latency_ms"]["max"]
    assert st["output_tokens_per_s"] > 0 and st["requests_per_s"] > 0
    assert st["mean_input_tokens"] > 10  # the chat template applied to system + user turns
    assert tuned["quality"]["metric"] == "exact_match" and tuned["quality"]["examples_scored"] == 6
    assert 0 <= tuned["quality"]["score"] <= 1
    assert [line["pass"] for line in tuned["sla"]["lines"]] == [True, True]
    assert not report["verdict"]["safe_to_switch"]  # the demo recipe sets no eval.min_score
    assert "no eval.min_score" in report["verdict"]["text"]
    md = (out / "bench_report.md").read_text()
    assert "Served with transformers" in md and "| latency p50 / p95 / p99 ms |" in md
    if report["images"]:  # matplotlib installed ([train] extra)
        for name in report["images"]["tuned"].values():
            assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert (out / "serve.log").is_file()
