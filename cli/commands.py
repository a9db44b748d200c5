"""The `recipe` command line. It wires the compiler (and, lazily, the runtime) together.

Exit codes: 0 success, 1 invalid recipe or data (or another user error), 2 bad usage, 3 nothing fits
the budget, 4 trained but below eval.min_score (not promoted), 5 (bench) the served model misses serving.sla,
130 interrupted (a checkpoint was saved).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .. import __version__
from ..schemas.errors import RecipeError, UsageError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Declarative LoRA / QLoRA / DoRA fine-tuning: validate, plan and run recipes.",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)

SET_HELP = "Override a recipe key, e.g. --set method.rank=32 (repeatable; null removes a key)."


def _version(value: bool) -> None:
    if value:
        print(f"recipe {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


@app.command()
def validate(
    paths: List[str] = typer.Argument(..., help="Recipe files, directories or glob patterns."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only problems."),
) -> None:
    """Check recipes; print every problem as file:line:col: key: message."""
    from ..compiler.discover import expand
    from ..compiler.pipeline import check_file

    files = expand(paths)
    invalid = errors = warnings = 0
    for file in files:
        result = check_file(file, set_)
        for problem in result.problems:
            print(problem)
        errors += len(result.errors)
        warnings += len(result.warnings)
        if not result.ok:
            invalid += 1
        elif not quiet:
            print(f"{file}: ok")
    if not quiet or invalid:
        noun = "recipe" if len(files) == 1 else "recipes"
        print(f"{len(files)} {noun} checked: {len(files) - invalid} valid, {invalid} invalid "
              f"({errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)})",
              file=sys.stderr)
    raise typer.Exit(1 if invalid else 0)


@app.command()
def plan(
    recipe: str = typer.Argument(..., help="The recipe file (YAML or TOML)."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    format: str = typer.Option("text", "--format", "-f", help="text | json | markdown"),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Write the plan as a lock file that `recipe run` executes."),
    trace: bool = typer.Option(False, "--trace", help="Also measure the step on fake tensors "
                                                      "(needs the [train] extra; no GPU, no weights)."),
    compare: bool = typer.Option(False, "--compare", help="Plan the same recipe at 2-4 sizes of its model's "
                                                          "family: training cost, serving cost, break-even "
                                                          "(needs economics: in the recipe)."),
    bench: Optional[Path] = typer.Option(None, "--bench", help="Serving throughput measured by `recipe bench`: "
                                                               "a bench_report.json, a run directory (its "
                                                               "latest), or `latest` (the recipe's run "
                                                               "directory's), instead of the catalog's estimate."),
) -> None:
    """Compile a recipe into a plan: memory, method, GPU, time and cost, with reasons."""
    if format not in ("text", "json", "markdown"):
        raise UsageError(f"--format {format!r}: expected text, json or markdown")
    if compare:
        if output is not None or trace or bench is not None:
            raise UsageError("--compare cannot be combined with -o, --trace or --bench")
        from ..compiler import compare as comparing

        table = comparing.compare(recipe, set_)
        for warning in table.warnings:
            print(warning, file=sys.stderr)
        if format == "json":
            import json

            print(json.dumps(table.to_dict(), indent=2))
        elif format == "markdown":
            sys.stdout.write(comparing.render_markdown(table))
        else:
            comparing.render_text(table)
        raise typer.Exit(0)
    from ..compiler import lock
    from ..compiler.pipeline import compile_file

    compiled = compile_file(recipe, set_)
    result = compiled.plan
    if bench is not None:
        from ..compiler.bench_economics import apply as apply_bench

        result = apply_bench(result, bench)
    traced = None
    if trace:
        from ..runtime.trace import trace_plan

        traced = trace_plan(result)
    if format == "json":
        import json

        data = result.model_dump(mode="json")
        data["suggestions"] = compiled.suggestions
        if traced:
            data["trace"] = traced
        print(json.dumps(data, indent=2))
    elif format == "markdown":
        from ..compiler.plan_text import render_markdown

        sys.stdout.write(render_markdown(result, compiled.suggestions, traced))
    else:
        from ..compiler.plan_text import render_text

        render_text(result, compiled.suggestions, traced)
    if output is not None:
        if compiled.exit_code:
            print(f"not written: {output} (nothing fits the budget, so there is no plan to run)", file=sys.stderr)
        else:
            lock.write(result, output)
            print(f"wrote {output}", file=sys.stderr)
    raise typer.Exit(compiled.exit_code)


@app.command(name="run")
def run_command(
    target: str = typer.Argument(..., help="A recipe (YAML or TOML), or a plan lock file from `recipe plan -o`."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last complete checkpoint."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over: move an earlier run in output.dir aside "
                                                      "(to RUN_DIR.1, ...; nothing is deleted)."),
    replan: bool = typer.Option(False, "--replan", help="Re-plan a stale lock file instead of refusing it."),
    worker: bool = typer.Option(False, "--worker", hidden=True, help="Run as one of a launcher's processes."),
) -> None:
    """Train: execute a plan on this machine and write the adapter and a run report."""
    if resume and fresh:
        raise UsageError("--resume and --fresh contradict each other: choose one")
    from ..compiler.pipeline import plan_for_run
    from ..runtime.launch import is_worker
    from ..runtime.run import execute, launch_processes

    plan, plan_dir = plan_for_run(target, set_, replan)
    if plan.distributed.processes > 1 and not (worker or is_worker()):
        raise typer.Exit(launch_processes(plan, plan_dir, resume, fresh))
    raise typer.Exit(execute(plan, plan_dir, resume, fresh))


@app.command()
def launch(
    recipe: str = typer.Argument(..., help="The recipe (or a plan lock file)."),
    target: str = typer.Option("accelerate", "--target", help="accelerate | torchrun | skypilot"),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to write (default RUN_DIR/launch)."),
) -> None:
    """Write the launch files for a plan without running it: accelerate / DeepSpeed config, torchrun, SkyPilot."""
    if target not in ("accelerate", "torchrun", "skypilot"):
        raise UsageError(f"--target {target!r}: expected accelerate, torchrun or skypilot")
    from ..compiler import lock
    from ..compiler.pipeline import plan_for_run
    from ..runtime.launch import check_out_dir, file_names, write_artifacts

    plan, plan_dir = plan_for_run(recipe, set_, False)
    out = output or (plan_dir / plan.output_dir / "launch")
    check_out_dir(out, file_names(plan, target))  # nothing the user wrote is overwritten
    plan_file = out / "plan.json"
    out.mkdir(parents=True, exist_ok=True)
    lock.write(plan, plan_file)
    for path in [plan_file, *write_artifacts(plan, plan_file, out, target)]:
        print(f"wrote {path}")


@app.command(name="eval")
def eval_(
    recipe: str = typer.Argument(..., help="The recipe whose held-out data and metric to use."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A PEFT adapter directory, or a merged model "
                                                                    "directory; omitted: the base model."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
    format: str = typer.Option("text", "--format", "-f", help="text | json"),
) -> None:
    """Score a model (base, base + adapter, or merged) on the recipe's held-out data; exit 4 below min_score."""
    if format not in ("text", "json"):
        raise UsageError(f"--format {format!r}: expected text or json")
    if adapter is not None and not adapter.is_dir():
        raise UsageError(f"--adapter {adapter}: no such directory")
    from ..compiler.pipeline import plan_for_run
    from ..runtime.run import score

    plan, plan_dir = plan_for_run(recipe, set_, False)
    raise typer.Exit(score(plan, plan_dir, adapter, format))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (the recipe's output.dir)."),
    merge: bool = typer.Option(False, "--merge", help="Merge the adapter into the base and save safetensors."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Where to save the merged model "
                                                                       "(default RUN_DIR/merged)."),
) -> None:
    """Write serving files (vLLM, Ollama) for a run; with --merge, a merged model checked against base + adapter."""
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: no such directory")
    from ..runtime.run import export_run

    raise typer.Exit(export_run(run_dir, merge, output))


@app.command()
def bench(
    target: str = typer.Argument(..., help="The recipe, or its run directory (output.dir)."),
    endpoint: List[str] = typer.Option([], "--endpoint", help="An OpenAI-compatible base URL; twice: the tuned "
                                                              "model, then the API it replaces, side by side."),
    serve: bool = typer.Option(False, "--serve", help="Start the run's exported model on 127.0.0.1 for the bench "
                                                      "(vLLM with a GPU, else transformers); stopped at the end."),
    model_dir: Optional[Path] = typer.Option(None, "--model-dir", help="With --serve: this model directory "
                                                                       "instead of the run's merged/ or adapter/."),
    model: List[str] = typer.Option([], "--model", help="Model name to ask each endpoint for, in order "
                                                        "(default: the recipe's name, then economics.api_model)."),
    api_key_env: List[str] = typer.Option([], "--api-key-env", help="Environment variable holding each "
                                                                    "endpoint's API key, in order (default for "
                                                                    "non-loopback URLs: OPENAI_API_KEY)."),
    rate: Optional[float] = typer.Option(None, "--rate", min=0.001, help="Requests per second (open loop)."),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Requests in flight (closed loop)."),
    duration: float = typer.Option(60.0, "--duration", min=0.1, help="Seconds during which requests start."),
    requests: int = typer.Option(500, "--requests", min=1, help="Most requests to send."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds before a request counts as timed out."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="Output tokens per request "
                                                                               "(default: economics.output_tokens_per_request)."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Unmeasured requests sent to each endpoint first."),
    gpu: Optional[str] = typer.Option(None, "--gpu", help="The catalog GPU the tuned model runs on, to price it "
                                                          "and to feed `recipe plan --bench`."),
    gpu_count: int = typer.Option(1, "--gpu-count", min=1, help="GPUs behind the tuned endpoint."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Report directory "
                                                                       "(default RUN_DIR/bench/<UTC time>)."),
    serve_timeout: float = typer.Option(300.0, "--serve-timeout", min=1, help="Seconds to wait for --serve's server."),
    set_: List[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Benchmark served models on the recipe's held-out inputs: latency, throughput, quality, SLA; exit 5 on SLA failure."""
    from ..runtime.bench import Options, bench as run_bench

    if gpu is not None:
        from ..compiler.catalogs import find_gpu

        found = find_gpu(gpu)
        if found is None:
            raise UsageError(f"--gpu {gpu!r}: not a GPU in the catalog")
        gpu = found.name
    opts = Options(endpoints=endpoint, models=model, key_envs=api_key_env, serve=serve, model_dir=model_dir,
                   rate=rate, concurrency=concurrency, duration=duration, requests=requests, timeout=timeout,
                   max_tokens=max_tokens, warmup=warmup, gpu=gpu, gpu_count=gpu_count, output=output,
                   serve_timeout=serve_timeout)
    raise typer.Exit(run_bench(target, set_, opts))


@app.command()
def demo(
    directory: Path = typer.Argument(Path("quickstart"), help="Where to write the demo; `preference` writes the "
                                                             "preference-tuning (DPO) demo to preference/."),
    train_now: bool = typer.Option(False, "--run", help="Also train it (a few minutes on a CPU)."),
    force: bool = typer.Option(False, "--force", help="Overwrite demo files that were edited (or not written "
                                                      "by the demo)."),
    preference: bool = typer.Option(False, "--preference", help="Write the preference-tuning (DPO) demo."),
) -> None:
    """Write a tiny model, tokenizer, synthetic data and recipe that train on a CPU in minutes."""
    from ..runtime.run import make_demo

    if preference or str(directory) == "preference":
        from ..runtime.preference_demo import make as make_preference

        recipe_path = make_preference(directory, force=force)
        print(f"wrote {directory}/: tiny-llama/ (model and tokenizer), data/ (preference pairs), recipe.yaml")
    else:
        recipe_path = make_demo(directory, force)
        print(f"wrote {directory}/: tiny-llama/ (model and tokenizer), data/ (support tickets), recipe.yaml")
    if not train_now:
        print(f"next:\n  recipe plan {recipe_path}\n  recipe run {recipe_path}")
        return
    from ..compiler.pipeline import plan_for_run
    from ..runtime.run import execute

    plan, plan_dir = plan_for_run(str(recipe_path), [], False)
    raise typer.Exit(execute(plan, plan_dir, False))


@app.command()
def calibrate(
    run_dirs: List[Path] = typer.Argument(..., help="Run directories `recipe run` wrote (with run_report.json)."),
    output: Path = typer.Option(Path(".recipe/calibration.json"), "-o", "--output",
                                help="The calibration file (later plans find it in the recipe's directory or a "
                                     "parent, up to the repository root)."),
) -> None:
    """Fit the time model's speed per GPU to your own GPU runs; later plans use it and say so."""
    from ..compiler.calibration import calibrate_runs

    for line in calibrate_runs(run_dirs, output):
        print(line)


@app.command()
def schema(
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to a file instead of stdout."),
) -> None:
    """Print the JSON Schema of a recipe (for editors and other tools)."""
    from ..schemas.json_schema import recipe_schema_text

    text = recipe_schema_text()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _derive_descriptor(cfg: dict, where: str) -> dict:
    """Describe an uncatalogued model with transformers (the [train] extra), saying so and how long it took."""
    import time

    from ..compiler.descriptor import INSTALL_HINT, cache_dir, store
    from ..schemas.errors import UnsupportedArchitecture

    family = cfg.get("model_type")
    started = time.perf_counter()
    import logging
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # bitsandbytes and transformers chatter on import
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import torch  # noqa: F401
                import transformers
                import peft  # noqa: F401
            except ImportError as exc:
                raise UnsupportedArchitecture(
                    f"{where}: model_type '{family}' is not in the model catalog; describing it needs "
                    f"transformers, which is not installed ({exc.name}): {INSTALL_HINT}, then plan again (the "
                    f"description is cached, so later plans need no transformers); or pick a catalog model") from None
            from ..runtime.describe import describe

            desc = describe(cfg, where)
    finally:
        logging.disable(previous)
    desc["source"] = "derived"
    kept = store(desc)
    print(f"note: model_type '{family}' is not in the catalog: described it with transformers "
          f"{transformers.__version__} on the meta device in {time.perf_counter() - started:.1f} s "
          + (f"(cached in {kept.parent}; the next plan reads it from there)" if kept is not None else
             f"(could not cache it in {cache_dir()}: the next plan describes it again)"), file=sys.stderr)
    return desc


def run(argv: Optional[list[str]] = None) -> int:
    """Run the CLI and return its exit code; user errors print without a traceback."""
    from ..compiler.descriptor import set_deriver

    set_deriver(_derive_descriptor)
    try:
        app(args=argv, prog_name="recipe", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RecipeError as exc:
        _report(exc)
        return exc.exit_code
    return 0


def _report(exc: RecipeError) -> None:
    if exc.problems:
        for problem in exc.problems:
            print(problem)
        if not isinstance(exc, UsageError):
            return
    print(f"error: {exc.message}", file=sys.stderr)


def main() -> None:
    sys.exit(run())
