"""Economics: API cost vs self-hosting, break-even, and `recipe plan --compare`.

The expected numbers are worked out by hand from the formulas (a month is 30.4 days; peak factor 3;
weights at most 80% of a replica's memory; prefill = TFLOPS x 40% / (2 x params); decode = reference
x 8B / params x bandwidth / reference bandwidth; 85% per-GPU efficiency for 2-8 GPUs per replica;
evaluation 10% of training), not by calling the code under test.
"""

import json
from pathlib import Path

import pytest

from recipe_ft.compiler import economics as econ
from recipe_ft.compiler import lock
from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.compiler.rental import Offer
from recipe_ft.schemas.recipe import EconomicsSpec

ROOT = Path(__file__).resolve().parents[1]
TRIAGE = ROOT / "recipes" / "support-triage-llama3-8b.yaml"
TRIAGE_3B = ROOT / "recipes" / "support-triage-llama3.2-3b.toml"
LEGAL = ROOT / "recipes" / "legal-summaries-llama3.3-70b-qlora.yaml"  # no economics: section
GIB = 2**30

# A GPU with 40 GiB, 100 TFLOPS, 1000 GB/s at $1/h; the reference decodes 1000 tok/s at 8B on 1000 GB/s.
# For 8e9 parameters: prefill = 100e12 x 0.4 / 16e9 = 2500 tok/s; decode = 1000 tok/s.
def serving_gpu(name, memory, tflops, bandwidth, *offers):
    """offers: (USD per GPU-hour, GPUs per instance), or a bare price for a single-GPU listing."""
    pairs = [o if isinstance(o, tuple) else (o, 1) for o in offers]
    return econ.ServingGPU(name, memory, tflops, bandwidth,
                           tuple(Offer(p, f"test {n}x", n, "test", f"{n}x") for p, n in pairs))


G40 = serving_gpu("G40", 40 * GIB, 100.0, 1000.0, 1.0)
REF = econ.Reference(output_tok_s=1000.0, params=8e9, gpu="REF", bandwidth_gbs=1000.0, label="test reference")


def spec(**kw):
    base = dict(api_model="my-api", requests_per_day=10_000, input_tokens_per_request=500,
                output_tokens_per_request=100, input_usd_per_mtok=5.0, output_usd_per_mtok=15.0,
                engineering_hours=40.0, hourly_rate=50.0)
    base.update(kw)
    return EconomicsSpec(**base)


def run(s, gpus=(G40,), params=8e9, training_usd=100.0, **kw):
    return econ.compute(s, params, training_usd, list(gpus), REF, **kw)


# --------------------------------------------------------------------------- hand-computed cases


def test_pays_back_hand_computed():
    e = run(spec())
    # API: 10,000 x 30.4 x (500 x 5 + 100 x 15) / 1e6 = 304,000 x 4,000 / 1e6
    assert e.api_monthly_usd == pytest.approx(1216.00)
    assert e.api.usd_per_mtok == pytest.approx(4000 / 600, abs=1e-4)  # 6.6667 blended
    s = e.serving
    assert (s.gpu, s.gpus_per_replica, s.replicas) == ("G40", 1, 1)
    assert s.weights_bytes == 16_000_000_000  # 8e9 x 2 B = 14.9 GiB <= 0.8 x 40 GiB
    assert s.prefill_tokens_per_second == pytest.approx(2500)
    assert s.decode_tokens_per_second == pytest.approx(1000)
    assert s.seconds_per_request == pytest.approx(0.3)  # 500 / 2500 + 100 / 1000
    assert s.requests_per_second == pytest.approx(3.333, abs=1e-3)
    assert s.peak_requests_per_second == pytest.approx(0.347, abs=1e-3)  # 10,000 / 86,400 x 3
    assert s.gpu_hours_per_month == pytest.approx(729.6)  # 1 replica x 24 h x 30.4
    assert e.self_hosted_monthly_usd == pytest.approx(729.60)
    assert e.tokens_per_month == 182_400_000  # 304,000 requests x 600 tokens
    assert s.usd_per_mtok == pytest.approx(4.0)  # 729.6 / 182.4
    assert s.usd_per_mtok_at_capacity == pytest.approx(0.1389, abs=1e-4)  # $1 / (3.333 x 3600 x 600) x 1e6
    # one-time: 100 training + 10 eval + 40 h x $50
    assert (e.one_time.training_usd, e.one_time.eval_usd, e.one_time.engineering_usd) == (100.0, 10.0, 2000.0)
    assert e.one_time_usd == pytest.approx(2110.00)
    assert e.monthly_saving_usd == pytest.approx(486.40)  # 1216 - 729.6
    assert e.break_even_days == pytest.approx(131.88, abs=0.01)  # 2110 / (486.4 / 30.4) = 2110 / 16
    assert e.verdict.startswith("pays back in 132 days")
    text = " ".join(e.caveats)
    assert "beyond the seed's 30-60 days" in text and "below the seed's $5,000/month" in text
    assert "requests/day is below" not in text  # 10,000/day is not below the seed's 10,000
    assert "the saving is small in absolute terms" in text


def test_never_pays_back_at_tiny_volume():
    e = run(spec(requests_per_day=100))
    assert e.api_monthly_usd == pytest.approx(12.16)  # 100 x 30.4 x 4000 / 1e6
    assert e.self_hosted_monthly_usd == pytest.approx(729.60)  # one replica is always on
    assert e.monthly_saving_usd == pytest.approx(-717.44)
    assert e.break_even_days is None
    assert e.verdict.startswith("never pays back: self-hosting costs $717.44/month more than the API")
    text = " ".join(e.caveats)
    assert "savings never repay" in text and "100 requests/day is below the seed's 10,000/day" in text
    assert "below the seed's $5,000/month" in text and "the saving is small" not in text  # there is none


def test_scale_to_zero_pays_only_busy_hours():
    e = run(spec(scale_to_zero=True))
    # busy hours: 10,000 x 30.4 x 0.3 s / 3600 = 25.333 h at $1
    assert e.serving.gpu_hours_per_month == pytest.approx(25.33, abs=0.01)
    assert e.self_hosted_monthly_usd == pytest.approx(25.33, abs=0.01)
    assert e.monthly_saving_usd == pytest.approx(1190.67, abs=0.01)  # 1216 - 25.333
    assert e.break_even_days == pytest.approx(53.87, abs=0.01)  # 2110 / (1190.667 / 30.4)
    assert e.verdict.startswith("pays back in 54 days")
    assert any("scale to zero" in a for a in e.assumptions)
    assert not any("beyond the seed" in c for c in e.caveats)


def test_replicas_cover_the_peak():
    e = run(spec(requests_per_day=200_000))
    # peak 200,000 / 86,400 x 3 = 6.944 req/s over 3.333 per replica -> 3 replicas
    assert e.serving.replicas == 3
    assert e.self_hosted_monthly_usd == pytest.approx(2188.80)  # 3 x 729.6
    assert e.api_monthly_usd == pytest.approx(24320.00)  # 200,000 x 30.4 x 4000 / 1e6
    assert e.break_even_days == pytest.approx(2.90, abs=0.01)  # 2110 / (22131.2 / 30.4) = 2110 / 728
    assert not any("$5,000/month" in c for c in e.caveats)


SMALL = serving_gpu("SMALL", 8 * GIB, 50.0, 500.0, 0.2)


def test_quantization_and_tensor_parallel_choose_the_replica():
    # bf16: 14.9 GiB > 0.8 x 8 GiB; 2 x SMALL holds 12.8 GiB: no; 4 x SMALL holds 25.6 GiB: yes, at $0.80/h
    # 4 x SMALL: prefill 4 x 0.85 x 50e12 x 0.4 / 16e9 = 4250, decode 4 x 0.85 x 1000 x 500/1000 = 1700
    e = run(spec(), gpus=(G40, SMALL))
    s = e.serving
    assert (s.gpu, s.gpus_per_replica, s.replicas) == ("SMALL", 4, 1)
    assert s.prefill_tokens_per_second == pytest.approx(4250)
    assert s.decode_tokens_per_second == pytest.approx(1700)
    assert e.self_hosted_monthly_usd == pytest.approx(583.68)  # 4 x 0.2 x 24 x 30.4 < 729.6 on G40
    # 8-bit: 8e9 B = 7.45 GiB -> 2 x SMALL (12.8 GiB): 2 x 0.2 x 24 x 30.4
    e8 = run(spec(serving_quantization="8bit"), gpus=(G40, SMALL))
    assert (e8.serving.gpu, e8.serving.gpus_per_replica) == ("SMALL", 2)
    assert e8.self_hosted_monthly_usd == pytest.approx(291.84)
    # 4-bit: 8e9 x 0.56 = 4.48e9 B = 4.17 GiB -> one SMALL: 0.2 x 24 x 30.4
    e4 = run(spec(serving_quantization="4bit"), gpus=(G40, SMALL))
    assert (e4.serving.gpu, e4.serving.gpus_per_replica, e4.serving.weights_bytes) == ("SMALL", 1, 4_480_000_000)
    assert e4.self_hosted_monthly_usd == pytest.approx(145.92)
    assert e4.serving.seconds_per_request == pytest.approx(0.6)  # 500 / 1250 + 100 / 500


def test_volume_decides_between_a_cheap_and_a_fast_gpu():
    fast = serving_gpu("FAST", 80 * GIB, 400.0, 4000.0, 2.5)
    # 10,000/day: one replica either way; G40 at $1/h is cheaper
    assert run(spec(), gpus=(fast, G40)).serving.gpu == "G40"
    # 200,000/day: G40 needs 3 replicas ($2,188.80); FAST serves 1 / (500/10000 + 100/4000) = 13.3 req/s
    # with one replica: 2.5 x 24 x 30.4 = $1,824
    e = run(spec(requests_per_day=200_000), gpus=(fast, G40))
    assert (e.serving.gpu, e.serving.replicas) == ("FAST", 1)
    assert e.self_hosted_monthly_usd == pytest.approx(1824.00)


def test_user_api_prices_override_the_table():
    e = run(spec(api_model="gpt-4o", input_usd_per_mtok=1.0, output_usd_per_mtok=4.0))
    assert e.api_monthly_usd == pytest.approx(273.60)  # 304,000 x (500 x 1 + 100 x 4) / 1e6
    assert "in the recipe" in e.api.price_source and e.api.model == "gpt-4o"
    # one side only: input $1 from the recipe, output $10 from the table (gpt-4o)
    e = run(spec(api_model="gpt-4o", input_usd_per_mtok=1.0, output_usd_per_mtok=None))
    assert (e.api.input_usd_per_mtok, e.api.output_usd_per_mtok) == (1.0, 10.0)
    assert e.api_monthly_usd == pytest.approx(456.00)  # 304,000 x (500 + 1000) / 1e6
    # neither: the table's gpt-4o price, $2.50 / $10
    e = run(spec(api_model="gpt-4o", input_usd_per_mtok=None, output_usd_per_mtok=None))
    assert e.api_monthly_usd == pytest.approx(684.00)  # 304,000 x (1250 + 1000) / 1e6
    assert "litellm" in e.api.price_source


def test_no_gpu_holds_the_model():
    e = run(spec(), params=200e9)  # 400 GB bf16 > 0.8 x 8 x 40 GiB
    assert e.serving is None and e.self_hosted_monthly_usd is None
    assert e.break_even_days is None and e.verdict.startswith("cannot self-host")


def test_missing_training_price_and_zero_one_time():
    e = run(spec(engineering_hours=0.0), training_usd=None)
    assert e.one_time_usd == 0.0 and e.one_time.training_usd is None and e.one_time.eval_usd is None
    assert e.break_even_days == 0.0 and e.verdict.startswith("pays back in under a day")
    text = " ".join(e.caveats)
    assert "no training price" in text and "no engineering time" in text


def test_reference_is_the_median_measured_vllm_bf16_row():
    ref = econ.reference()
    # serving.csv: measured vLLM BF16 rows at 256 concurrent on H100-80GB: 3,032 / 3,958 / 8,088 tok/s
    assert (ref.output_tok_s, ref.gpu, ref.params, ref.bandwidth_gbs) == (3958.0, "H100-80GB", 8e9, 3350.0)


# --------------------------------------------------------------------------- through `recipe plan`


def test_plan_json_has_economics(cli):
    code, out, _ = cli("plan", "--format", "json", TRIAGE)
    assert code == 0
    e = json.loads(out)["economics"]
    for key in ("api_monthly_usd", "self_hosted_monthly_usd", "one_time_usd", "break_even_days", "verdict"):
        assert key in e
    # 20,000 x 30.4 x (600 x $2.50 + 20 x $10) / 1e6
    assert e["api_monthly_usd"] == pytest.approx(1033.60)
    s = e["serving"]
    # one RTX-3090 always on at the catalog's $0.43 per GPU-hour: 0.43 x 24 x 30.4
    assert (s["replicas"], s["gpus_per_replica"], s["usd_per_gpu_hour"]) == (1, 1, 0.43)
    assert e["self_hosted_monthly_usd"] == pytest.approx(313.73, abs=0.01)
    training = json.loads(out)["cost"]["usd"]
    assert e["one_time"]["training_usd"] == training
    assert e["one_time_usd"] == pytest.approx(training * 1.1, abs=0.01)
    assert e["break_even_days"] == pytest.approx(e["one_time_usd"] / ((1033.60 - 313.73) / 30.4), abs=0.01)
    assert e["verdict"].startswith("pays back") and e["assumptions"]


def test_plan_text_and_markdown_show_economics(cli):
    code, out, _ = cli("plan", TRIAGE)
    assert code == 0 and "economics vs gpt-4o" in out and "break-even" in out and "verdict" in out
    code, out, _ = cli("plan", "--format", "markdown", TRIAGE)
    assert code == 0 and "**Economics vs gpt-4o**" in out and "Economics assumptions" in out


def test_cheap_api_never_pays_back():
    e = compile_file(str(TRIAGE_3B)).plan.economics  # gpt-4o-mini: 20,000 x 30.4 x (600 x 0.15 + 20 x 0.6) / 1e6
    assert e.api_monthly_usd == pytest.approx(62.02, abs=0.01)
    assert e.break_even_days is None and e.verdict.startswith("never pays back")


def test_no_economics_section_gives_null(cli):
    code, out, _ = cli("plan", "--format", "json", LEGAL)
    assert code == 0 and json.loads(out)["economics"] is None
    code, out, _ = cli("plan", "--format", "json", TRIAGE, "--set", "economics=null")
    assert code == 0 and json.loads(out)["economics"] is None
    code, out, _ = cli("plan", LEGAL)
    assert code == 0 and "economics" not in out


def test_economics_keeps_exit_code_3(tmp_path, cli):
    (tmp_path / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}, '
                                          '{"role": "assistant", "content": "hello"}]}\n')
    path = tmp_path / "r.yaml"
    path.write_text("task: chat\nmodel:\n  base: meta-llama/Llama-3.3-70B-Instruct\ndata:\n  train: train.jsonl\n"
                    "  examples: 10000\nmethod:\n  name: lora\nbudget:\n  gpu: L4\neconomics:\n  api_model: gpt-4o\n"
                    "  requests_per_day: 20000\n  input_tokens_per_request: 600\n  output_tokens_per_request: 20\n")
    code, out, _ = cli("plan", "--format", "json", path)
    assert code == 3
    e = json.loads(out)["economics"]
    assert e is not None and any("nothing fits" in c for c in e["caveats"])


def test_lock_file_keeps_economics(tmp_path):
    plan = compile_file(str(TRIAGE)).plan
    lock.write(plan, tmp_path / "plan.json")
    again = lock.read(tmp_path / "plan.json")
    assert again.economics == plan.economics and again.economics.api_monthly_usd == pytest.approx(1033.60)


# --------------------------------------------------------------------------- --compare


def test_compare_llama_sizes(cli):
    code, out, _ = cli("plan", "--compare", TRIAGE)
    assert code == 0
    for name in ("Llama-3.2-1B-Instruct", "Llama-3.2-3B-Instruct", "Meta-Llama-3-8B-Instruct (recipe)",
                 "Llama-3.3-70B-Instruct"):
        assert name in out
    assert "break-even" in out and "API gpt-4o $1,034/month" in out

    code, out, _ = cli("plan", "--compare", "--format", "json", TRIAGE)
    assert code == 0
    data = json.loads(out)
    rows = data["rows"]
    assert [r["model"] for r in rows] == ["meta-llama/Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-3B-Instruct",
                                          "meta-llama/Meta-Llama-3-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct"]
    assert [r["recipe_model"] for r in rows] == [False, False, True, False]
    assert [r["parameters"] for r in rows] == sorted(r["parameters"] for r in rows)
    assert all(r["api_monthly_usd"] == pytest.approx(1033.60) for r in rows)
    assert rows[0]["training_usd"] < rows[3]["training_usd"]  # a 1B trains for less than a 70B
    assert rows[3]["self_hosted_monthly_usd"] > rows[2]["self_hosted_monthly_usd"]  # 70B serves for more
    own = compile_file(str(TRIAGE)).plan.economics
    assert rows[2]["break_even_days"] == own.break_even_days and rows[2]["verdict"] == own.verdict

    code, out, _ = cli("plan", "--compare", "--format", "markdown", TRIAGE)
    assert code == 0 and "| model | params |" in out and out.count("\n| ") >= 5


def test_compare_reads_and_parses_the_recipe_once(cli, monkeypatch):
    from recipe_ft.compiler import load as load_mod

    reads, parses = [], []
    real_read, real_yaml = load_mod.read, load_mod.loads_yaml
    monkeypatch.setattr(load_mod, "read", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    monkeypatch.setattr(load_mod, "loads_yaml", lambda *a, **k: parses.append(a) or real_yaml(*a, **k))
    code, out, _ = cli("plan", "--compare", "--format", "json", TRIAGE)
    assert code == 0 and len(json.loads(out)["rows"]) == 4
    assert len(reads) == 1 and len(parses) == 1


def test_compare_usage_errors(cli):
    code, _, err = cli("plan", "--compare", LEGAL)  # no economics: section
    assert code == 2 and "economics" in err
    code, _, err = cli("plan", "--compare", TRIAGE, "-o", "x.json")
    assert code == 2
    code, _, err = cli("plan", "--compare", TRIAGE, "--set", "model.base=TinyLlama/TinyLlama-1.1B-Chat-v1.0")
    assert code == 2 and "no size ladder" in err


def test_compare_ladders_use_current_families(cli):
    from recipe_ft.compiler.compare import LADDERS, ladder_for
    from recipe_ft.compiler.models import catalog_entry

    assert [family for family, _, _ in LADDERS][:4] == ["Qwen3", "Llama 3", "Gemma 3", "gpt-oss"]
    assert all(catalog_entry(rung) for _, _, rungs in LADDERS for rung in rungs)
    assert ladder_for("Qwen/Qwen3-8B") == ("Qwen3", ["Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B",
                                                     "Qwen/Qwen3-32B"])
    family, rungs = ladder_for("Qwen/Qwen3-30B-A3B")  # the MoE takes the 32B rung (within 30% of its size)
    assert family == "Qwen3" and rungs[-1] == "Qwen/Qwen3-30B-A3B"


def test_readme_worked_example_is_current(cli):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Economics", 1)[1].split("\n## ", 1)[0]
    _, out, _ = cli("plan", TRIAGE)
    shown = [line.strip() for line in section.split("```console", 1)[1].split("```", 1)[0].splitlines()
             if line.startswith(("api ", "self-hosted ", "one-time ", "saving ", "verdict "))]
    assert len(shown) == 5
    actual = {line.strip() for line in out.splitlines()}
    assert all(line in actual for line in shown), shown
    _, table, _ = cli("plan", "--compare", "--format", "markdown", TRIAGE)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Instruct" in line]
    assert len(rows) == 4 and all(row in section for row in rows)
