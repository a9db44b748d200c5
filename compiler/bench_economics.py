"""`recipe plan --bench`: economics from a measured serving throughput instead of the catalog's estimate.

A `recipe bench` report (bench_report.json, or a run directory: its latest one; `latest`: the recipe's
own run directory's) says how many output
tokens/s the tuned model sustained on which GPU type and count (`recipe bench --gpu`). For that GPU type
the plan's serving estimate takes the measured rate as its decode rate; other GPU types keep the
catalog's scaled figure. Pure stdlib: no torch, no network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..schemas.errors import UsageError
from . import catalogs


LATEST = "latest"


@dataclass(frozen=True)
class Measured:
    gpu: Optional[str]  # catalog name; None when the bench did not say (a CPU, or no --gpu)
    gpus: int
    output_tokens_per_s: float
    label: str  # the figure with where it comes from
    model: Optional[str] = None  # the model the bench measured (the plan's model name)

    def statement(self, applied: bool, chosen: Optional[str] = None) -> str:
        if applied:
            text = (f"serving throughput: measured, {self.label}, replaces the catalog's estimate for "
                    f"{self.gpus} x {self.gpu}")
            if chosen and chosen != self.gpu:
                text += f"; the cheapest option, {chosen}, still uses the catalog's estimate"
            return text
        if self.gpu is None:
            return (f"serving throughput: the bench report ({self.label}) names no catalog GPU (run `recipe bench "
                    f"--gpu NAME`), so the catalog's estimate is used")
        return (f"serving throughput: {self.gpu} from the bench report ({self.label}) is not a serving option "
                f"here, so the catalog's estimate is used")


def latest(run_dir: Path) -> Optional[Path]:
    """The newest bench_report.json under RUN_DIR/bench/, by its recorded time."""
    found = []
    for path in (run_dir / "bench").glob("*/bench_report.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(report, dict):  # anything else is not a report
            found.append((str(report.get("created", "")), str(path), path))
    return max(found)[2] if found else None


def read(path: Path) -> Measured:
    """The candidate's measured throughput from a bench report file or a run directory."""
    if not path.exists():
        raise UsageError(f"--bench {path}: no such file or run directory; run `recipe bench` first, or give a "
                         f"bench_report.json")
    if path.is_dir():
        found = latest(path)
        if found is None:
            raise UsageError(f"--bench {path}: no bench report under {path / 'bench'}; run `recipe bench` first")
        path = found
    report = None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        candidate = report["endpoints"][0]
        tok_s = candidate["stats"]["output_tokens_per_s"]
        hardware = report.get("hardware") or {}
        load = report["load"]
        tok_s = float(tok_s)
        if not isinstance(hardware, dict) or not isinstance(load, dict):
            raise TypeError("'hardware' and 'load' are not objects")
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else f"invalid JSON: {exc}" if isinstance(exc, ValueError)
               else "not a JSON object" if not isinstance(report, dict)
               else f"no {exc}" if isinstance(exc, KeyError)
               else "no endpoint in it" if isinstance(exc, IndexError) else f"unexpected shape: {exc}")
        raise UsageError(f"--bench {path}: not a `recipe bench` report ({why}); write one with `recipe bench`") \
            from None
    if not tok_s:
        raise UsageError(f"--bench {path}: the tuned model has no measured throughput (every request failed?)")
    gpu = catalogs.find_gpu(hardware["gpu"]) if hardware.get("gpu") else None
    how = f"{load['rate']:.3g} requests/s" if load.get("rate") else f"{load.get('concurrency')} concurrent"
    label = (f"{tok_s:,.1f} output tokens/s at {how} ({path}, {report.get('created', '?')}; a lower bound on "
             f"capacity unless that load saturated the server)")
    return Measured(gpu.name if gpu else None, int(hardware.get("gpus") or 1), float(tok_s), label,
                    report.get("model"))


def apply(plan, bench: Path):
    """The plan with its economics recomputed from the measured throughput (unchanged without economics)."""
    from .economics import plan_section

    if str(bench) == LATEST and not bench.exists():  # the recipe's own run directory
        bench = Path(plan.lock.recipe_path).resolve().parent / plan.output_dir
    measured = read(bench)
    if plan.economics is None:
        raise UsageError("--bench needs an economics: section in the recipe")
    if measured.model is not None and measured.model != plan.model.name:
        raise UsageError(f"--bench {bench}: it measured {measured.model}, but this plan serves {plan.model.name}")
    economics = plan_section(plan.recipe, plan.model.parameters, plan.cost.usd, plan.fits, measured)
    return plan.model_copy(update={"economics": economics})
