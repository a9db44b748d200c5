"""Economics: does fine-tuning pay for itself against the API call it replaces?

Pure arithmetic over the catalogs (API prices, GPU prices and specs, published vLLM serving
throughput); every constant below is stated in the plan's ``economics.assumptions``.

* API side: requests/day x 30.4 x (input tokens x input price + output tokens x output price) / 1e6.
* Serving side: the merged model's weights (2 / 1 / 0.56 bytes per parameter for bf16 / 8-bit /
  4-bit) must take at most 80% of a replica's memory (1, 2, 4 or 8 GPUs of one type). One replica
  serves a request in ``input / prefill rate + output / decode rate`` GPU-seconds, where the decode
  rate is a published vLLM figure for an 8B model on H100 scaled by 8B / parameters and by memory
  bandwidth (with `recipe plan --bench`: the rate `recipe bench` measured, on the GPU type it ran on), and the prefill rate is compute-bound: bf16 TFLOPS x 40% / (2 x parameters). Replicas
  cover the average request rate times a peak factor of 3; always on unless ``scale_to_zero``, then
  only busy GPU-hours are paid. GPUs are rented the cheapest way that gives at least the GPUs needed
  (compiler.rental): an instance of 8 GPUs is paid whole even when the replicas use fewer. Of the GPUs that hold the model, the one with the lowest monthly cost
  at this volume is taken (at one replica: the cheapest per hour).
* One-time: the plan's training cost, evaluation at 10% of it, engineering hours x hourly rate.
* Break-even days = one-time / (monthly saving / 30.4); never when the saving is not positive.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ..schemas.errors import RecipeError
from ..schemas.money import usd
from ..schemas.plan import ApiSide, Economics, OneTime, Serving
from ..schemas.recipe import BudgetSpec, EconomicsSpec, Recipe
from . import catalogs, hardware, rental
from .rental import Offer, Rental

DAYS_PER_MONTH = 30.4
SECONDS_PER_DAY = 86_400
PEAK_FACTOR = 3.0  # peak request rate / average request rate
WEIGHT_SHARE = 0.80  # weights may take this share of a replica's memory; the rest: KV cache, activations
BYTES_PER_PARAM = {"none": 2.0, "8bit": 1.0, "4bit": 0.56}  # 4-bit includes quantization constants
PREFILL_UTILIZATION = 0.40  # share of dense bf16 TFLOPS a prefill reaches
TP_EFFICIENCY = 0.85  # per-GPU throughput kept when a replica spans 2-8 GPUs (tensor parallel)
REPLICA_SIZES = (1, 2, 4, 8)
EVAL_SHARE = 0.10  # evaluation runs cost this share of training
REFERENCE_MIN_CONCURRENCY = 32

# The seed's rules of thumb.
SEED_MIN_REQUESTS_PER_DAY = 10_000
SEED_MIN_API_MONTHLY_USD = 5_000.0
SEED_MAX_BREAK_EVEN_DAYS = 60

GIB = 2**30


@dataclass(frozen=True)
class ServingGPU:
    """A GPU type a replica can be made of, with the ways to rent it at on-demand prices."""

    name: str
    memory_bytes: int
    tflops: float  # dense bf16 (fp16 where there is no bf16)
    bandwidth_gbs: float
    offers: tuple[Offer, ...]  # at least one

    def rent(self, count: int) -> Rental:
        """The cheapest way to rent at least ``count`` GPUs of this type (whole instances)."""
        return rental.cheapest(self.offers, count)


@dataclass(frozen=True)
class Reference:
    """The published decode throughput every other GPU and model size is scaled from."""

    output_tok_s: float
    params: float
    gpu: str
    bandwidth_gbs: float
    label: str = ""


@dataclass(frozen=True)
class ApiQuote:
    """The API the fine-tuned model would replace, at the prices the plan uses (a catalog row is
    catalogs.ApiPrice)."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    source: str
    as_of: Optional[str]
    retired: bool
    model: str


@dataclass(frozen=True)
class ServingOption:
    gpu: ServingGPU
    gpus_per_replica: int
    replicas: int
    prefill_tok_s: float
    decode_tok_s: float
    seconds_per_request: float
    requests_per_second: float
    peak_requests_per_second: float
    gpu_hours_per_month: float  # rented GPU-hours, idle ones included
    monthly_usd: float
    rental: Rental  # always on: the GPUs of all replicas; scaled to zero: those of one busy replica

    @property
    def usd_per_replica_hour(self) -> float:
        """One replica's GPUs at the rental's per-GPU price: the cost of a replica when every GPU rented is busy."""
        return self.rental.offer.usd_per_gpu_hour * self.gpus_per_replica

    @property
    def capacity_bytes(self) -> int:
        return self.gpu.memory_bytes * self.gpus_per_replica


# --------------------------------------------------------------------------- arithmetic


def api_monthly_usd(requests_per_day: float, input_tokens: float, output_tokens: float,
                    input_usd_per_mtok: float, output_usd_per_mtok: float) -> float:
    return requests_per_day * DAYS_PER_MONTH * (input_tokens * input_usd_per_mtok
                                                + output_tokens * output_usd_per_mtok) / 1e6


def blended_usd_per_mtok(input_tokens: float, output_tokens: float, input_usd_per_mtok: float,
                         output_usd_per_mtok: float) -> float:
    return (input_tokens * input_usd_per_mtok + output_tokens * output_usd_per_mtok) / (input_tokens + output_tokens)


def weights_bytes(parameters: float, quantization: str) -> float:
    return parameters * BYTES_PER_PARAM[quantization]


def break_even_days(one_time_usd: float, monthly_saving_usd: Optional[float]) -> Optional[float]:
    if monthly_saving_usd is None or monthly_saving_usd <= 0:
        return None
    return one_time_usd / (monthly_saving_usd / DAYS_PER_MONTH)


def serving_option(gpu: ServingGPU, n: int, parameters: float, requests_per_day: float, input_tokens: float,
                   output_tokens: float, scale_to_zero: bool, reference: Reference,
                   measured_decode: Optional[float] = None) -> ServingOption:
    """Throughput and monthly cost of serving on replicas of ``n`` x ``gpu`` (decode measured, when given)."""
    efficiency = 1.0 if n == 1 else TP_EFFICIENCY
    prefill = n * efficiency * gpu.tflops * 1e12 * PREFILL_UTILIZATION / (2 * parameters)
    decode = measured_decode or (n * efficiency * reference.output_tok_s * (reference.params / parameters)
                                 * (gpu.bandwidth_gbs / reference.bandwidth_gbs))
    seconds = input_tokens / prefill + output_tokens / decode
    rps = 1 / seconds
    peak = requests_per_day / SECONDS_PER_DAY * PEAK_FACTOR
    replicas = max(1, math.ceil(peak / rps - 1e-9))
    if scale_to_zero:  # each busy replica rents its n GPUs (whole instances) for the time it is busy
        rented, hours = gpu.rent(n), requests_per_day * DAYS_PER_MONTH * seconds / 3600
    else:  # every replica always on: all their GPUs rented together, instances shared between replicas
        rented, hours = gpu.rent(replicas * n), 24 * DAYS_PER_MONTH
    return ServingOption(gpu, n, replicas, prefill, decode, seconds, rps, peak, hours * rented.rented,
                         hours * rented.usd_per_hour, rented)


def serving_options(parameters: float, quantization: str, requests_per_day: float, input_tokens: float,
                    output_tokens: float, scale_to_zero: bool, gpus: Sequence[ServingGPU],
                    reference: Reference, measured=None) -> list[ServingOption]:
    """For each GPU type, the smallest replica that holds the weights; cheapest per month first.
    ``measured`` (compiler.bench_economics.Measured): that GPU type is served at its measured size and rate."""
    need = weights_bytes(parameters, quantization)
    out = []
    for gpu in gpus:
        n = next((n for n in REPLICA_SIZES if need <= WEIGHT_SHARE * n * gpu.memory_bytes), None)
        decode = None
        if measured is not None and gpu.name == measured.gpu:
            n, decode = measured.gpus, measured.output_tokens_per_s
        if n is not None:
            out.append(serving_option(gpu, n, parameters, requests_per_day, input_tokens, output_tokens,
                                      scale_to_zero, reference, decode))
    return sorted(out, key=lambda o: (round(o.monthly_usd, 6), o.usd_per_replica_hour, o.gpu.name))


# --------------------------------------------------------------------------- catalogs


@functools.lru_cache(maxsize=1)
def reference() -> Reference:
    """The median of the measured vLLM BF16 single-GPU rows at high concurrency in serving.csv."""
    rows = [r for r in catalogs.serving_rows()
            if r.kind == "measured" and r.engine.lower().startswith("vllm") and "BF16" in r.precision
            and r.num_gpus == 1 and (r.concurrency_int or 0) >= REFERENCE_MIN_CONCURRENCY]
    gpu_names = {r.gpu for r in rows}
    if not rows or len(gpu_names) != 1:
        raise catalogs.CatalogError(f"{catalogs.SERVING_FILE}: expected measured vLLM BF16 rows at concurrency "
                                    f">= {REFERENCE_MIN_CONCURRENCY} on one GPU type")
    rows.sort(key=lambda r: r.output_tok_s)
    row = rows[(len(rows) - 1) // 2]  # the lower median: an actual row, not an average of two
    gpu = catalogs.find_gpu(row.gpu)
    figures = " / ".join(f"{r.output_tok_s:,.0f}" for r in rows)
    label = (f"{row.model} on {row.gpu}, {row.engine} {row.engine_version}, {row.workload}, {row.concurrency} "
             f"concurrent ({row.source}, {row.date}); the median of the measured vLLM BF16 rows at concurrency "
             f">= {REFERENCE_MIN_CONCURRENCY} in {catalogs.SERVING_FILE} ({figures} tok/s)")
    return Reference(row.output_tok_s, row.params_b * 1e9, row.gpu, gpu.bandwidth_gbs, label)


def serving_gpus(budget: BudgetSpec) -> list[ServingGPU]:
    """Catalog GPUs at on-demand prices; budget.provider and budget.prices apply, spot does not."""
    serving_budget = budget.model_copy(update={"gpus": None, "gpu": None, "spot": False, "custom_gpus": []})
    out = []
    for c in hardware.candidates(serving_budget):
        gpu = catalogs.find_gpu(c.name)
        if gpu is None or not c.offers:
            continue
        out.append(ServingGPU(gpu.name, gpu.memory_bytes, gpu.training_tflops, gpu.bandwidth_gbs, c.offers))
    return out


def api_price(spec: EconomicsSpec) -> ApiQuote:
    """The recipe's API model at its prices: the recipe's where it gives them, else the catalog's."""
    found = catalogs.find_api_model(spec.api_model)
    pin, pout = spec.input_usd_per_mtok, spec.output_usd_per_mtok
    if found is None and (pin is None or pout is None):
        raise RecipeError(f"economics.api_model: no price for '{spec.api_model}'; give "
                          f"economics.input_usd_per_mtok and output_usd_per_mtok")
    model = found.model if found else spec.api_model
    if pin is not None and pout is not None:
        return ApiQuote(pin, pout, "economics.input_usd_per_mtok / output_usd_per_mtok in the recipe", None, False,
                        model)
    source = f"{found.source}; {found.as_of}"
    if pin is not None:
        source = f"input: economics.input_usd_per_mtok in the recipe; output: {source}"
    elif pout is not None:
        source = f"output: economics.output_usd_per_mtok in the recipe; input: {source}"
    return ApiQuote(found.input_usd_per_mtok if pin is None else pin,
                    found.output_usd_per_mtok if pout is None else pout, source, found.as_of, found.retired, model)


# --------------------------------------------------------------------------- the plan's section


def plan_section(recipe: Recipe, parameters: int, training_usd: Optional[float], fits: bool = True,
             measured=None) -> Optional[Economics]:
    """The plan's `economics` section, or None when the recipe has no `economics:`."""
    spec = recipe.economics
    if spec is None:
        return None
    has_eval = recipe.data.eval is not None or recipe.data.eval_fraction is not None
    return compute(spec, parameters, training_usd, serving_gpus(recipe.budget), reference(),
                   has_eval=has_eval, fits=fits, measured=measured)


def _days(days: float) -> str:
    if days < 1:
        return "under a day"
    n = math.ceil(days - 1e-9)
    return f"{n} day{'s' * (n != 1)}"


@dataclass(frozen=True)
class OneTimeCost:
    training_usd: Optional[float]  # None: the plan has no training price
    eval_usd: Optional[float]
    engineering_usd: float

    @property
    def total_usd(self) -> float:
        return (self.training_usd or 0.0) + (self.eval_usd or 0.0) + self.engineering_usd


def one_time_cost(spec: EconomicsSpec, training_usd: Optional[float]) -> OneTimeCost:
    """Training (the plan's cost), evaluation at EVAL_SHARE of it, engineering hours x rate."""
    return OneTimeCost(training_usd, None if training_usd is None else training_usd * EVAL_SHARE,
                       spec.engineering_hours * spec.hourly_rate)


def serving_section(best: ServingOption, spec: EconomicsSpec, parameters: float) -> Serving:
    """The plan's `economics.serving`: the chosen serving option, rounded for the plan."""
    quant, tokens_per_request = spec.serving_quantization, spec.input_tokens_per_request + spec.output_tokens_per_request
    tokens_month = spec.requests_per_day * DAYS_PER_MONTH * tokens_per_request
    return Serving(
        gpu=best.gpu.name, gpus_per_replica=best.gpus_per_replica, replicas=best.replicas, quantization=quant,
        weights_bytes=int(weights_bytes(parameters, quant)), capacity_bytes=best.capacity_bytes,
        usd_per_gpu_hour=best.rental.offer.usd_per_gpu_hour, price_source=best.rental.label or "catalog",
        gpus_rented=best.rental.rented,
        scale_to_zero=spec.scale_to_zero,
        prefill_tokens_per_second=round(best.prefill_tok_s, 1), decode_tokens_per_second=round(best.decode_tok_s, 1),
        seconds_per_request=round(best.seconds_per_request, 4),
        requests_per_second=round(best.requests_per_second, 3),
        peak_requests_per_second=round(best.peak_requests_per_second, 3),
        gpu_hours_per_month=round(best.gpu_hours_per_month, 2), monthly_usd=round(best.monthly_usd, 2),
        usd_per_mtok=round(best.monthly_usd / tokens_month * 1e6, 4),
        usd_per_mtok_at_capacity=round(best.usd_per_replica_hour
                                       / (best.requests_per_second * 3600 * tokens_per_request) * 1e6, 4))


def verdict(best: Optional[ServingOption], api_monthly: float, days: Optional[float], spec: EconomicsSpec,
            parameters: float) -> str:
    """One line: cannot self-host, never pays back, or pays back in N days."""
    quant = spec.serving_quantization
    if best is None:
        return (f"cannot self-host: no catalog GPU type, up to {REPLICA_SIZES[-1]} per replica, holds the "
                f"{weights_bytes(parameters, quant) / GIB:,.0f} GiB of weights ({quant} quantization) in "
                f"{WEIGHT_SHARE:.0%} of its memory")
    if days is None:
        more = best.monthly_usd - api_monthly
        return ("never pays back: self-hosting costs " +
                (f"{usd(more)}/month more than the API" if more > 0.005 else "as much per month as the API") +
                f" ({usd(best.monthly_usd)} vs {usd(api_monthly)})")
    return (f"pays back in {_days(days)}, then saves {usd(api_monthly - best.monthly_usd)}/month "
            f"({usd(api_monthly)} API vs {usd(best.monthly_usd)} self-hosted)")


def caveats(spec: EconomicsSpec, api: ApiQuote, api_monthly: float, options: Sequence[ServingOption],
            days: Optional[float], cost: OneTimeCost, has_eval: bool, fits: bool, measured=None) -> list[str]:
    """What the figures leave out or where the seed's rules of thumb disagree."""
    best = options[0] if options else None
    rpd = spec.requests_per_day
    out = []
    if measured is not None:
        out.append(measured.statement(any(o.gpu.name == measured.gpu for o in options),
                                      best.gpu.name if best else None))
    if best is not None and days is None:
        out.append(f"savings never repay the one-time {usd(cost.total_usd)}: self-hosting costs more per month "
                   f"than the API; stay on the API" + ("" if spec.scale_to_zero else
                                                       " (or try economics.scale_to_zero: true)"))
    if rpd < SEED_MIN_REQUESTS_PER_DAY:
        out.append(f"volume: {rpd:,} requests/day is below the seed's {SEED_MIN_REQUESTS_PER_DAY:,}/day for "
                   f"fine-tuning one task; at low volume the API is usually the simpler choice")
    if api_monthly < SEED_MIN_API_MONTHLY_USD:
        out.append(f"API spend {usd(api_monthly)}/month is below the seed's {usd(SEED_MIN_API_MONTHLY_USD)}"
                   f"/month, above which fine-tuning pays back within 30-60 days"
                   + ("; the saving is small in absolute terms" if days is not None else ""))
    if days is not None and days > SEED_MAX_BREAK_EVEN_DAYS:
        out.append(f"break-even after {_days(days)} is beyond the seed's 30-60 days")
    if cost.training_usd is None:
        out.append(("nothing fits the training budget, so there is no training cost" if not fits else
                    "the plan has no training price (no GPU price; give budget.prices)") +
                   "; the one-time cost leaves training and evaluation out")
    elif not fits:
        out.append("the plan does not fit the budget; the training cost is that of the closest option")
    if cost.engineering_usd == 0:
        out.append("the one-time cost counts no engineering time; set economics.engineering_hours and "
                   "economics.hourly_rate")
    if api.retired:
        out.append(f"{api.model} is retired; its price may not be what a replacement API costs")
    if not has_eval:
        out.append("no held-out eval set (data.eval or data.eval_fraction); the seed asks for one before "
                   "replacing an API")
    return out


def assumptions(spec: EconomicsSpec, api: ApiQuote, ref: Reference, measured=None) -> list[str]:
    """Every constant and rule the figures rest on, in words."""
    quant = spec.serving_quantization
    bpp = BYTES_PER_PARAM[quant]
    return [
        f"a month is {DAYS_PER_MONTH} days; API monthly = requests/day x {DAYS_PER_MONTH} x (input tokens x input "
        f"price + output tokens x output price) / 1e6",
        f"API price {api.model}: {usd(api.input_usd_per_mtok)} input, {usd(api.output_usd_per_mtok)} output per M "
        f"tokens ({api.source})",
        f"serving weights: {bpp:g} bytes per parameter ({'bf16' if quant == 'none' else quant}); a replica holds "
        f"them when they take at most {WEIGHT_SHARE:.0%} of its memory (the rest: KV cache, activations, "
        f"CUDA context)",
        f"serving GPU: of the catalog GPUs at on-demand prices (budget.provider and budget.prices apply), "
        f"1-{REPLICA_SIZES[-1]} per replica ({TP_EFFICIENCY:.0%} per-GPU efficiency above one), the one with "
        f"the lowest monthly cost at this volume",
        "GPUs rented the cheapest way that gives at least the GPUs needed: an instance of several GPUs is "
        "paid whole (ceil(GPUs needed / GPUs per instance) instances), idle GPUs included; budget.prices "
        "pays exactly the GPUs used",
        f"decode: {ref.output_tok_s:,.0f} output tokens/s at {ref.params / 1e9:g}B parameters on {ref.gpu} "
        f"({ref.label}), scaled by {ref.params / 1e9:g}B / parameters and by memory bandwidth relative to "
        f"{ref.gpu}'s {ref.bandwidth_gbs:,.0f} GB/s; quantized serving assumed no faster than bf16",
        f"prefill: dense bf16 TFLOPS x {PREFILL_UTILIZATION:.0%} / (2 x parameters) input tokens/s",
        *([] if measured is None else [f"decode on {measured.gpu}: measured by `recipe bench`, {measured.label}, "
                                       f"not the catalog's scaled figure"]),
        f"GPU time per request = input tokens / prefill rate + output tokens / decode rate; replicas = "
        f"ceil(requests/day / 86,400 x {PEAK_FACTOR:g} (peak factor) / requests per second of one replica)",
        (f"scale to zero: only busy GPU-hours are paid (requests x GPU time per request); cold starts and "
         f"minimum billing are not counted" if spec.scale_to_zero else
         f"always on: GPUs rented for all replicas x 24 h x {DAYS_PER_MONTH} days x price per GPU-hour (at least "
         f"one replica)"),
        "self-hosted cost is GPU rent only: no storage, egress, monitoring or on-call time",
        "cost per million tokens is blended over input and output tokens at this recipe's mix",
        f"one-time = training (the plan's cost) + evaluation at {EVAL_SHARE:.0%} of training + "
        f"engineering_hours x hourly_rate",
        f"break-even days = one-time / (monthly saving / {DAYS_PER_MONTH}); never when the saving is not positive",
        "not checked: that this is one well-defined task, learnable from examples, that needs no fresh knowledge "
        "and that prompting does not already handle (the seed's checklist)",
    ]


def compute(spec: EconomicsSpec, parameters: float, training_usd: Optional[float], gpus: Sequence[ServingGPU],
            ref: Reference, has_eval: bool = True, fits: bool = True, measured=None) -> Economics:
    """API side, serving side, one-time cost, break-even; then the verdict, caveats and assumptions."""
    rpd, tin, tout = spec.requests_per_day, spec.input_tokens_per_request, spec.output_tokens_per_request
    api = api_price(spec)
    pin, pout = api.input_usd_per_mtok, api.output_usd_per_mtok
    api_monthly = api_monthly_usd(rpd, tin, tout, pin, pout)
    options = serving_options(parameters, spec.serving_quantization, rpd, tin, tout, spec.scale_to_zero, gpus,
                              ref, measured)
    best = options[0] if options else None
    cost = one_time_cost(spec, training_usd)
    saving = None if best is None else api_monthly - best.monthly_usd
    days = break_even_days(cost.total_usd, saving)
    return Economics(
        api_monthly_usd=round(api_monthly, 2),
        self_hosted_monthly_usd=None if best is None else round(best.monthly_usd, 2),
        one_time_usd=round(cost.total_usd, 2),
        monthly_saving_usd=None if saving is None else round(saving, 2),
        break_even_days=None if days is None else round(days, 2),
        verdict=verdict(best, api_monthly, days, spec, parameters),
        requests_per_day=rpd, input_tokens_per_request=tin, output_tokens_per_request=tout,
        tokens_per_month=int(round(rpd * DAYS_PER_MONTH * (tin + tout))),
        api=ApiSide(model=api.model, input_usd_per_mtok=pin, output_usd_per_mtok=pout, price_source=api.source,
                    as_of=api.as_of, retired=api.retired, monthly_usd=round(api_monthly, 2),
                    usd_per_mtok=round(blended_usd_per_mtok(tin, tout, pin, pout), 4)),
        serving=None if best is None else serving_section(best, spec, parameters),
        one_time=OneTime(training_usd=None if training_usd is None else round(training_usd, 2),
                         eval_usd=None if cost.eval_usd is None else round(cost.eval_usd, 2),
                         engineering_usd=round(cost.engineering_usd, 2), total_usd=round(cost.total_usd, 2)),
        caveats=caveats(spec, api, api_monthly, options, days, cost, has_eval, fits, measured),
        assumptions=assumptions(spec, api, ref, measured),
    )
