"""A project's own speed calibration: per GPU, how fast its runs went against the time model.

`recipe calibrate RUN_DIR...` reads each run's run_report.json (written by `recipe run`), takes the
runs that trained on a GPU, and stores per GPU the median ratio of measured to modelled speed in
`.recipe/calibration.json` in the current directory. `recipe plan` looks for that file in the
recipe's directory and each parent up to the repository root (the first directory with `.git`) and
multiplies the modelled speed on a calibrated GPU by its factor; the plan names the calibration.

The ratio of a run: the plan's modelled training seconds per optimizer step (setup excluded, its own
calibration factor removed) x the steps the run took, over the run's measured training seconds.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError, UsageError

DIRNAME = ".recipe"
FILENAME = "calibration.json"
VERSION = 1


@dataclass(frozen=True)
class Calibration:
    path: Path
    gpus: dict  # name -> {"factor": float, "runs": [...]}

    def factor(self, gpu: str) -> float:
        entry = self.gpus.get(gpu)
        return float(entry["factor"]) if entry else 1.0

    def describe(self, gpu: str) -> Optional[str]:
        entry = self.gpus.get(gpu)
        if not entry:
            return None
        n = len(entry["runs"])
        return (f"calibrated on {n} run{'s' if n != 1 else ''} of this repository on {gpu} ({self.path}): "
                f"speed x {entry['factor']:.3g} (measured / modelled, median)")


def find(start: Path) -> Optional[Calibration]:
    """The nearest .recipe/calibration.json from `start` up to the repository root."""
    override = os.environ.get("RECIPE_CALIBRATION")
    if override is not None:
        return None if override in ("", "none", "off") else load(Path(override))
    here = start.resolve()
    for d in (here, *here.parents):
        path = d / DIRNAME / FILENAME
        if path.is_file():
            return load(path)
        if (d / ".git").exists():
            return None
    return None


def load(path: Path) -> Calibration:
    data = None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        gpus = data["gpus"]
        for name, entry in gpus.items():
            if not (float(entry["factor"]) > 0 and isinstance(entry["runs"], list)):
                raise ValueError(f"GPU {name}: a factor above 0 and a list of runs")
    except FileNotFoundError:  # only a RECIPE_CALIBRATION path can be missing: found files exist
        raise RecipeError(f"RECIPE_CALIBRATION={path}: no such file; point it at a file `recipe calibrate` wrote, "
                          f"or set RECIPE_CALIBRATION=off") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        why = (exc.strerror if isinstance(exc, OSError) else
               f"invalid JSON: {exc}" if isinstance(exc, json.JSONDecodeError) else
               "not a JSON object" if not isinstance(data, dict) else
               f"no {exc}" if isinstance(exc, KeyError) else f"expected {exc}" if str(exc).startswith("GPU ")
               else f"unexpected shape: {exc}")
        raise RecipeError(f"{path}: not a calibration file recipe can read ({why}); delete it and run "
                          f"`recipe calibrate RUN_DIR...` again") from None
    return Calibration(path, gpus)


@dataclass(frozen=True)
class Measured:
    run: str
    gpu: str
    ratio: float  # measured speed / modelled speed (uncalibrated)
    method: str
    steps: int
    measured_hours: float
    modelled_hours: float


def read_run(run_dir: Path) -> Measured | str:
    """What one run says about speed, or why it says nothing."""
    path = run_dir / "run_report.json"
    if not path.is_file():
        raise RecipeError(f"{run_dir}: no run_report.json (give the directory `recipe run` wrote, e.g. runs/NAME)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        pm = report["planned_vs_measured"]
        measured = report["measured"]
        time = pm.get("time_model") or {}
        if not isinstance(measured, dict) or not isinstance(time, dict):
            raise TypeError("'measured' and 'planned_vs_measured.time_model' are not objects")
        planned_on = pm["tokens_per_second"]["planned_on"] if time.get("modelled_seconds_per_step") else None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        why = (f"invalid JSON: {exc}" if isinstance(exc, ValueError) else
               "it is not a JSON object" if not isinstance(report, dict) else
               f"no {exc}" if isinstance(exc, KeyError) else f"unexpected shape: {exc}")
        raise RecipeError(f"{path}: not a run report ({why}); give the directory `recipe run` wrote") from None
    kind = str(measured.get("peak_memory_kind", ""))
    if not kind.startswith("torch.cuda"):
        return f"{run_dir}: trained on a CPU, says nothing about a GPU's speed"
    if report.get("status") != "completed" and not measured.get("steps"):
        return f"{run_dir}: no training step finished"
    step_seconds = time.get("modelled_seconds_per_step")
    # a resumed run's wall time covers the steps it ran itself (steps_run), not the restored ones
    if measured.get("steps_run") == 0:
        return f"{run_dir}: no training step in the run's last session"
    steps, wall = measured.get("steps_run", measured.get("steps")) or 0, measured.get("wall_seconds") or 0
    if not step_seconds or not steps or wall <= 0:
        return f"{run_dir}: the report has no modelled step time (written by an older recipe); run it again"
    device = measured.get("device")
    if device:
        from .catalogs import find_gpu

        found = find_gpu(device)
        if found is not None and found.name != planned_on:
            return f"{run_dir}: ran on {found.name}, planned for {planned_on}; plan for the GPU you run on"
    factor = time.get("calibration_factor") or 1.0
    uncalibrated = step_seconds * factor  # the model's own seconds per step
    return Measured(str(run_dir), planned_on, uncalibrated * steps / wall,
                    report.get("method", "?"), steps, wall / 3600, uncalibrated * steps / 3600)


def fit(runs: list[Measured], previous: Optional[dict] = None) -> dict:
    """Per GPU: the median ratio over its runs (earlier runs kept, a run given again replaced)."""
    gpus = {name: dict(entry, runs=list(entry["runs"])) for name, entry in (previous or {}).items()}
    for m in runs:
        entry = gpus.setdefault(m.gpu, {"factor": 1.0, "runs": []})
        entry["runs"] = [r for r in entry["runs"] if r["run"] != m.run]
        entry["runs"].append({"run": m.run, "ratio": round(m.ratio, 4), "method": m.method, "steps": m.steps,
                              "measured_hours": round(m.measured_hours, 5),
                              "modelled_hours": round(m.modelled_hours, 5)})
    for entry in gpus.values():
        entry["factor"] = round(statistics.median(r["ratio"] for r in entry["runs"]), 4)
    return gpus


def write(path: Path, gpus: dict) -> None:
    from .lock import check_can_create

    if path.is_dir():
        raise UsageError(f"-o {path}: is a directory; give a file name, e.g. -o {path / 'calibration.json'}")
    check_can_create(path)
    try:
        _write(path, gpus)
    except OSError as exc:
        raise UsageError(f"-o {path}: cannot write there ({exc.strerror})") from None


def _write(path: Path, gpus: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps({"version": VERSION, "written_by": "recipe calibrate",
                               "about": "per GPU: measured / modelled training speed of this repository's runs; "
                                        "`recipe plan` multiplies its modelled speed by `factor`",
                               "gpus": gpus}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def calibrate_runs(run_dirs: list[Path], out: Path) -> list[str]:
    """Read the runs, refit the GPUs they ran on (keeping earlier runs in `out`), write `out`."""
    measured, lines = [], []
    for d in run_dirs:
        got = read_run(Path(d))
        if isinstance(got, str):
            lines.append(f"skipped {got}")
        else:
            measured.append(got)
    if not measured:
        raise RecipeError("no run trained on a GPU with a modelled step time: nothing to calibrate ("
                          + "; ".join(lines) + ")")
    previous = load(out).gpus if out.is_file() else None
    gpus = fit(measured, previous)
    write(out, gpus)
    for name in sorted({m.gpu for m in measured}):
        entry = gpus[name]
        lines.append(f"{name}: {len(entry['runs'])} run(s), measured / modelled speed {entry['factor']:.3g} "
                     f"(runs: {', '.join(format(r['ratio'], '.3g') for r in entry['runs'])})")
    lines.append(f"wrote {out}: plans of recipes under this directory now use it (RECIPE_CALIBRATION=off to ignore)")
    return lines
