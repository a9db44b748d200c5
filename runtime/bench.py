"""`recipe bench`: measure a served model against the recipe's SLA, and beside the API it replaces.

The first endpoint (or the model `--serve` starts) is the candidate, the tuned model; a second one is
the baseline, typically the API being replaced. Each is driven with the recipe's held-out inputs at the
same load (runtime/loadgen.py), scored with the recipe's eval metric (runtime/metrics.py, as `recipe
eval`), and checked against `serving.sla`. API keys come from environment variables named on the
command line; only the variable's name is ever written.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from ..schemas.errors import RecipeError, UsageError
from ..schemas.money import usd
from ..schemas.recipe import default_metric
from . import benchstats, loadgen

EXIT_GATE = 4  # quality below eval.min_score
EXIT_SLA = 5  # the candidate misses serving.sla
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Options:
    endpoints: list = field(default_factory=list)  # URLs
    models: list = field(default_factory=list)  # model names, in the endpoints' order
    key_envs: list = field(default_factory=list)  # environment variable names, in the endpoints' order
    serve: bool = False
    model_dir: Optional[Path] = None
    rate: Optional[float] = None
    concurrency: Optional[int] = None
    duration: float = 60.0
    requests: int = 500
    timeout: float = 60.0
    max_tokens: Optional[int] = None
    warmup: int = 1
    gpu: Optional[str] = None
    gpu_count: int = 1
    output: Optional[Path] = None
    serve_timeout: float = 300.0


# --------------------------------------------------------------------------- inputs


def resolve(target: str, overrides: list):
    """(plan, the directory its paths are relative to, run directory) for a recipe or a run directory."""
    from ..compiler.pipeline import plan_for_run

    path = Path(target)
    if path.is_dir():
        if not (path / "plan.json").is_file():
            raise UsageError(f"{target}: not a run directory (no plan.json); give the recipe or its output.dir")
        if overrides:
            raise UsageError("--set applies to a recipe, not to a run directory (its plan is fixed)")
        from ..schemas.plan import Plan

        plan = Plan.model_validate_json((path / "plan.json").read_text(encoding="utf-8"))
        run_dir = path.resolve()
        return plan, recipe_dir(plan, run_dir), run_dir
    plan, plan_dir = plan_for_run(target, overrides, True)
    return plan, plan_dir, (plan_dir / plan.output_dir).resolve()


def recipe_dir(plan, run_dir: Path) -> Path:
    """Where a run's recipe (and so its relative data paths) lives: the run directory minus output.dir,
    else the recorded recipe path."""
    out = Path(plan.output_dir)
    if not out.is_absolute() and len(run_dir.parts) > len(out.parts) and run_dir.parts[-len(out.parts):] == out.parts:
        return Path(*run_dir.parts[:-len(out.parts)])
    recorded = Path(plan.lock.recipe_path)
    return (recorded if recorded.is_absolute() else Path.cwd() / recorded).resolve().parent


def held_out(plan, plan_dir: Path) -> tuple[list, list]:
    """The held-out prompts and references, as `recipe eval` reads them."""
    from . import data as data_mod
    from .evaluate import MAX_EXAMPLES, prompts_and_references

    d = plan.recipe.data
    if d.eval:  # sources read and mixed as `recipe run` reads them
        rows = data_mod.read_sources(plan.recipe, plan_dir, "eval")[0].rows
    elif d.eval_fraction:
        rows = data_mod.read_sources(plan.recipe, plan_dir, "train")[0].held_out
    else:
        raise RecipeError("the recipe has no held-out data to bench with: set data.eval or data.eval_fraction")
    prompts, refs = prompts_and_references(rows[:MAX_EXAMPLES])
    if not prompts:
        raise RecipeError(f"data.format {d.format!r} has no prompts and references to bench with")
    return prompts, refs


def load_for(plan, opts: Options) -> tuple[loadgen.Load, str]:
    """The load to apply and where it comes from: the command line, else the recipe's economics."""
    if opts.rate is not None and opts.concurrency is not None:
        raise UsageError("give --rate or --concurrency, not both")
    econ = plan.recipe.economics
    max_tokens = opts.max_tokens or (econ.output_tokens_per_request if econ else None)
    if max_tokens is None:
        setting = plan.recipe.eval.max_new_tokens
        max_tokens = setting if isinstance(setting, int) else 64
    common = dict(duration=opts.duration, max_requests=opts.requests, timeout=opts.timeout, max_tokens=max_tokens)
    if opts.rate is not None:
        return loadgen.Load(rate=opts.rate, **common), "--rate"
    if opts.concurrency is not None:
        return loadgen.Load(concurrency=opts.concurrency, **common), "--concurrency"
    if econ is None:
        raise UsageError("no load to apply: give --rate or --concurrency, or an economics: section in the recipe")
    from ..compiler.economics import PEAK_FACTOR, SECONDS_PER_DAY

    rate = econ.requests_per_day / SECONDS_PER_DAY * PEAK_FACTOR
    return (loadgen.Load(rate=rate, **common),
            f"economics: {econ.requests_per_day:,} requests/day x peak factor {PEAK_FACTOR:g} / 86,400 s")


def api_key(env_name: Optional[str], url: str) -> tuple[Optional[str], Optional[str]]:
    """(the key, the variable it came from); loopback endpoints get none unless one is named."""
    if env_name:
        if env_name not in os.environ:
            raise UsageError(f"--api-key-env {env_name}: no such environment variable")
        return os.environ[env_name], env_name
    if urlsplit(url).hostname in LOOPBACK:
        return None, None
    return (os.environ["OPENAI_API_KEY"], "OPENAI_API_KEY") if "OPENAI_API_KEY" in os.environ else (None, None)


# --------------------------------------------------------------------------- measuring


def quality(plan, plan_dir: Path, outcomes: list, refs: list) -> dict:
    """The eval metric over the first successful answer to each held-out example."""
    from . import metrics
    from .evaluate import load_schema

    metric = plan.recipe.eval.metric or default_metric(plan.recipe.task)
    answers: dict[int, str] = {}
    for o in outcomes:
        if o.ok and o.example not in answers:
            answers[o.example] = o.text
    if not answers:
        return {"metric": metric, "score": None, "examples_scored": 0, "examples_held_out": len(refs)}
    keys = sorted(answers)
    result = metrics.compute_metric(metric, [answers[k] for k in keys], [refs[k] for k in keys],
                           load_schema(plan, plan_dir))
    return {"metric": metric, "score": round(result["score"], 4), "examples_scored": len(keys),
            "examples_held_out": len(refs),
            "details": {k: v for k, v in result.items() if k in ("correct", "total", "valid_json_rate",
                                                                 "accuracy", "macro_f1", "schema_conformance")}}


def price(plan, role: str, stats: dict, opts: Options) -> dict:
    """$/M tokens (input + output): the API's list price for the baseline, GPU rent over measured
    throughput for the candidate (with --gpu)."""
    econ = plan.recipe.economics
    if role == "baseline":
        if econ is None:
            return {"usd_per_mtok": None, "source": "no economics: section, so no API price"}
        from ..compiler.economics import api_price, blended_usd_per_mtok

        api = api_price(econ)
        pin, pout, source, model = api.input_usd_per_mtok, api.output_usd_per_mtok, api.source, api.model
        tin = stats["mean_input_tokens"] or econ.input_tokens_per_request
        tout = stats["mean_output_tokens"] or econ.output_tokens_per_request
        return {"usd_per_mtok": round(blended_usd_per_mtok(tin, tout, pin, pout), 4),
                "source": f"{model} list price {usd(pin)} in / {usd(pout)} out per M tokens ({source}), blended at "
                          f"{tin:g} in / {tout:g} out tokens per request"}
    if not opts.gpu:
        return {"usd_per_mtok": None, "source": "give --gpu NAME (the GPU it ran on) to price it"}
    from ..compiler import economics

    gpu = next((g for g in economics.serving_gpus(plan.recipe.budget) if g.name == opts.gpu), None)
    if gpu is None:
        return {"usd_per_mtok": None, "source": f"--gpu {opts.gpu}: no on-demand price in the catalog"}
    wall = stats["wall_seconds"]
    tokens = stats["output_tokens"] + (stats["mean_input_tokens"] or 0) * stats["requests_ok"]
    if not wall or not tokens:
        return {"usd_per_mtok": None, "source": "nothing measured to price"}
    rented = gpu.rent(opts.gpu_count)  # whole instances: an 8-GPU instance is paid whole for 1 GPU
    per_hour = rented.usd_per_hour
    return {"usd_per_mtok": round(per_hour / (tokens / wall * 3600) * 1e6, 4),
            "source": f"{opts.gpu_count} x {gpu.name} at {usd(rented.offer.usd_per_gpu_hour)}/GPU-hour "
                      f"({rented.label or 'catalog'}) "
                      f"over the measured {tokens / wall:,.1f} tokens/s (input + output) at this load"}


def measure(name: str, role: str, endpoint: loadgen.Endpoint, key_env: Optional[str], prompts: list, refs: list,
            load: loadgen.Load, plan, plan_dir: Path, opts: Options, log=print) -> dict:
    for i in range(opts.warmup):
        warm = loadgen.Outcome(index=-1, example=0, start=0.0)
        loadgen.send(endpoint, loadgen.as_messages(prompts[i % len(prompts)]), load, warm, time.perf_counter(),
                     threading.Event())
        if not warm.ok:
            log(f"{name}: warm-up request failed ({warm.error or 'timed out'})")
    log(f"{name}: {endpoint.shown_url} ({endpoint.model}), {load.describe()}")
    result = loadgen.run(endpoint, prompts, load)
    stats = benchstats.summarize(result)
    sla = plan.recipe.serving.sla if plan.recipe.serving else None
    lines = benchstats.sla_lines(stats, sla)
    return {"name": name, "role": role, "url": endpoint.shown_url, "model": endpoint.model, "api_key_env": key_env,
            "stats": stats, "quality": quality(plan, plan_dir, result.outcomes, refs),
            "sla": {"lines": lines, "pass": all(line["pass"] for line in lines) if lines else None},
            "cost": price(plan, role, stats, opts)}


def verdict(plan, candidate: dict) -> dict:
    """'safe to switch' only when the SLA is set and met and the quality reaches eval.min_score."""
    reasons = []
    sla = candidate["sla"]
    if sla["pass"] is None:
        reasons.append("no serving.sla in the recipe to check")
    elif not sla["pass"]:
        reasons += [f"SLA {line['target']}: measured {line['measured']} vs limit {line['limit']:g}"
                    for line in sla["lines"] if not line["pass"]]
    bar, q = plan.recipe.eval.min_score, candidate["quality"]
    if bar is None:
        reasons.append("no eval.min_score in the recipe to gate quality on")
    elif q["score"] is None or q["score"] < bar:
        shown = "no answers" if q["score"] is None else f"{q['score']:.3f}"
        reasons.append(f"quality {q['metric']} {shown} is below eval.min_score {bar:g}")
    ok = not reasons
    return {"safe_to_switch": ok, "text": "safe to switch" if ok else "NOT safe to switch: " + "; ".join(reasons),
            "sla_pass": sla["pass"], "quality_pass": None if bar is None or q["score"] is None else q["score"] >= bar}


def exit_code(plan, candidate: dict) -> int:
    if candidate["sla"]["pass"] is False:
        return EXIT_SLA
    bar, score = plan.recipe.eval.min_score, candidate["quality"]["score"]
    if bar is not None and (score is None or score < bar):
        return EXIT_GATE
    return 0


# --------------------------------------------------------------------------- the command


def served_model(plan, run_dir: Path, opts: Options) -> tuple[Path, Optional[Path]]:
    """(model directory, adapter or None) that --serve starts: --model-dir, else the run's merged model,
    else its base with the adapter."""
    if opts.model_dir is not None:
        if not (opts.model_dir / "config.json").is_file():
            raise UsageError(f"--model-dir {opts.model_dir}: no config.json there")
        return opts.model_dir, None
    merged = run_dir / "merged"
    if (merged / "config.json").is_file():
        return merged, None
    adapter = run_dir / "adapter"
    if (adapter / "adapter_config.json").is_file():
        return Path(plan.model.path or plan.model.name), adapter
    raise RecipeError(f"{run_dir}: nothing to serve (no merged/ nor adapter/); run `recipe run` and "
                      f"`recipe export {run_dir} --merge` first, or give --model-dir")


def detect_gpu() -> Optional[str]:
    from .serve import has_gpu

    if not has_gpu():
        return None
    import torch

    from ..compiler.catalogs import find_gpu

    found = find_gpu(torch.cuda.get_device_name(0))
    return found.name if found else None


def bench(target: str, overrides: list, opts: Options, log=print) -> int:
    plan, plan_dir, run_dir = resolve(target, overrides)
    n = len(opts.endpoints) + (1 if opts.serve else 0)
    if n == 0:
        raise UsageError("give --endpoint URL (twice for side by side) or --serve")
    if n > 2:
        raise UsageError("at most two endpoints: the tuned model and the one it replaces")
    for url in opts.endpoints:
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise UsageError(f"--endpoint {url!r}: expected an http:// or https:// URL")
        parts = urlsplit(url)
        if parts.password is not None:  # never sent, and it would be written to the report
            shown = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()
            raise UsageError(f"--endpoint {shown}: no user:password@ in the URL; put the key in an environment "
                             f"variable and pass --api-key-env VAR")
    if len(opts.models) > n or len(opts.key_envs) > n:
        raise UsageError("more --model / --api-key-env than endpoints")
    prompts, refs = held_out(plan, plan_dir)
    load, load_source = load_for(plan, opts)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out_dir = opts.output or run_dir / "bench" / stamp
    if opts.output is None and out_dir.exists():
        out_dir = run_dir / "bench" / f"{stamp}-{os.getpid()}"
    from .outdir import usable_dir

    usable_dir(out_dir, "the bench report's folder")  # before the bench, not after it
    econ = plan.recipe.economics
    default_models = [plan.name, econ.api_model if econ else plan.name]
    models = list(opts.models) + default_models[len(opts.models):]
    key_envs = list(opts.key_envs) + [None] * (n - len(opts.key_envs))

    def run_all(urls: list, served=None) -> list:
        results = []
        for i, url in enumerate(urls):
            role = "candidate" if i == 0 else "baseline"
            key, env = (None, None) if (served and i == 0) else api_key(key_envs[i], url)
            endpoint = loadgen.Endpoint(url, models[i], key)
            results.append(measure("tuned" if i == 0 else "replaced", role, endpoint, env, prompts, refs, load,
                                   plan, plan_dir, opts, log))
        return results

    serve_info = None
    if opts.serve:
        from .serve import serve

        model_dir, adapter = served_model(plan, run_dir, opts)
        out_dir.mkdir(parents=True, exist_ok=True)
        with serve(model_dir, models[0], out_dir / "serve.log", adapter, plan.training.max_seq_len,
                   plan.recipe.model.trust_remote_code, opts.serve_timeout, log=log) as served:
            serve_info = served.to_dict()
            if opts.gpu is None and served.engine == "vllm":
                opts.gpu = detect_gpu()
            endpoints = run_all([served.url, *opts.endpoints], served)
    else:
        endpoints = run_all(list(opts.endpoints))

    from . import bench_report

    candidate = endpoints[0]
    report = {
        "kind": "recipe bench", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe": plan.name, "model": plan.model.name, "target": str(target), "run_dir": str(run_dir),
        "load": {"mode": "rate" if load.rate else "concurrency", "rate": load.rate, "concurrency": load.concurrency,
                 "duration_s": load.duration, "max_requests": load.max_requests, "timeout_s": load.timeout,
                 "max_tokens": load.max_tokens, "source": load_source, "held_out_examples": len(prompts)},
        "sla": plan.recipe.serving.sla.model_dump() if plan.recipe.serving and plan.recipe.serving.sla else None,
        "min_score": plan.recipe.eval.min_score,
        "serve": serve_info,
        "hardware": {"gpu": opts.gpu, "gpus": opts.gpu_count},
        "endpoints": endpoints,
        "verdict": verdict(plan, candidate),
    }
    paths = bench_report.write(out_dir, report)
    bench_report.print_summary(report, log)
    log(f"report: {paths[1]}")
    return exit_code(plan, candidate)
