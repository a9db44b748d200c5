"""The `recipe` command line's commands (their arguments: cli/parser.py). They wire the compiler (and,
lazily, the runtime) together; each returns its exit code.

Exit codes: 0 success, 1 invalid recipe or data (or another user error), 2 bad usage, 3 nothing fits
the budget, 4 trained but below eval.min_score (not promoted), 5 (bench) the served model misses serving.sla,
130 interrupted (Ctrl-C, or SIGTERM during training; `recipe run` saves a checkpoint first).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .. import __version__
from ..schemas.errors import RecipeError, UsageError
from . import parser


def validate(paths: list[str], set_: list[str], quiet: bool) -> int:
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
    return 1 if invalid else 0


def plan(recipe: str, set_: list[str], format: str, output: Optional[Path], trace: bool, compare: bool,
         bench: Optional[Path]) -> int:
    """Compile a recipe into a plan: memory, method, GPU, time and cost, with reasons."""
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
        return 0
    from ..compiler import lock
    from ..compiler.pipeline import compile_file

    if output is not None:
        lock.check_target(output)  # before the plan is printed: a bad -o is refused first
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
    return compiled.exit_code


def run_command(target: str, set_: list[str], resume: bool, fresh: bool, replan: bool, worker: bool) -> int:
    """Train: execute a plan on this machine and write the adapter and a run report."""
    if resume and fresh:
        raise UsageError("--resume and --fresh contradict each other: choose one")
    from ..compiler.pipeline import plan_for_run
    from ..runtime.launch import is_worker
    from ..runtime.run import execute, launch_processes

    if target.endswith(".json") and set_ and not replan:  # a lock is the plan that was reviewed
        raise RecipeError(f"{target} is a locked plan: --set would run another plan than it. Re-plan with "
                          f"`recipe plan RECIPE --set ... -o PLAN`, or pass --replan")
    plan, plan_dir = plan_for_run(target, set_, replan)
    if plan.distributed.processes > 1 and not (worker or is_worker()):
        return launch_processes(plan, plan_dir, resume, fresh)
    return execute(plan, plan_dir, resume, fresh)


def launch(recipe: str, target: str, set_: list[str], output: Optional[Path]) -> int:
    """Write the launch files for a plan without running it: accelerate / DeepSpeed config, torchrun, SkyPilot."""
    from ..compiler import lock
    from ..compiler.pipeline import plan_for_run
    from ..runtime.launch import check_out_dir, file_names, write_artifacts

    if output is not None and (output.exists() or output.is_symlink()) and not output.is_dir():
        raise UsageError(f"-o {output}: not a directory; give -o a folder for the launch files")
    if output is not None:
        lock.check_can_create(output / "plan.json")  # before planning: a bad -o is refused first
    plan, plan_dir = plan_for_run(recipe, set_, False)
    out = output or (plan_dir / plan.output_dir / "launch")
    check_out_dir(out, file_names(plan, target))  # nothing the user wrote is overwritten
    plan_file = out / "plan.json"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out}: cannot make this folder for the launch files ({exc.strerror}); give -o another") from None
    lock.write(plan, plan_file)
    for path in [plan_file, *write_artifacts(plan, plan_file, out, target)]:
        print(f"wrote {path}")
    return 0


def eval_(recipe: str, adapter: Optional[Path], set_: list[str], format: str) -> int:
    """Score a model (base, base + adapter, or merged) on the recipe's held-out data; exit 4 below min_score."""
    if adapter is not None and not adapter.is_dir():
        raise UsageError(f"--adapter {adapter}: " + ("a file; give the adapter's folder (RUN_DIR/adapter) or a merged "
                                                    "model's (RUN_DIR/merged)" if adapter.exists() else
                                                    "no such directory"))
    from ..compiler.pipeline import plan_for_run
    from ..runtime.run import score

    plan, plan_dir = plan_for_run(recipe, set_, False)
    _needs_training_stack("eval", ("torch", "transformers", "peft"))
    return score(plan, plan_dir, adapter, format)


def export(run_dir: Path, merge: bool, output: Optional[Path]) -> int:
    """Write serving files (vLLM, Ollama) for a run; with --merge, a merged model checked against base + adapter."""
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir}: " + ("a file; give the run's folder (the plan's output_dir)" if run_dir.exists()
                                           else "no such directory"))
    from ..runtime.run import export_run

    if merge:
        _needs_training_stack("export --merge", ("torch", "transformers", "peft"))

    return export_run(run_dir, merge, output)


def bench(target: str, endpoint: list[str], serve: bool, model_dir: Optional[Path], model: list[str],
          api_key_env: list[str], rate: Optional[float], concurrency: Optional[int], duration: float, requests: int,
          timeout: float, max_tokens: Optional[int], warmup: int, gpu: Optional[str], gpu_count: int,
          output: Optional[Path], serve_timeout: float, set_: list[str]) -> int:
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
    return run_bench(target, set_, opts)


def _needs_training_stack(command: str, packages: tuple) -> None:
    """A command that loads models stops with one line, before it writes anything, when the stack is missing."""
    import importlib.util

    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise RecipeError(f"`recipe {command}` needs the training stack ({', '.join(missing)} missing): "
                          f"pip install 'recipe-ft[train]'")


def demo(directory: Path, train_now: bool, force: bool, preference: bool) -> int:
    """Write a tiny model, tokenizer, synthetic data and recipe that train on a CPU in minutes."""
    from ..runtime.run import make_demo

    _needs_training_stack("demo", ("torch", "transformers", "tokenizers"))
    if preference or str(directory) == "preference":
        from ..runtime.preference_demo import make as make_preference

        recipe_path = make_preference(directory, force=force)
        print(f"wrote {directory}/: tiny-llama/ (model and tokenizer), data/ (preference pairs), recipe.yaml")
    else:
        recipe_path = make_demo(directory, force)
        print(f"wrote {directory}/: tiny-llama/ (model and tokenizer), data/ (support tickets), recipe.yaml")
    if not train_now:
        print(f"next:\n  recipe plan {recipe_path}\n  recipe run {recipe_path}")
        return 0
    from ..compiler.pipeline import plan_for_run
    from ..runtime.run import execute

    plan, plan_dir = plan_for_run(str(recipe_path), [], False)
    return execute(plan, plan_dir, False)


def calibrate(run_dirs: list[Path], output: Path) -> int:
    """Fit the time model's speed per GPU to your own GPU runs; later plans use it and say so."""
    from ..compiler.calibration import calibrate_runs

    for line in calibrate_runs(run_dirs, output):
        print(line)
    return 0


def schema(output: Optional[Path]) -> int:
    """Print the JSON Schema of a recipe (for editors and other tools)."""
    from ..schemas.json_schema import recipe_schema_text

    text = recipe_schema_text()
    if output is None:
        sys.stdout.write(text)
        return 0
    from ..compiler.lock import check_can_create

    if output.is_dir():
        raise UsageError(f"-o {output}: is a directory; give a file name, e.g. -o {output / 'recipe.schema.json'}")
    check_can_create(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"-o {output}: cannot write there ({exc.strerror})") from None
    return 0


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
        args = parser.parse(parser.build(sys.modules[__name__], __version__), sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # --help, --version, or a usage mistake (argparse printed it)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if args is None:
        return 0  # no command: the help was printed
    command = vars(args)
    func = command.pop("func")
    try:
        return func(**command)
    except RecipeError as exc:
        _report(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (recipe validate . | head): stop quietly, as rich does
        _drop_stdout()
        return 1


def _drop_stdout() -> None:
    """Send what is left of stdout to /dev/null, so that its flush at exit does not fail again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured in tests)
        pass


def _report(exc: RecipeError) -> None:
    """A command's error on stderr: stdout is for what the command makes (a plan: `--format json > plan.json`
    must not fill the file with the error and show nothing). `recipe validate` prints its findings on
    stdout, as linters do."""
    if exc.problems:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if not isinstance(exc, UsageError):
            return
    print(f"error: {exc.message}", file=sys.stderr)


def main() -> None:
    code = run()
    try:
        sys.stdout.flush()  # here, not at exit, where a closed pipe would print "Exception ignored"
    except BrokenPipeError:
        _drop_stdout()
        code = code or 1
    sys.exit(code)
