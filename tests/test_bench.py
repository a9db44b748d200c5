"""`recipe bench` against local stub endpoints (127.0.0.1 only): percentiles, errors, timeouts, the SLA's exit
code 5, side by side with the verdict, API keys never written, and `recipe plan --bench`."""

import json
from pathlib import Path

import pytest

from bench_stub import Stub
from recipe_ft.runtime import benchstats, demo, loadgen

RECIPE = """\
name: bench-stub
task: classification
model:
  base: meta-llama/Llama-3.2-3B-Instruct
data:
  train: data/train.jsonl
  eval: data/eval.jsonl
  format: chat
eval:
  metric: exact_match
  min_score: {min_score}
economics:
  api_model: gpt-4o
  requests_per_day: 20000
  input_tokens_per_request: 60
  output_tokens_per_request: 4
serving:
  sla:
    p95_latency_ms: {p95}
    min_tokens_per_s: 0.001
    max_error_rate: {max_error_rate}
output:
  dir: runs/bench-stub
"""


def write_recipe(tmp_path: Path, min_score=0.9, p95=50, max_error_rate=0.1, eval_examples=10) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name, rows in (("train", demo.tickets(20, 1)), ("eval", demo.tickets(eval_examples, 2))):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(min_score=min_score, p95=p95, max_error_rate=max_error_rate))
    return recipe


def eval_rows(tmp_path: Path) -> list:
    return [json.loads(line) for line in (tmp_path / "data" / "eval.jsonl").read_text().splitlines()]


def label_of(body: dict) -> str:
    """The right answer for a demo ticket (what a well-tuned model says)."""
    text = body["messages"][-1]["content"]
    return next(label for space in (demo.TRAIN, demo.HELD_OUT) for label, topics in space["topics"].items()
                if any(topic in text for topic in topics))


def only_report(out: Path) -> dict:
    return json.loads((out / "bench_report.json").read_text())


# --------------------------------------------------------------------------- pure figures


def test_percentiles_interpolate_linearly():
    xs = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0
    assert benchstats.percentile(xs, 50) == pytest.approx(0.55)
    assert benchstats.percentile(xs, 95) == pytest.approx(0.955)
    assert benchstats.percentile(xs, 99) == pytest.approx(0.991)
    assert benchstats.percentile([], 50) is None
    assert benchstats.percentile([3.0], 99) == 3.0


def test_summary_counts_and_rates_from_outcomes():
    outcomes = []
    for i in range(10):
        o = loadgen.Outcome(index=i, example=i, start=float(i), end=float(i) + 0.1 * (i + 1), first_token=0.05,
                            token_times=[float(i) + 0.05, float(i) + 0.06], output_tokens=2, prompt_tokens=30)
        if i == 3:
            o.error, o.token_times, o.output_tokens = "HTTP 500", [], None
        if i == 7:
            o.timed_out, o.token_times, o.output_tokens = True, [], None
        outcomes.append(o)
    stats = benchstats.summarize(loadgen.LoadResult(outcomes, wall_seconds=10.0))
    ok_latencies = [0.1 * (i + 1) for i in range(10) if i not in (3, 7)]
    assert stats["requests_sent"] == 10 and stats["requests_ok"] == 8
    assert stats["errors"] == 1 and stats["timeouts"] == 1 and stats["error_rate"] == 0.2
    assert stats["error_kinds"] == {"HTTP 500": 1}
    assert stats["latency_ms"]["p50"] == pytest.approx(benchstats.percentile(ok_latencies, 50) * 1000, abs=0.01)
    assert stats["latency_ms"]["p99"] == pytest.approx(benchstats.percentile(ok_latencies, 99) * 1000, abs=0.01)
    assert stats["output_tokens"] == 16 and stats["output_tokens_per_s"] == 1.6
    assert stats["requests_per_s"] == 0.8
    assert stats["tokens_counted_from"] == "server usage"
    assert sum(stats["latency_histogram_ms"]["counts"]) == 8
    assert sum(r["tokens_per_s"] for r in stats["over_time"]) == 16
    assert sum(r["failed"] for r in stats["over_time"]) == 2


# --------------------------------------------------------------------------- a slow, failing endpoint

ERROR_EVERY, HANG_EVERY = 5, 7


def slow_and_failing(k, body):
    if k % ERROR_EVERY == ERROR_EVERY - 1:
        return ("error", 500)
    if k % HANG_EVERY == HANG_EVERY - 1:
        return ("hang",)
    return ("ok", delay(k), "billing")


def delay(k):
    return 0.1 + 0.02 * (k % 4)


def test_slow_endpoint_with_errors_fails_the_sla_with_exit_5(tmp_path, cli):
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    n = 20
    with Stub(slow_and_failing) as stub:
        code, stdout, _ = cli("bench", recipe, "--endpoint", stub.url, "--concurrency", 1, "--requests", n,
                              "--duration", 600, "--timeout", 3, "--warmup", 0, "-o", out)
    assert code == 5, stdout
    assert stub.count == n  # bounded by --requests
    assert stub.auth == [None] * n  # loopback, no key named: no Authorization header
    failing = [k for k in range(n) if k % ERROR_EVERY == ERROR_EVERY - 1]
    hanging = [k for k in range(n) if k % HANG_EVERY == HANG_EVERY - 1 and k not in failing]
    ok = [k for k in range(n) if k not in failing and k not in hanging]
    report = only_report(out)
    (tuned,) = report["endpoints"]
    st = tuned["stats"]
    assert (st["requests_sent"], st["errors"], st["timeouts"], st["requests_ok"]) == (n, len(failing), len(hanging),
                                                                                      len(ok))
    assert st["error_rate"] == pytest.approx((len(failing) + len(hanging)) / n)
    assert st["error_kinds"] == {"HTTP 500": len(failing)}
    # Each answer took at least its scripted delay, so each percentile is at least the delays' percentile.
    for q in (50, 95, 99):
        assert st["latency_ms"][f"p{q}"] >= benchstats.percentile([delay(k) for k in ok], q) * 1000
    assert st["latency_ms"]["p50"] <= st["latency_ms"]["p95"] <= st["latency_ms"]["p99"] <= st["latency_ms"]["max"]
    assert st["ttft_ms"]["p50"] >= min(delay(k) for k in ok) * 1000
    assert st["output_tokens"] == 3 * len(ok)  # "billing" in 3 pieces, counted from the usage chunk
    lines = {line["target"]: line for line in tuned["sla"]["lines"]}
    assert lines["p95_latency_ms"]["pass"] is False and lines["max_error_rate"]["pass"] is False
    assert lines["min_tokens_per_s"]["pass"] is True
    assert "FAIL  p95_latency_ms" in stdout and "FAIL  max_error_rate" in stdout
    # Quality: the same exact_match as `recipe eval`, over the first answer to each held-out example.
    refs = [r["messages"][-1]["content"] for r in eval_rows(tmp_path)]
    answered = sorted({k % len(refs) for k in ok})
    assert tuned["quality"]["examples_scored"] == len(answered)
    assert tuned["quality"]["score"] == pytest.approx(sum(refs[i] == "billing" for i in answered) / len(answered),
                                                      abs=1e-4)
    assert report["verdict"]["safe_to_switch"] is False
    assert (out / "bench_report.md").read_text().count("FAIL") >= 2


def test_rate_mode_is_bounded_by_duration(tmp_path, cli):
    recipe = write_recipe(tmp_path, p95=100000, max_error_rate=1)
    out = tmp_path / "out"
    with Stub(lambda k, body: ("ok", 0.0, "bug")) as stub:
        code, stdout, _ = cli("bench", recipe, "--endpoint", stub.url + "/v1", "--rate", 20, "--duration", 0.5,
                              "--requests", 1000, "--warmup", 0, "--set", "eval.min_score=0", "-o", out)
    st = only_report(out)["endpoints"][0]["stats"]
    # Requests start at 0, 0.05, ... s; none at or after 0.5 s: at most 10 (fewer if the scheduler lagged).
    assert 1 <= st["requests_sent"] == stub.count <= 10
    assert code == 0, stdout


# --------------------------------------------------------------------------- side by side


def test_side_by_side_safe_to_switch_and_keys_never_written(tmp_path, cli, monkeypatch):
    recipe = write_recipe(tmp_path, min_score=0.9, p95=100000, max_error_rate=0.2)
    secret = "sk-test-do-not-write-4f7a"
    monkeypatch.setenv("BENCH_TEST_KEY", secret)
    out = tmp_path / "out"
    tuned = lambda k, body: ("ok", 0.0, label_of(body))  # noqa: E731
    api = lambda k, body: ("ok", 0.0, "billing")  # noqa: E731
    with Stub(tuned) as a, Stub(api) as b:
        code, stdout, _ = cli("bench", recipe, "--endpoint", a.url, "--endpoint", b.url, "--api-key-env",
                              "", "--api-key-env", "BENCH_TEST_KEY", "--rate", 50, "--requests", 10,
                              "--duration", 60, "--gpu", "L4", "-o", out)
        assert set(a.auth) == {None} and set(b.auth) == {f"Bearer {secret}"}
        assert {body["model"] for body in a.bodies} == {"bench-stub"}
        assert {body["model"] for body in b.bodies} == {"gpt-4o"}
        assert all(body["stream"] and body["max_tokens"] == 4 for body in a.bodies + b.bodies)
    assert code == 0, stdout
    report = only_report(out)
    t, r = report["endpoints"]
    assert (t["role"], r["role"]) == ("candidate", "baseline")
    assert t["quality"]["score"] == 1.0
    assert r["quality"]["score"] < 0.9
    assert report["verdict"] == {"safe_to_switch": True, "text": "safe to switch", "sla_pass": True,
                                 "quality_pass": True}
    assert r["api_key_env"] == "BENCH_TEST_KEY"
    assert r["cost"]["usd_per_mtok"] > 0 and "gpt-4o" in r["cost"]["source"]
    assert t["cost"]["usd_per_mtok"] > 0 and "L4" in t["cost"]["source"]
    # one L4: aws g6.xlarge at $0.80, not 1/8 of RunPod's 8x listing at $0.44 per GPU (rented whole)
    assert "$0.80/GPU-hour (aws g6.xlarge on-demand)" in t["cost"]["source"]
    for path in out.iterdir():
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in stdout
    table = (out / "bench_report.md").read_text()
    for row in ("quality (exact_match)", "latency p50 / p95 / p99 ms", "output tokens/s", "$/M tokens"):
        assert row in table and row in stdout
    assert "tuned (bench-stub)" in table and "replaced (gpt-4o)" in table
    assert "**Verdict: safe to switch**" in table

    # The API as the candidate: its quality is below eval.min_score, so not safe, and exit 4.
    with Stub(tuned) as a, Stub(api) as b:
        code, stdout, _ = cli("bench", recipe, "--endpoint", b.url, "--endpoint", a.url, "--rate", 50,
                              "--requests", 10, "--warmup", 0, "-o", tmp_path / "swapped")
    assert code == 4
    verdict = only_report(tmp_path / "swapped")["verdict"]
    assert not verdict["safe_to_switch"] and "below eval.min_score 0.9" in verdict["text"]

    # recipe plan --bench: the measured throughput on L4 replaces the catalog's, and the plan says so.
    code, plan_out, _ = cli("plan", recipe, "--format", "json", "--bench", out / "bench_report.json")
    assert code == 0
    econ = json.loads(plan_out)["economics"]
    assert any("measured" in c and "L4" in c for c in econ["caveats"])
    assert any(a.startswith("decode on L4: measured by `recipe bench`") for a in econ["assumptions"])
    code, _, err = cli("plan", recipe, "--set", "model.base=meta-llama/Llama-3.2-1B-Instruct", "--bench",
                       out / "bench_report.json")
    assert code == 2 and "it measured meta-llama/Llama-3.2-3B-Instruct" in err
    code, plain, _ = cli("plan", recipe, "--format", "json")
    assert not any("measured" in c for c in json.loads(plain)["economics"]["caveats"])


def test_bad_usage_is_reported_without_traceback(tmp_path, cli):
    recipe = write_recipe(tmp_path)
    code, _, err = cli("bench", recipe)
    assert code == 2 and "--endpoint" in err
    code, _, err = cli("bench", recipe, "--endpoint", "ftp://x", "--rate", 1)
    assert code == 2 and "http://" in err
    code, _, err = cli("bench", recipe, "--endpoint", "http://127.0.0.1:9", "--rate", 1, "--concurrency", 2)
    assert code == 2 and "not both" in err
    code, _, err = cli("bench", recipe, "--endpoint", "http://127.0.0.1:9", "--api-key-env", "NO_SUCH_VAR_X")
    assert code == 2 and "NO_SUCH_VAR_X" in err
    code, _, err = cli("plan", recipe, "--bench", tmp_path)
    assert code == 2 and "no bench report" in err
    code, _, err = cli("plan", recipe, "--bench", "latest")  # the recipe's run directory does not exist yet
    assert code == 2 and "no such file or run directory" in err and "Errno" not in err


def test_a_report_folder_that_cannot_be_written_is_refused_before_the_bench(tmp_path, cli):
    # a read-only run directory, or -o under a file: said before any request, not a traceback after them
    recipe = write_recipe(tmp_path)
    (tmp_path / "afile").write_text("mine")
    code, _, err = cli("bench", recipe, "--endpoint", "http://127.0.0.1:9", "--concurrency", 1, "--requests", 2,
                       "--warmup", 0, "-o", tmp_path / "afile" / "out")
    assert code == 1 and "afile is a file" in err and "Traceback" not in err, err
    assert (tmp_path / "afile").read_text() == "mine"


def test_credentials_in_an_endpoint_url_are_never_written(tmp_path, cli):
    # user:password@ is refused (keys come from --api-key-env); a query string's values are not recorded
    recipe = write_recipe(tmp_path)
    code, out, err = cli("bench", recipe, "--endpoint", "http://bob:PWSECRET@127.0.0.1:9", "--concurrency", 1)
    assert code == 2 and "--api-key-env" in err and "PWSECRET" not in out + err, out + err
    with Stub(lambda k, body: ("ok", 0.0, "billing")) as a:
        code, out, err = cli("bench", recipe, "--endpoint", a.url + "/v1?key=QSECRET", "--concurrency", 1,
                             "--requests", 2, "--warmup", 0, "-o", tmp_path / "out")
    assert code == 4 and "QSECRET" not in out + err, out + err
    for path in (tmp_path / "out").iterdir():
        assert b"QSECRET" not in path.read_bytes(), path


def test_unreachable_endpoint_counts_errors(tmp_path, cli):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    code, _, _ = cli("bench", recipe, "--endpoint", f"http://127.0.0.1:{port}", "--concurrency", 2,
                     "--requests", 4, "--warmup", 0, "-o", out)
    st = only_report(out)["endpoints"][0]["stats"]
    assert code == 5 and st["errors"] == 4 and st["error_rate"] == 1.0 and st["latency_ms"]["p95"] is None


def test_default_load_is_the_economics_peak_rate_and_plan_reads_the_latest_report(tmp_path, cli):
    recipe = write_recipe(tmp_path, p95=100000, max_error_rate=1)
    with Stub(lambda k, body: ("ok", 0.0, "bug")) as stub:
        code, _, _ = cli("bench", recipe, "--endpoint", stub.url, "--requests", 2, "--warmup", 0,
                         "--set", "eval.min_score=0")
    assert code == 0 and stub.count == 2
    (out,) = (tmp_path / "runs" / "bench-stub" / "bench").iterdir()
    load = only_report(out)["load"]
    assert load["rate"] == pytest.approx(20000 / 86400 * 3) and load["source"].startswith("economics: 20,000")
    # plan --bench RUN_DIR takes its latest report; this one names no GPU, so the catalog figure stays and it says so.
    code, plan_out, _ = cli("plan", recipe, "--format", "json", "--bench", tmp_path / "runs" / "bench-stub")
    assert code == 0
    caveats = json.loads(plan_out)["economics"]["caveats"]
    assert any("names no catalog GPU" in c and str(out) in c for c in caveats)
    code, latest_out, _ = cli("plan", recipe, "--format", "json", "--bench", "latest", cwd=tmp_path)
    assert code == 0 and json.loads(latest_out)["economics"]["caveats"] == caveats


def test_measured_decode_replaces_the_catalog_figure_for_that_gpu():
    from recipe_ft.compiler import economics
    from recipe_ft.compiler.bench_economics import Measured
    from recipe_ft.compiler.pipeline import check_file

    recipe = check_file(str(Path(__file__).resolve().parents[1] / "recipes" / "support-triage-llama3-8b.yaml")).recipe
    plain = economics.plan_section(recipe, 8e9, 1.0)
    fast = economics.plan_section(recipe, 8e9, 1.0, measured=Measured(plain.serving.gpu, 1, 1e6, "test figure"))
    assert fast.serving.gpu == plain.serving.gpu and fast.serving.decode_tokens_per_second == 1e6
    assert fast.serving.decode_tokens_per_second != plain.serving.decode_tokens_per_second
    assert any("measured, test figure" in c for c in fast.caveats)
    # Measured far slower than the catalog says: that GPU now needs many replicas, or another GPU wins.
    slow = economics.plan_section(recipe, 8e9, 1.0, measured=Measured(plain.serving.gpu, 1, 1.0, "slow"))
    assert slow.serving.gpu != plain.serving.gpu or slow.serving.replicas > plain.serving.replicas
    assert slow.self_hosted_monthly_usd >= plain.self_hosted_monthly_usd


def test_a_run_directory_is_a_target(tmp_path, cli, monkeypatch):
    from recipe_ft.compiler.pipeline import compile_file

    write_recipe(tmp_path, p95=100000, max_error_rate=1)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "bench-stub"
    run_dir.mkdir(parents=True)
    plan = compile_file("recipe.yaml").plan  # recorded with a relative recipe path, as `recipe run` does
    (run_dir / "plan.json").write_text(plan.model_dump_json(indent=2))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with Stub(lambda k, body: ("ok", 0.0, label_of(body))) as stub:
        code, stdout, _ = cli("bench", run_dir, "--endpoint", stub.url, "--concurrency", 2, "--requests", 4,
                              "--set", "eval.min_score=0", cwd=elsewhere)
        assert code == 2  # --set does not apply to a finished run
        code, stdout, _ = cli("bench", run_dir, "--endpoint", stub.url, "--concurrency", 2, "--requests", 4)
    assert code == 0, stdout
    (out,) = (run_dir / "bench").iterdir()
    report = only_report(out)
    assert report["run_dir"] == str(run_dir.resolve())
    assert report["endpoints"][0]["quality"] == {"metric": "exact_match", "score": 1.0, "examples_scored": 4,
                                                 "examples_held_out": 10, "details": {"correct": 4, "total": 4}}
    assert report["verdict"]["text"] == "safe to switch"


def test_a_server_that_does_not_stream_is_measured_too(tmp_path, cli):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Plain(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "bug"}}],
                               "usage": {"prompt_tokens": 20, "completion_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    server.block_on_close = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        recipe = write_recipe(tmp_path, p95=100000, max_error_rate=0)
        code, _, _ = cli("bench", recipe, "--endpoint", f"http://127.0.0.1:{server.server_address[1]}",
                         "--concurrency", 1, "--requests", 3, "--warmup", 0, "--set", "eval.min_score=0",
                         "-o", tmp_path / "out")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    st = only_report(tmp_path / "out")["endpoints"][0]["stats"]
    assert code == 0 and st["requests_ok"] == 3 and st["output_tokens"] == 3 and st["mean_input_tokens"] == 20


def test_an_empty_sla_is_a_located_error(tmp_path, cli):
    recipe = write_recipe(tmp_path)
    text = recipe.read_text()
    start = text.index("serving:")
    recipe.write_text(text[:start] + "serving:\n  sla: {}\n" + text[text.index("output:"):])
    code, out, _ = cli("validate", recipe)
    assert code == 1 and "serving.sla sets no target" in out and "recipe.yaml:" in out


def test_plan_bench_reports_of_the_wrong_shape_are_named_in_words(cli, tmp_path):
    """--bench with a file that is not a bench report: exit 2 and what is wrong, not a Python exception's
    text; a run directory whose only report is not a JSON object is 'no bench report', not a traceback."""
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "support-triage-llama3-8b.yaml"
    report = tmp_path / "r.json"
    for text, words in (("[]", "not a JSON object"), ("{}", "no 'endpoints'"), ('{"endpoints": []}', "no endpoint"),
                        ('{"endpoints": [{"x": 1}]}', "no 'stats'"), ("{bad", "invalid JSON")):
        report.write_text(text)
        code, out, err = cli("plan", recipe, "--bench", report)
        assert code == 2 and words in err and "Traceback" not in out + err, (text, err)
        assert "subscriptable" not in err and "indices" not in err
    report.write_text('{"endpoints": [{"stats": {"output_tokens_per_s": "fast"}}], "load": {}}')
    code, out, err = cli("plan", recipe, "--bench", report)
    assert code == 2 and "not a `recipe bench` report" in err and "Traceback" not in out + err, err
    report.write_text('{"endpoints": [{"stats": {"output_tokens_per_s": 5}}], "load": {}, "hardware": [1]}')
    code, out, err = cli("plan", recipe, "--bench", report)
    assert code == 2 and "not a `recipe bench` report" in err and "Traceback" not in out + err, err
    code, _, err = cli("plan", recipe, "--bench", tmp_path / "missing.json")
    assert code == 2 and "no such file" in err and "Errno" not in err, err
    (tmp_path / "run" / "bench" / "x").mkdir(parents=True)
    (tmp_path / "run" / "bench" / "x" / "bench_report.json").write_text("[]")
    code, out, err = cli("plan", recipe, "--bench", tmp_path / "run")
    assert code == 2 and "no bench report under" in err and "Traceback" not in out + err, err
