"""`recipe run` and `recipe demo`: the CLI's entry points into the runtime (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

from ..schemas.errors import RecipeError
from ..schemas.plan import Plan

EXIT_GATE = 4  # trained, but the tuned score is below eval.min_score


def execute(plan: Plan, plan_dir: Path, resume: bool, fresh: bool = False) -> int:
    """Train the plan, write the run report; returns the exit code (130 when interrupted)."""
    from .train import train

    done = _check_resume(plan, plan_dir) if resume else None
    if done is not None:
        return done
    result = train(plan, plan_dir, resume=resume, fresh=fresh)
    try:
        return _finish(plan, result)
    finally:
        if result.lock is not None:
            result.lock.release()


def _check_resume(plan: Plan, plan_dir: Path):
    """Before --resume loads anything: the exit code of a run this plan already completed (nothing to
    do), else None once the checkpoints are known to be of the same model and adapter (RecipeError if not)."""
    done = _completed(plan, plan_dir)
    if done is None:
        _resumable(plan, plan_dir)
    return done


def _completed(plan: Plan, plan_dir: Path):
    """--resume on a run this same plan already completed: nothing to train, nothing rewritten; its exit
    code (4 when it was not promoted). None when there is something to resume."""
    import json

    run_dir = (plan_dir / plan.output_dir).resolve()
    try:
        report = json.loads((run_dir / "run_report.json").read_text(encoding="utf-8"))
        ran = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = {k: v for k, v in ran.items() if k != "lock"} == \
        {k: v for k, v in json.loads(plan.model_dump_json()).items() if k != "lock"}
    trained = (run_dir / ("model" if plan.method == "full" else "adapter")).is_dir()
    if not (isinstance(report, dict) and report.get("status") == "completed" and same and trained):
        return None
    print(f"{run_dir} already completed this plan (step {report.get('measured', {}).get('steps')}; "
          f"{run_dir / 'run_report.md'}): nothing to resume. Score it with `recipe eval`, export it with "
          f"`recipe export`, or start over with --fresh (the run is moved aside, not deleted)")
    return 0 if report.get("promoted", True) else EXIT_GATE


def _resumable(plan: Plan, plan_dir: Path) -> None:
    """Before anything is loaded: --resume continues checkpoints of the same model and adapter only (other
    weights do not load into them); training settings (steps, learning rate, ...) may change."""
    import json

    run_dir = (plan_dir / plan.output_dir).resolve()
    if not any((run_dir / "checkpoints").glob("checkpoint-*/CHECKPOINT_COMPLETE")):
        return
    try:
        ran = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    new = json.loads(plan.model_dump_json())
    pairs = [("method", ran.get("method"), new["method"]),
             ("model", (ran.get("model") or {}).get("name"), new["model"]["name"])]
    pairs += [(key, (ran.get("adapter") or {}).get(key), (new["adapter"] or {}).get(key))
              for key in ("rank", "targets", "use_dora", "quantization")]
    changes = [f"{key} {a} -> {b}" for key, a, b in pairs if a != b]
    if changes:
        raise RecipeError(f"{run_dir} holds checkpoints of another model or adapter ({'; '.join(changes)}): "
                          f"--resume continues only the same one. Undo the change, or start over with --fresh "
                          f"(the earlier run is moved aside, not deleted)")


def _finish(plan: Plan, result) -> int:
    from . import run_report

    if not result.main_process:
        return 130 if result.interrupted else 0
    data = run_report.build(plan, result, run_report.plan_hash(plan))
    try:
        run_report.write(result.run_dir, data)
    except OSError as exc:
        from .outdir import disk_full

        if not disk_full(exc):
            raise
        raise RecipeError(f"the disk is full: the run report could not be written in {result.run_dir} "
                          f"({exc.strerror}); the adapter and checkpoints are kept") from None
    m = result.measured
    loss = "n/a (no step trained)" if m.get("train_loss") is None else f"{m['train_loss']:.4f}"
    print(f"{'interrupted at' if result.interrupted else 'trained'} step {m.get('steps')}: "
          f"loss {loss}, {m.get('tokens_per_second', 0):,.0f} tokens/s, "
          f"{m.get('wall_seconds', 0):.0f} s")
    ev = result.evaluation
    if ev.get("tuned") and ev.get("baseline"):
        b, t = ev["baseline"], ev["tuned"]
        print(f"{t['metric']}: base {b['score']:.3f} -> tuned {t['score']:.3f} ({t['score'] - b['score']:+.3f}) "
              f"on {t['examples_scored']} held-out examples")
        if t["details"].get("mean_reward_margin") is not None:
            print(f"mean reward margin (chosen - rejected, vs the reference): {t['details']['mean_reward_margin']:+.3f}")
    if result.adapter_dir:
        print(f"adapter: {result.adapter_dir}")
    print(f"report: {result.run_dir / 'run_report.md'}")
    if result.interrupted:
        print("resume with: recipe run ... --resume")
        return 130
    verdict = ev.get("gate", {})
    if not verdict.get("promoted", True):
        print(f"NOT PROMOTED: {verdict['reason']}")
        return EXIT_GATE
    return 0


def launch_processes(plan: Plan, plan_dir: Path, resume: bool, fresh: bool = False) -> int:
    """Run a plan on several processes: write it where the workers read it, start the launcher, which
    holds the run directory's lock for them."""
    import subprocess

    from ..compiler import lock
    from . import outdir
    from .launch import quote, relaunch

    try:
        import torch

        cpu = not torch.cuda.is_available()
    except ImportError:
        cpu = True
    run_dir = (plan_dir / plan.output_dir).resolve()
    outdir.check_run_dir(run_dir, resume, fresh, keep=(plan_dir, Path.cwd()))
    done = _check_resume(plan, plan_dir) if resume else None
    if done is not None:
        return done
    with outdir.RunLock.acquire(run_dir, fresh):
        plan_file = run_dir / "plan.json"
        lock.write(plan, plan_file)
        cmd = relaunch(plan, plan_file, run_dir, cpu)
        if resume:
            cmd.append("--resume")
        print(f"launching {plan.distributed.processes} processes ({plan.distributed.strategy}): {quote(cmd)}")
        return subprocess.call(cmd, cwd=str(Path.cwd()))


def make_demo(directory: Path, force: bool = False) -> Path:
    from .demo import make

    return make(directory, force=force)


def score(plan: Plan, plan_dir: Path, model_path, fmt: str) -> int:
    import json

    from .export import evaluate_saved

    out = evaluate_saved(plan, plan_dir, model_path)
    ev, verdict = out["evaluation"], out["gate"]
    if fmt == "json":
        print(json.dumps(out, indent=2, default=str))
    else:
        print(f"{ev['metric']}: {ev['score']:.4f} on {ev['examples_scored']} held-out examples "
              f"({'base model' if model_path is None else model_path})")
        for e in ev["examples"]:
            print(f"  reference {e['reference']!r:40.40} prediction {e['prediction']!r:40.40}")
        print(("promoted: " if verdict["promoted"] else "NOT PROMOTED: ") + verdict["reason"])
    return 0 if verdict["promoted"] else EXIT_GATE


def export_run(run_dir: Path, merge: bool, output) -> int:
    from .export import merge as merge_run, read_run, serving_files
    from .outdir import check_serve_files, usable_dir

    run_dir = run_dir.resolve()
    usable_dir(run_dir / "serve", "the serving files' folder")  # before a merge that may take minutes
    check_serve_files(run_dir / "serve")
    if merge:
        out = merge_run(run_dir, output)
        c = out["check"]
        print(f"merged model: {out['merged']} (logits within {c['max_relative_logit_difference']:.1e} of base + "
              f"adapter, tolerance {c['tolerance']:g}, {c['dtype']})")
        files = out["serving"]
    else:
        plan = read_run(run_dir)
        trained = run_dir / ("model" if plan.method == "full" else "adapter")
        # a full fine-tuning run's model/ is served as a merged model is
        files = serving_files(plan, run_dir, trained if plan.method == "full" and trained.is_dir() else None)
        if not files:
            raise RecipeError(f"{trained}: no {trained.name} to serve (was the run interrupted? resume it with "
                              f"`recipe run --resume`)")
    for f in files:
        print(f"wrote {f}")
    return 0
