"""`recipe run` and `recipe demo`: the CLI's entry points into the runtime (heavy imports inside)."""

from __future__ import annotations

from pathlib import Path

from ..schemas.plan import Plan


def execute(plan: Plan, plan_dir: Path, resume: bool) -> int:
    """Train the plan, write the run report; returns the exit code (130 when interrupted)."""
    from . import report
    from .train import train

    result = train(plan, plan_dir, resume=resume)
    data = report.build(plan, result, report.plan_hash(plan))
    report.write(result.run_dir, data)
    m = result.measured
    print(f"{'interrupted at' if result.interrupted else 'trained'} step {m.get('steps')}: "
          f"loss {m.get('train_loss', float('nan')):.4f}, {m.get('tokens_per_second', 0):,.0f} tokens/s, "
          f"{m.get('wall_seconds', 0):.0f} s")
    if result.adapter_dir:
        print(f"adapter: {result.adapter_dir}")
    print(f"report: {result.run_dir / 'run_report.md'}")
    if result.interrupted:
        print("resume with: recipe run ... --resume")
        return 130
    return 0


def make_demo(directory: Path) -> Path:
    from .demo import make

    return make(directory)
