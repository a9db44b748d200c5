"""`recipe bench --serve` on a CPU: the demo's tiny model served on 127.0.0.1 by our transformers server,
benched at a fixed rate, bounded by requests and time, and stopped at the end."""

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from bench_stub import Stub  # noqa: E402
from recipe_ft.runtime import demo  # noqa: E402


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    recipe = demo.make(tmp_path_factory.mktemp("demo") / "quick", train_examples=16, eval_examples=6)
    return recipe.parent


def test_serve_demo_model_and_bench_it(tmp_path, cli, demo_dir, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the server inherits it: a tiny model on a shared CPU
    shutil.copytree(demo_dir, tmp_path / "quick")
    recipe = tmp_path / "quick" / "recipe.yaml"
    # What `recipe export --merge` leaves: a model directory in the run's merged/ (here the untrained model).
    shutil.copytree(recipe.parent / "tiny-llama", recipe.parent / "runs" / "quickstart" / "merged")
    recipe.write_text(recipe.read_text() + "serving:\n  sla:\n    max_error_rate: 0.5\n    min_tokens_per_s: 0.01\n")
    with Stub(lambda k, body: ("ok", 0.0, "billing")) as api:  # the API it replaces, side by side
        code, stdout, err = cli("bench", recipe, "--serve", "--endpoint", api.url, "--model", "quickstart",
                                "--model", "api-model", "--rate", 4, "--duration", 30, "--requests", 6,
                                "--timeout", 120, "--max-tokens", 4, "--serve-timeout", 600)
    assert code == 0, stdout + err
    assert api.count == 7 and {b["model"] for b in api.bodies} == {"api-model"}  # 1 warm-up + 6
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
    tuned, replaced = report["endpoints"]
    assert replaced["role"] == "baseline" and replaced["stats"]["requests_ok"] == 6
    assert tuned["model"] == "quickstart" and tuned["url"] == serve["url"] + "/v1/chat/completions"
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
        for name in [*report["images"]["tuned"].values(), *report["images"]["replaced"].values()]:
            assert (out / name).read_bytes().startswith(b"\x89PNG")
    assert (out / "serve.log").is_file()


def test_our_server_speaks_the_openai_api(demo_dir):
    import threading
    import urllib.error
    import urllib.request
    from http.server import ThreadingHTTPServer

    from recipe_ft.runtime.openai_server import Generator, make_handler

    gen = Generator(str(demo_dir / "tiny-llama"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(gen, "tiny"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body: dict):
        req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read()

    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as resp:
            assert json.loads(resp.read())["data"][0]["id"] == "tiny"
        messages = [{"role": "user", "content": "my parcel has not arrived"}]
        status, raw = post({"model": "tiny", "messages": messages, "max_tokens": 3})
        answer = json.loads(raw)
        assert status == 200 and answer["object"] == "chat.completion"
        assert answer["usage"]["completion_tokens"] <= 3 and answer["usage"]["prompt_tokens"] > 3
        # Streamed: the same greedy answer, in chunks, then usage, then [DONE].
        status, raw = post({"model": "tiny", "messages": messages, "max_tokens": 3, "stream": True,
                            "stream_options": {"include_usage": True}})
        events = [line[6:] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
        assert text.strip() == answer["choices"][0]["message"]["content"].strip()
        assert chunks[-1]["usage"] == answer["usage"]
        with pytest.raises(urllib.error.HTTPError) as bad:
            post({"model": "tiny"})
        assert bad.value.code == 400
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_what_serve_starts(tmp_path):
    from recipe_ft.runtime.bench import Options, served_model
    from recipe_ft.schemas.errors import RecipeError, UsageError

    class Plan:
        class model:
            path, name = "/models/base", "base"

    run = tmp_path / "run"
    with pytest.raises(RecipeError, match="export"):
        served_model(Plan, run, Options())
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    assert served_model(Plan, run, Options()) == (Path("/models/base"), run / "adapter")
    (run / "merged").mkdir()
    (run / "merged" / "config.json").write_text("{}")
    assert served_model(Plan, run, Options()) == (run / "merged", None)
    with pytest.raises(UsageError, match="no config.json"):
        served_model(Plan, run, Options(model_dir=tmp_path))
