"""The run report: plan versus measured, as run_report.json, run_report.md and loss.png."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from ..schemas.money import usd
from ..schemas.plan import Plan

PACKAGES = ("recipe-ft", "torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets",
            "tokenizers", "safetensors", "pydantic")
GIB = 2**30


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _ratio(measured, planned):
    return None if not measured or not planned else round(measured / planned, 3)


def trained_examples(counts: dict):
    """Training examples the trainer kept (None when not counted)."""
    if not counts or counts.get("train_examples") is None:
        return None
    return counts["train_examples"] - (counts.get("train_dropped") or 0)


def build(plan: Plan, result, plan_sha256: str) -> dict:
    m = result.measured
    hours = m.get("wall_seconds", 0) / 3600
    price = plan.cost.usd_per_hour
    peak = m.get("peak_memory_bytes")
    on_gpu = m.get("peak_memory_kind", "").startswith("torch.cuda")
    return {
        "name": plan.name,
        "status": "interrupted" if result.interrupted else "completed",
        "resumed_from": result.resumed_from,
        "method": plan.method,
        "model": plan.model.name,
        "adapter_dir": str(result.adapter_dir) if result.adapter_dir else None,
        "planned_vs_measured": {
            "peak_memory": {"planned_allocated_bytes": plan.memory.allocated_peak_bytes, "measured_bytes": peak,
                            "measured_kind": m.get("peak_memory_kind"),
                            "ratio": _ratio(peak, plan.memory.allocated_peak_bytes) if on_gpu else None,
                            "note": None if on_gpu else "a CPU run: the plan's figure is per GPU, not comparable"},
            "tokens_per_second": {"planned": plan.time.tokens_per_second, "measured": m.get("tokens_per_second"),
                                  "planned_on": plan.hardware.gpu},
            "hours": {"planned": plan.time.hours, "measured": round(hours, 4)},
            # what `recipe calibrate` compares: the model's seconds per optimizer step (calibrated as planned)
            "time_model": {"modelled_seconds_per_step": round(sum(plan.time.step_seconds.values())
                                                              / plan.time.calibration_factor, 4),
                           "calibration_factor": plan.time.calibration_factor,
                           "calibration": plan.time.calibration},
            "cost_usd": {"planned": plan.cost.usd,
                         "at_plan_price": None if price is None else round(hours * price, 4)},
            # the data the plan counted against what the run trained on (after skips, the split, the
            # mixture and trl leaving out examples truncation emptied)
            "examples": {"planned": plan.data.examples, "measured": trained_examples(result.data_counts)},
            "steps": {"planned": plan.training.steps, "measured": m.get("steps")},
        },
        "measured": m,
        "data": result.data_counts,
        "conformance": getattr(result, "conformance", None) or None,
        "loss_curve": result.loss_curve,
        "evaluation": result.evaluation,
        "promoted": result.evaluation.get("gate", {}).get("promoted"),
        "seed": plan.recipe.training.seed,
        "versions": versions(),
        "hashes": {"recipe_sha256": plan.lock.recipe_sha256, "plan_sha256": plan_sha256,
                   "data_sha256": plan.lock.data_sha256},
    }


def markdown(report: dict) -> str:
    pm = report["planned_vs_measured"]
    mem = pm["peak_memory"]
    lines = [f"# Run report: {report['name']} ({report['status']})", "",
             f"{report['method'].upper()} on `{report['model']}`" +
             (f", resumed from `{report['resumed_from']}`" if report["resumed_from"] else ""), "",
             "| | planned | measured |", "|---|---:|---:|",
             f"| peak memory | {mem['planned_allocated_bytes'] / GIB:.2f} GiB allocated | "
             f"{(mem['measured_bytes'] or 0) / GIB:.2f} GiB ({mem['measured_kind']}) |",
             f"| tokens/s | {pm['tokens_per_second']['planned']:,.0f} on {pm['tokens_per_second']['planned_on']} | "
             f"{pm['tokens_per_second']['measured'] or 0:,.0f} |",
             f"| hours | {pm['hours']['planned']:.3f} | {pm['hours']['measured']:.4f} |",
             f"| cost | {usd(pm['cost_usd']['planned'])} | {usd(pm['cost_usd']['at_plan_price'])} at the plan's price |"]
    for key, label in (("examples", "training examples"), ("steps", "optimizer steps")):
        if pm.get(key):
            planned, measured = (("-" if v is None else f"{v:,}") for v in (pm[key]["planned"], pm[key]["measured"]))
            lines.append(f"| {label} | {planned} | {measured} |")
    lines += [""]
    if mem["note"]:
        lines += [f"Note: {mem['note']}.", ""]
    d = report["data"]
    lines += [f"Data: {d.get('train_examples')} training examples ({d.get('train_skipped')} skipped, "
              f"{d.get('train_truncated')} truncated" +
              (f", {d['train_dropped']} left out: truncation cut their whole answer" if d.get("train_dropped") else "")
              + "), "
              f"{d.get('eval_examples')} held out; format {d.get('format')}, trained as {d.get('as')}.", ""]
    c = report.get("conformance")
    if c:
        lines += [("Model checked against the plan before training: " + "; ".join(c["checked"]) + ".")
                  if c["ok"] else "Model differs from the plan: " + "; ".join(c["problems"]), ""]
    lines += _evaluation(report.get("evaluation") or {})
    if report["loss_curve"]:
        first, last = report["loss_curve"][0], report["loss_curve"][-1]
        lines += [f"Loss: {first['loss']:.4f} at step {first['step']} -> {last['loss']:.4f} at step {last['step']}.", "",
                  "![training and held-out loss, learning rate, planned and measured peak memory](loss.png)", ""]
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v), "",
              f"Seed {report['seed']}; recipe sha256 `{report['hashes']['recipe_sha256'][:12]}`, plan sha256 "
              f"`{report['hashes']['plan_sha256'][:12]}`."]
    return "\n".join(lines) + "\n"


def _evaluation(ev: dict) -> list[str]:
    lines = []
    base, tuned, verdict = ev.get("baseline"), ev.get("tuned"), ev.get("gate")
    if verdict:
        lines += [("**Promoted**" if verdict["promoted"] else "**NOT PROMOTED**") + f": {verdict['reason']}.", ""]
    if base or tuned:
        metric = (tuned or base)["metric"]
        lines += [f"| held-out ({(tuned or base)['examples_scored']} examples) | base | tuned | gain |",
                  "|---|---:|---:|---:|"]
        b = base["score"] if base else None
        t = tuned["score"] if tuned else None
        gain = f"{t - b:+.3f}" if b is not None and t is not None else "-"
        lines.append(f"| {metric} | {_num(b)} | {_num(t)} | {gain} |")
        if (tuned or {}).get("details", {}).get("mean_reward_margin") is not None:
            bm, tm = base["details"].get("mean_reward_margin") if base else None, tuned["details"]["mean_reward_margin"]
            lines.append(f"| mean reward margin | {_num(bm)} | {tm:.3f} | {'-' if bm is None else f'{tm - bm:+.3f}'} |")
        if ev.get("baseline_eval_loss") is not None:
            bl, tl = ev["baseline_eval_loss"], ev.get("tuned_eval_loss")
            tuned_loss = "-" if tl is None else f"{tl:.4f}"
            lines.append(f"| eval loss | {bl:.4f} | {tuned_loss} | {'-' if tl is None else f'{tl - bl:+.4f}'} |")
        lines.append("")
        shown = (tuned or base)["examples"]
        if shown:
            lines += ["| input | reference | tuned prediction |", "|---|---|---|"]
            lines += [f"| {_cell(e['input'])} | {_cell(e['reference'])} | {_cell(e['prediction'])} |" for e in shown]
            lines.append("")
        details = (tuned or {}).get("details", {})
        if "per_class" in details:
            lines += ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
            lines += [f"| {k} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
                      for k, v in details["per_class"].items()]
            lines.append("")
    return lines


def _num(x):
    return "-" if x is None else f"{x:.3f}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:120]


def write(run_dir: Path, report: dict) -> None:
    from .outdir import atomic_write

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "run_report.json", json.dumps(report, indent=2) + "\n")
    atomic_write(run_dir / "run_report.md", markdown(report))
    if report["loss_curve"]:
        from .figure import draw

        draw(report, run_dir / "loss.png")


def plan_hash(plan: Plan) -> str:
    return hashlib.sha256(plan.model_dump_json().encode()).hexdigest()
