"""Compare the time model (compiler/timing.py) with published training throughput of the same stack.

    python benchmarks/time_accuracy.py          # plan vs published tokens/s, every comparable row; median, worst
    python benchmarks/time_accuracy.py --fit    # refit the utilization per GPU generation into
                                                # compiler/data/time_model.json, then compare

The figures are in benchmarks/data/published_throughput.csv: the rows of the project's shared
reference table (../shared/reference/published_throughput.csv, each with its source: the
fms-acceleration benchmark of trl SFTTrainer + peft + bitsandbytes on A100-80GB, Mistral-7B,
sequences packed to 4,096 tokens, flash-attention 2, gradient checkpointing on, gradient
accumulation 1 (scripts/benchmarks/defaults.yaml of that repository), 100 steps), copied with the
columns this benchmark adds:

- `comparable` / `why_not`: whether the row ran our stack (transformers + peft + bitsandbytes
  layers as they ship). Rows with fms-acceleration's own kernels (foak, accelerated-peft) are not:
  they are shown, never fitted or counted;
- `est_*`: the configuration as the time model takes it (full fine-tuning rows are pure bf16, no fp32
  master weights: precision bf16-pure);
- `figure_per`: the HF Trainer's `train_tokens_per_second` is per device
  (`include_tokens_per_second`: "the number of tokens per second per device"), so the plan's total
  over its GPUs is divided by the GPU count before comparing.

The fit: one figure per GPU generation (the matmul utilization), chosen so that the median of
log(plan / published) over that generation's comparable rows is zero. Nothing is fitted per row or
per method; a leave-one-out figure (each row predicted by a fit on the others) is printed too.

Pure Python: imports the compiler, never torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_FILE = Path(__file__).resolve().parent / "data" / "published_throughput.csv"

try:
    from recipe_ft.compiler import timing
except ImportError:  # run from a checkout without the editable install
    sys.path.insert(0, str(ROOT))
    from recipe_ft.compiler import timing  # noqa: E402
from recipe_ft.compiler import memory  # noqa: E402
from recipe_ft.compiler.catalogs import find_gpu  # noqa: E402
from recipe_ft.compiler.models import resolve_model  # noqa: E402

MEDIAN_AIM = 0.15  # the aims: median |error| <= 15%, worst <= 30%
WORST_AIM = 0.30
GRADIENT_ACCUMULATION = 1  # fms-acceleration scripts/benchmarks/defaults.yaml


@dataclass
class Result:
    id: str
    what: str
    comparable: bool
    published: float  # tokens/s per device
    planned: float  # tokens/s per device
    generation: str

    @property
    def error(self) -> float:
        return self.planned / self.published - 1


def load_rows(path: Path = DATA_FILE) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _gpu(name: str):
    return find_gpu(name.replace("A100-SXM4-80GB", "A100-80GB"))


def configure(row: dict):
    """(arch, shape, gpu speed, count, rows) for a published row."""
    arch = resolve_model(row["model_name"], ROOT).architecture
    count = int(row["num_gpus"])
    seq = int(row["est_seq_len"])
    method = row["est_method"]
    gpu = _gpu(row["gpu"])
    strategy = row["est_strategy"] if count > 1 else "single"
    shape = memory.StepShape(
        method=method, rank=int(row["lora_r"] or 16), dropout=float(row["lora_dropout"] or 0),
        targets=tuple(row["est_targets"].split()) if row["est_targets"] else ("all-linear",),
        micro_batch_size=int(row["per_device_micro_batch"]), seq_len=seq,
        gradient_checkpointing=row["gradient_checkpointing"].startswith("on"),
        gradient_accumulation_steps=GRADIENT_ACCUMULATION, precision=row["est_precision"],
        attention=row["attention"], processes=count, strategy=strategy)
    if method != "full":  # LoRA targets that the architecture has (c_attn is a no-op on Mistral)
        names = {m.name for m in memory.linear_modules(arch)}
        shape = replace(shape, targets=tuple(t for t in shape.targets if t in names))
    speed = _speed(gpu)
    rows = timing.Rows(seq, seq)  # packed, every row full; flash-attention 2 attends per example
    return arch, shape, speed, count, rows


def _speed(gpu) -> timing.GPUSpeed:
    return timing.GPUSpeed(gpu.name, gpu.training_tflops, gpu.bandwidth_gbs, gpu.nvlink, gpu.interconnect, gpu.arch)


def planned_per_device(row: dict) -> float:
    arch, shape, speed, count, rows = configure(row)
    est = timing.estimate(arch, shape, speed, count, 1e9, rows)
    return est.tokens_per_second / count


def compare_rows(rows: list[dict]) -> list[Result]:
    out = []
    for r in rows:
        what = (f"{r['model_name'].split('/')[-1]} {r['method']} {r['framework_config']} {r['num_gpus']}x "
                f"mbs {r['per_device_micro_batch']}")
        out.append(Result(r["id"], what, r["comparable"] == "yes", float(r["train_tokens_per_second"]),
                          planned_per_device(r), timing.generation(_gpu(r["gpu"]).arch)))
    return out


def fit(rows: list[dict]) -> dict:
    """Per generation: the utilization that zeroes the median log error of its comparable rows."""
    comparable = [r for r in rows if r["comparable"] == "yes"]
    by_gen: dict[str, list[dict]] = {}
    for r in comparable:
        by_gen.setdefault(timing.generation(_gpu(r["gpu"]).arch), []).append(r)
    model = json.loads(timing.MODEL_FILE.read_text())
    fitted = {}
    for gen, group in by_gen.items():
        fitted[gen] = {"value": round(_solve(model, gen, group), 4), "rows": len(group),
                       "source": "benchmarks/data/published_throughput.csv (fms-acceleration a100_80gb.csv)"}
    return fitted


def _solve(model: dict, gen: str, group: list[dict]) -> float:
    """Bisection on the utilization: the median of log(plan / published) crosses zero once."""
    lo, hi = 0.05, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        _set(model, gen, mid)
        med = statistics.median(math.log(planned_per_device(r) / float(r["train_tokens_per_second"]))
                                for r in group)
        lo, hi = (mid, hi) if med < 0 else (lo, mid)
    return (lo + hi) / 2


def _set(model: dict, gen: str, value: float) -> None:
    _PATCH["model"] = dict(model, utilization={**model["utilization"], gen: {"value": value, "rows": 0}})


_PATCH: dict = {}
_original_loader = timing.time_model


def _patched() -> dict:
    return _PATCH.get("model") or _original_loader()


def leave_one_out(rows: list[dict]) -> list[float]:
    """Each comparable row predicted by a utilization fitted on the other rows of its generation."""
    comparable = [r for r in rows if r["comparable"] == "yes"]
    model = json.loads(timing.MODEL_FILE.read_text())
    errors = []
    for i, r in enumerate(comparable):
        gen = timing.generation(_gpu(r["gpu"]).arch)
        others = [o for j, o in enumerate(comparable) if j != i and timing.generation(_gpu(o["gpu"]).arch) == gen]
        if not others:
            continue
        _solve(model, gen, others)
        errors.append(planned_per_device(r) / float(r["train_tokens_per_second"]) - 1)
    _PATCH.clear()
    return errors


def summary(results: list[Result]) -> tuple[float, float]:
    errs = [abs(r.error) for r in results if r.comparable]
    return statistics.median(errs), max(errs)


def table(results: list[Result]) -> str:
    lines = [f"{'id':<6} {'row':<52} {'published':>9} {'plan':>7} {'error':>7}"]
    for comparable in (True, False):
        if not comparable:
            lines.append("not comparable (fms-acceleration kernels our runtime does not use; not counted):")
        for r in results:
            if r.comparable == comparable:
                lines.append(f"{r.id:<6} {r.what:<52} {r.published:>9,.0f} {r.planned:>7,.0f} {r.error:>+7.1%}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit", action="store_true", help="refit compiler/data/time_model.json first")
    args = parser.parse_args(argv)
    rows = load_rows()
    timing.time_model = _patched  # the fit patches the model in memory, never the file mid-way
    try:
        if args.fit:
            fitted = fit(rows)
            _PATCH.clear()
            model = json.loads(timing.MODEL_FILE.read_text())
            model["utilization"] = {**model["utilization"], **fitted}
            timing.MODEL_FILE.write_text(json.dumps(model, indent=2) + "\n")
            for gen, entry in fitted.items():
                print(f"fitted {gen}: utilization {entry['value']:.3f} on {entry['rows']} rows -> {timing.MODEL_FILE}")
        loo = leave_one_out(rows)
        results = compare_rows(rows)
    finally:
        timing.time_model = _original_loader
    print("plan vs published training tokens/s per GPU (same stack: trl SFTTrainer + peft + bitsandbytes)")
    print(table(results))
    med, worst = summary(results)
    n = sum(r.comparable for r in results)
    print(f"leave-one-out (each row predicted by a fit on the others): median |error| "
          f"{statistics.median(abs(e) for e in loo):.1%}, worst {max(abs(e) for e in loo):.1%}")
    ok = med <= MEDIAN_AIM and worst <= WORST_AIM
    print(f"{n} comparable rows: median |error| {med:.1%}, worst {worst:.1%} "
          f"(aim: median <= {MEDIAN_AIM:.0%}, worst <= {WORST_AIM:.0%}: {'met' if ok else 'NOT met'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
