"""Whole-instance pricing: N GPUs cost the cheapest way to rent at least N (compiler/rental.py), in the
plan's GPU choice, its cost and its text, and in the serving economics. Catalog figures are read from
compiler/data/gpu_prices.csv by hand (not through the code under test)."""

import json
from pathlib import Path

import pytest

from recipe_ft.compiler import catalogs, economics as econ
from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.compiler.plan_text import summary_rows
from recipe_ft.compiler.rental import Offer, cheapest
from recipe_ft.schemas.recipe import BudgetSpec, EconomicsSpec

ROOT = Path(__file__).resolve().parents[1]
TRIAGE = ROOT / "recipes" / "support-triage-llama3-8b.yaml"
GIB = 2**30

# gpu_prices.csv: A100-80GB spot exists only on aws p4de.24xlarge (8 x $1.0813) and azure
# Standard_ND96amsr_A100_v4 (8 x $0.4506); Lambda's A100-80GB is gpu_8x_a100_80gb_sxm4 (8 x $2.79);
# B200: runpod B200 (1 x $7.99), lambda gpu_8x_b200_sxm6 (8 x $6.69).
AZURE_A100_SPOT = 0.4506
LAMBDA_A100 = 2.79


def write(tmp_path, budget, method="lora", name="r.yaml"):
    (tmp_path / "train.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]}\n')
    path = tmp_path / name
    path.write_text(f"task: chat\nmodel:\n  base: meta-llama/Meta-Llama-3-8B-Instruct\ndata:\n  train: train.jsonl\n"
                    f"  examples: 10000\n  tokens_per_example: 400\nmethod:\n  name: {method}\ntraining:\n"
                    f"  max_seq_len: 1024\n  batch_size: 16\nbudget:\n{budget}\n")
    return str(path)


def gpu_reason(plan):
    return next(d.reason for d in plan.decisions if d.what == "gpu")


def hardware_row(plan):
    return dict(summary_rows(plan))["hardware"]


# --------------------------------------------------------------------------- the rule


def test_cheapest_rental_counts_whole_instances():
    eight, one = Offer(1.0, "eight", 8, "p", "8x"), Offer(5.0, "one", 1, "q", "1x")
    r = cheapest([eight], 1)
    assert (r.rented, r.instances, r.usd_per_hour) == (8, 1, 8.0)
    assert r.label == "eight; rents 8 (whole instance), uses 1"
    assert cheapest([eight, one], 1).offer is one  # $5 for one GPU beats $8 for a whole instance
    assert cheapest([eight, one], 2).offer is eight  # $8 beats 2 x $5
    r9 = cheapest([eight, one], 9)
    assert (r9.offer, r9.rented, r9.usd_per_hour) == (eight, 16, 16.0)
    assert "rents 16 (2 whole instances), uses 9" in r9.label
    r8 = cheapest([eight], 8)
    assert r8.idle == 0 and r8.label == "eight" and r8.usd_per_hour == 8.0
    assert cheapest([], 1) is None


def test_rentable_prices_keep_the_gpu_only_rule():
    assert not any(p.gpu_only for p in catalogs.rentable_prices("T4"))  # aws/azure rows exist
    gcp = catalogs.rentable_prices("T4", provider="gcp")
    assert gcp and all(p.gpu_only for p in gcp)  # only GPU-only rows: kept


# --------------------------------------------------------------------------- training plans


def test_one_gpu_plan_is_never_priced_below_the_whole_instance(tmp_path):
    """Only an 8-GPU instance is listed (A100-80GB spot at azure): one GPU costs the whole instance."""
    budget = "  gpu: A100-80GB\n  max_gpus: 1\n  spot: true\n  provider: azure"
    plan = compile_file(write(tmp_path, budget)).plan
    hw = plan.hardware
    assert (hw.count, hw.gpus_rented, hw.provider, hw.usd_per_gpu_hour) == (1, 8, "azure", AZURE_A100_SPOT)
    assert plan.cost.usd_per_hour == pytest.approx(8 * AZURE_A100_SPOT)
    assert plan.cost.usd == pytest.approx(8 * AZURE_A100_SPOT * plan.time.hours, abs=0.01)
    assert "Standard_ND96amsr_A100_v4 spot; rents 8 (whole instance), uses 1" in gpu_reason(plan)
    assert hardware_row(plan).endswith("; rents 8, uses 1")
    assert "8 GPUs rented" in dict(summary_rows(plan))["cost"]
    only = [a for a in plan.alternatives if a.count == 1]
    assert only and all("rents 8 (azure Standard_ND96amsr_A100_v4)" in a.note for a in only)


def test_eight_gpu_plan_uses_the_instance_price(tmp_path):
    budget = "  gpu: A100-80GB\n  gpu_count: {n}\n  max_gpus: 8\n  provider: lambda"
    eight = compile_file(write(tmp_path, budget.format(n=8))).plan
    assert (eight.hardware.count, eight.hardware.gpus_rented) == (8, 8)
    assert eight.cost.usd_per_hour == pytest.approx(8 * LAMBDA_A100)
    assert eight.cost.usd == pytest.approx(8 * LAMBDA_A100 * eight.time.hours, abs=0.01)
    assert "rents" not in gpu_reason(eight) and "rents" not in hardware_row(eight)
    four = compile_file(write(tmp_path, budget.format(n=4))).plan  # half the instance costs the whole of it
    assert (four.hardware.count, four.hardware.gpus_rented) == (4, 8)
    assert four.cost.usd_per_hour == pytest.approx(eight.cost.usd_per_hour)
    assert four.cost.usd > eight.cost.usd  # same rent, longer run


def test_when_free_to_choose_a_plan_uses_the_gpus_it_rents(tmp_path):
    """Up to 8 A100-80GB at azure spot: 1, 2 or 4 GPUs rent the whole instance anyway, so 8 is cheapest."""
    budget = "  gpu: A100-80GB\n  max_gpus: 8\n  spot: true\n  provider: azure"
    plan = compile_file(write(tmp_path, budget)).plan
    assert (plan.hardware.count, plan.hardware.gpus_rented) == (8, 8)
    rents = {a.count: a.usd for a in plan.alternatives if a.fits and a.strategy in ("single", "ddp")}
    assert rents[8] < rents[4] < rents[2] < rents[1]
    why = next(d.reason for d in plan.decisions if d.what == "gpu_count")
    assert "1, 2, 4 would rent the same 8 GPUs" in why


def test_the_gpu_count_flips_the_provider(tmp_path):
    """B200: one GPU is cheaper at runpod (1 x $7.99 < 8 x $6.69), eight at lambda (8 x $6.69 < 8 x $7.99)."""
    budget = "  gpu: B200\n  gpu_count: {n}\n  max_gpus: 8"
    one = compile_file(write(tmp_path, budget.format(n=1))).plan
    eight = compile_file(write(tmp_path, budget.format(n=8))).plan
    assert (one.hardware.provider, one.hardware.gpus_rented, one.cost.usd_per_hour) == ("runpod", 1, 7.99)
    assert (eight.hardware.provider, eight.hardware.gpus_rented) == ("lambda", 8)
    assert eight.cost.usd_per_hour == pytest.approx(8 * 6.69)


def test_spot_triage_no_longer_takes_a_fraction_of_an_8_gpu_instance():
    """The README's triage recipe at spot prices priced one A100-80GB at $0.45/h (1/8 of azure's
    instance); the whole instance is $3.60/h, so a single-GPU listing wins."""
    plan = compile_file(str(TRIAGE), overrides=("budget.spot=true",)).plan
    assert plan.hardware.gpus_rented == plan.hardware.count == 1
    a100 = next(a for a in plan.alternatives if a.gpu == "A100-80GB" and a.count == 1)
    assert a100.usd == pytest.approx(8 * AZURE_A100_SPOT * a100.hours, abs=0.01) and "rents 8" in a100.note
    assert plan.hardware.gpu != "A100-80GB" and plan.cost.usd < a100.usd
    assert all(plan.cost.usd <= a.usd for a in plan.alternatives if a.usd is not None)


def test_budget_prices_pay_exactly_the_gpus_used(tmp_path):
    """budget.prices is the user's own rental: per GPU-hour for the GPUs used, even where the catalog
    lists only an 8-GPU instance (azure spot)."""
    budget = "  gpu: A100-80GB\n  max_gpus: 1\n  spot: true\n  provider: azure\n  prices: {A100-80GB: 2.0}"
    plan = compile_file(write(tmp_path, budget)).plan
    assert (plan.hardware.count, plan.hardware.gpus_rented, plan.cost.usd_per_hour) == (1, 1, 2.0)
    assert plan.cost.usd == pytest.approx(2.0 * plan.time.hours, abs=0.01)
    assert "your price (budget.prices)" in gpu_reason(plan) and "rents" not in hardware_row(plan)
    custom = ("  gpu: mine\n  max_gpus: 1\n  custom_gpus:\n    - {name: mine, memory_gb: 80, bf16_tflops: 300, "
              "usd_per_hour: 0.5}")
    plan = compile_file(write(tmp_path, custom)).plan
    assert (plan.hardware.gpus_rented, plan.cost.usd_per_hour) == (1, 0.5)


def test_text_and_json_agree_on_what_is_rented(tmp_path, cli):
    path = write(tmp_path, "  gpu: A100-80GB\n  max_gpus: 1\n  spot: true\n  provider: azure")
    code, out, _ = cli("plan", path, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["hardware"]["gpus_rented"] == 8 and data["cost"]["usd_per_hour"] == pytest.approx(3.6048)
    code, text, _ = cli("plan", path)
    assert code == 0 and "rents 8, uses 1" in text and "$3.60/h (8 GPUs rented" in text


def test_serving_text_and_json_agree_on_what_is_rented(cli):
    """At lambda, with the single-GPU types priced out, one replica of the 8B model takes one GPU of
    the 8-GPU A100-80GB instance ($2.79 x 8): the month is the whole instance."""
    args = ("plan", TRIAGE, "--set", "budget.provider=lambda",
            "--set", "budget.prices={A10: 100, RTX-A6000: 100, A100-40GB: 100, H100-80GB-PCIE: 100}")
    code, out, _ = cli(*args, "--format", "json")
    assert code == 0
    s = json.loads(out)["economics"]["serving"]
    assert (s["gpu"], s["replicas"], s["gpus_per_replica"], s["gpus_rented"]) == ("A100-80GB", 1, 1, 8)
    assert s["monthly_usd"] == pytest.approx(8 * LAMBDA_A100 * 24 * 30.4, abs=0.01)
    code, text, _ = cli(*args)
    assert code == 0 and "always on (8 GPUs rented, whole instances, for 1)" in " ".join(text.split())


# --------------------------------------------------------------------------- serving


def serving_gpu(*offers):
    return econ.ServingGPU("G40", 40 * GIB, 100.0, 1000.0, tuple(Offer(p, f"test {n}x", n, "t", f"{n}x")
                                                                 for p, n in offers))


REF = econ.Reference(output_tok_s=1000.0, params=8e9, gpu="REF", bandwidth_gbs=1000.0, label="test reference")


def serve(gpu, **kw):
    base = dict(api_model="my-api", requests_per_day=10_000, input_tokens_per_request=500,
                output_tokens_per_request=100, input_usd_per_mtok=5.0, output_usd_per_mtok=15.0)
    return econ.compute(EconomicsSpec(**{**base, **kw}), 8e9, 100.0, [gpu], REF)


def test_serving_rents_whole_instances():
    # one replica of one G40 (3.33 req/s; peak 0.35/s), always on: 24 x 30.4 = 729.6 h a month
    e = serve(serving_gpu((1.0, 8)))
    s = e.serving
    assert (s.replicas, s.gpus_per_replica, s.gpus_rented) == (1, 1, 8)
    assert e.self_hosted_monthly_usd == pytest.approx(8 * 1.0 * 729.6)  # the whole instance, not 1/8 of it
    assert s.gpu_hours_per_month == pytest.approx(8 * 729.6) and "rents 8 (whole instance), uses 1" in s.price_source
    # a single-GPU listing at $3 beats the $8/h instance for one replica
    e = serve(serving_gpu((1.0, 8), (3.0, 1)))
    assert (e.serving.gpus_rented, e.self_hosted_monthly_usd) == (1, pytest.approx(3 * 729.6))
    # 200,000/day needs 3 replicas (6.94 req/s peak): 3 x $3 > one instance of 8 at $8, shared by them
    e = serve(serving_gpu((1.0, 8), (3.0, 1)), requests_per_day=200_000)
    assert (e.serving.replicas, e.serving.gpus_rented) == (3, 8)
    assert e.self_hosted_monthly_usd == pytest.approx(8 * 729.6)


def test_scaled_to_zero_serving_rents_an_instance_per_busy_replica():
    # busy hours: 10,000 x 30.4 x 0.3 s / 3600 = 25.333 h a month, each on a whole 8-GPU instance
    e = serve(serving_gpu((1.0, 8)), scale_to_zero=True)
    assert e.serving.gpus_rented == 8
    assert e.self_hosted_monthly_usd == pytest.approx(25.333 * 8, abs=0.01)


def test_serving_gpus_carry_the_catalogs_instances():
    lam = {g.name: g for g in econ.serving_gpus(BudgetSpec(provider="lambda"))}
    a100 = lam["A100-80GB"]
    assert a100.rent(1).usd_per_hour == pytest.approx(8 * LAMBDA_A100) and a100.rent(1).rented == 8
    mine = {g.name: g for g in econ.serving_gpus(BudgetSpec(provider="lambda", prices={"A100-80GB": 2.0}))}
    assert mine["A100-80GB"].rent(1).usd_per_hour == 2.0
