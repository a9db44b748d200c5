"""How long `recipe plan` takes as a whole process, side by side with `accelerate estimate-memory`.

    python benchmarks/plan_speed.py                       # 10 runs each, the default recipe
    python benchmarks/plan_speed.py --runs 20 --recipe recipes/product-copy-llama3.1-8b-dora.yaml
    python benchmarks/plan_speed.py --no-peer             # recipe side only (no [train] extra needed)

What is timed, each as a fresh subprocess, after one untimed warm-up round (`--warmup`) so that .pyc
compilation and a cold page cache are not counted. The arms are alternated (benchmarks/paired.py:
each round runs every arm once, the order rotating round by round) and each process's wall seconds
and CPU seconds (user + system, from its rusage) and peak RSS are recorded; ratios are paired medians
(round i of one arm over round i of the other), for wall and for CPU time. Children run with
PYTHONDONTWRITEBYTECODE unset (a user's Python caches bytecode) and HF_HUB_OFFLINE=1.

* `python -c pass`                    interpreter start-up, the floor under everything else;
* `import pydantic, ruamel.yaml`      the libraries `recipe plan` cannot do without: its floor;
* `python -c 'import recipe_ft.cli'`  the CLI's import cost;
* `recipe plan <recipe> --format json` the whole command (the `recipe` entry point next to
  sys.executable, else `python -m recipe_ft`); its stdout must parse as JSON;
* the peer path's imports alone (`import accelerate.commands.estimate`: torch, transformers,
  huggingface_hub, accelerate), so that the report says where the peer's time goes;
* the peer path: what `accelerate estimate-memory <model>` does after its hub lookup. The model's
  config.json (from the recipe compiler's catalog entry, or the recipe's local model directory) is
  written to a temporary directory; the subprocess imports `accelerate.commands.estimate`, replaces
  its `verify_on_hub` (the network call) with the config's contents, and runs its own
  `estimate_command` on that directory: AutoConfig.from_pretrained, an empty model under
  init_empty_weights, calculate_maximum_sizes, and the dtype table.

`--data-lines N [N ...]`: plans on a training file of N lines (the recipe's 40 chat records repeated,
written once to a temporary directory) against the same recipe on its 40-line file, with
data.examples unset so that both count their file: `cold` runs each with an empty measurement cache
(the file is hashed, counted and sampled in one pass), `warm` with the cache the warm-up filled (the
file's stat signature matches, nothing is read). Peak RSS shows whether memory stays constant.

`--breakdown`: three more arms in the same rounds, each a process that stops earlier than the plan,
so that the paired median differences say where the plan's time goes: the floor plus pydantic's first
model (its schema machinery is imported lazily, on first use); plus recipe_ft's pydantic models (the
recipe's and the plan's); plus every recipe_ft module the plan imports (found by the probe below);
the rest is reading, compiling and printing the plan.

A separate probe runs the CLI's `run([...])` in one process and lists which of torch, transformers,
peft, bitsandbytes, trl, accelerate and datasets ended up in sys.modules.

The timing targets belong here, not in the tests: tests/test_plan_speed_script.py only checks that
the script works (valid JSON, no training stack imported).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paired  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = ROOT / "recipes" / "support-triage-llama3-8b.yaml"
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "trl", "accelerate", "datasets")
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
FLOOR = "import pydantic, ruamel.yaml"
# A plan with an empty measurement cache: a fresh cache folder for each run.
COLD = ("import os, sys, tempfile; os.environ['RECIPE_CACHE_DIR'] = tempfile.mkdtemp(dir=sys.argv.pop(1)); "
        "from recipe_ft.cli import main; sys.argv[0] = 'recipe'; main()")

# Run the CLI in-process, then say which heavy modules were imported (after the plan's own output).
PROBE = """
import json, sys
from recipe_ft.cli import run
code = run(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
ours = sorted(m for m in sys.modules if m.startswith('recipe_ft.'))
print(json.dumps({{"code": code, "heavy": heavy, "ours": ours}}))
"""

# `accelerate estimate-memory` minus the hub: its own estimate_command on a local config directory.
PEER = """
import json, sys, types
from pathlib import Path
import accelerate.commands.estimate as est   # imports torch, huggingface_hub, accelerate, transformers

config_dir = sys.argv[1]
hub_config = json.loads((Path(config_dir) / "config.json").read_text())
# The only network call: model_info(repo). Answer it with what the hub would (config, library).
est.verify_on_hub = lambda repo, token=None: types.SimpleNamespace(config=hub_config,
                                                                   library_name="transformers")
args = est.estimate_command_parser().parse_args([config_dir, "--library_name", "transformers"])
est.estimate_command(args)                    # AutoConfig, empty model, calculate_maximum_sizes, table
"""

# The peer's model size (printed by the test and the report, not timed).
PEER_SIZE = """
import json, sys, types
from pathlib import Path
import accelerate.commands.estimate as est
from accelerate.utils import calculate_maximum_sizes

config_dir = sys.argv[1]
hub_config = json.loads((Path(config_dir) / "config.json").read_text())
est.verify_on_hub = lambda repo, token=None: types.SimpleNamespace(config=hub_config,
                                                                   library_name="transformers")
model = est.create_empty_model(config_dir, library_name="transformers")
total, largest = calculate_maximum_sizes(model)
print(json.dumps({"class": type(model).__name__, "total_bytes_fp32": total,
                  "parameters": sum(p.numel() for p in model.parameters())}))
"""


@dataclass
class Timing:
    label: str
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def row(self) -> str:
        return (f"{self.label:<44} {self.median:>8.3f} {min(self.times):>8.3f} {max(self.times):>8.3f} "
                f"{len(self.times):>5}")


def recipe_command(recipe: str | Path) -> list[str]:
    """`recipe plan <recipe> --format json` as a user runs it: the entry point, else `-m recipe_ft`."""
    entry = Path(sys.executable).parent / "recipe"
    head = [str(entry)] if entry.is_file() else [sys.executable, "-m", "recipe_ft"]
    return [*head, "plan", str(recipe), "--format", "json"]


def run_once(cmd: list[str], ok_codes=(0,)) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - start
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return elapsed, proc


def time_command(label: str, cmd: list[str], runs: int, warmup: int = 1, ok_codes=(0,),
                 check=None) -> Timing:
    """Wall seconds of `runs` fresh subprocesses; `check(proc)` is called on every run's result."""
    for _ in range(warmup):
        _, proc = run_once(cmd, ok_codes)
        if check:
            check(proc)
    times = []
    for _ in range(runs):
        elapsed, proc = run_once(cmd, ok_codes)
        if check:
            check(proc)
        times.append(elapsed)
    return Timing(label, times)


def plan_json(proc: subprocess.CompletedProcess) -> dict:
    """The plan printed by `recipe plan --format json` (raises if it is not one JSON object)."""
    data = json.loads(proc.stdout)
    if not isinstance(data, dict) or "model" not in data:
        raise ValueError(f"not a plan: {proc.stdout[:200]!r}")
    return data


# `recipe plan` exits 0, or 3 when nothing fits the budget (the plan JSON is still printed).
PLAN_OK = (0, 3)


def time_recipe_plan(recipe: str | Path, runs: int, warmup: int = 1) -> tuple[Timing, dict]:
    """Time `recipe plan --format json`; returns the timing and the (last) parsed plan."""
    plans = []
    timing = time_command("recipe plan --format json", recipe_command(recipe), runs, warmup, PLAN_OK,
                          check=lambda proc: plans.append(plan_json(proc)))
    return timing, plans[-1]


def time_import(runs: int, warmup: int = 1) -> Timing:
    return time_command("python -c 'import recipe_ft.cli'", [sys.executable, "-c", "import recipe_ft.cli"],
                        runs, warmup)


def heavy_modules_after_plan(recipe: str | Path) -> dict:
    """Run the CLI's `run(['plan', recipe, '--format', 'json'])` in one process; report its exit code,
    the heavy modules left in sys.modules, and whether the plan it printed parses."""
    _, proc = run_once([sys.executable, "-c", PROBE.format(heavy=HEAVY), "plan", str(recipe),
                        "--format", "json"], PLAN_OK)
    *plan_lines, last = proc.stdout.rstrip("\n").split("\n")
    result = json.loads(last)
    result["plan_ok"] = "model" in json.loads("\n".join(plan_lines))
    return result


FIRST_MODEL = f"{FLOOR}\nclass M(pydantic.BaseModel):\n    x: int = 0"


def breakdown_arms(modules: list[str]) -> list:
    """Processes that stop at each stage of a plan: pydantic's first model, our models, all our modules."""
    schemas = "import recipe_ft.schemas.recipe, recipe_ft.schemas.plan"
    return [paired.Arm("stage: floor + pydantic's first model", [sys.executable, "-c", FIRST_MODEL]),
            paired.Arm("stage: + recipe_ft's pydantic models", [sys.executable, "-c", f"{FIRST_MODEL}\n{schemas}"]),
            paired.Arm(f"stage: + the {len(modules)} recipe_ft modules it imports",
                       [sys.executable, "-c", f"{FIRST_MODEL}\n{schemas}\nimport {', '.join(modules)}"])]


def print_breakdown(chain: list) -> None:
    """Each stage's cost: the paired median of (this arm - the one before), wall and CPU seconds."""
    print("where the plan's time goes (paired median differences, seconds; each arm includes the ones above):")
    names = ["interpreter start-up", "importing pydantic and ruamel.yaml (the floor)", "pydantic's schema "
             "machinery (first model)", "building recipe_ft's pydantic models", "importing the other recipe_ft "
             "modules", "reading, compiling and printing the plan"]
    for name, before, after in zip(names[1:], chain, chain[1:]):
        wall = statistics.median(b.wall - a.wall for a, b in zip(before.samples, after.samples))
        cpu = statistics.median(b.cpu - a.cpu for a, b in zip(before.samples, after.samples))
        print(f"  {name:<48} {wall:>7.3f} wall {cpu:>7.3f} CPU")
    print(f"  {names[0]:<48} {chain[0].median():>7.3f} wall {chain[0].median('cpu'):>7.3f} CPU")


def model_config(recipe: str | Path) -> tuple[str, dict]:
    """The recipe's model (hub id or directory) and its config.json, found by running the compiler."""
    from recipe_ft.compiler.models import catalog_entry
    from recipe_ft.compiler.pipeline import compile_file

    model = compile_file(str(recipe)).plan.model
    entry = catalog_entry(model.name) if model.source == "catalog" else None
    if entry is not None:
        return model.name, dict(entry["config"])
    path = Path(model.path or model.name)
    return str(path), json.loads((path / "config.json").read_text(encoding="utf-8"))


def write_config(config: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return directory


def peer_size(config_dir: Path) -> dict:
    _, proc = run_once([sys.executable, "-c", PEER_SIZE, str(config_dir)])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "accelerate"))


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def write_lines(source: Path, lines: int, path: Path) -> Path:
    """A JSONL training file of `lines` lines: the source file's records repeated, written in blocks."""
    records = [line for line in source.read_bytes().splitlines(keepends=True) if line.strip()]
    block = b"".join(records) * max(1, 100_000 // len(records))
    per_block = len(records) * max(1, 100_000 // len(records))
    with path.open("wb") as f:
        left = lines
        while left >= per_block:
            f.write(block)
            left -= per_block
        f.write(b"".join(records[i % len(records)] for i in range(left)))
    return path


def data_arms(recipe: Path, big: Path, lines: int, tmp: Path) -> list:
    """40-line plan, N-line plan with an empty cache, N-line plan with the warm cache."""
    head = recipe_command(recipe)
    unset = ["--set", "data.examples=null"]
    cold_dir = tmp / "cold"
    cold_dir.mkdir(exist_ok=True)
    return [paired.Arm("plan, 40-line file", [*head, *unset]),
            paired.Arm(f"plan, {lines:,}-line file, cold cache",
                       [sys.executable, "-c", COLD, str(cold_dir), *head[-4:], *unset, "--set", f"data.train={big}"]),
            paired.Arm(f"plan, {lines:,}-line file, warm cache", [*head, *unset, "--set", f"data.train={big}"])]


def check_plan(expected_examples):
    def check(arm, sample):
        plan = json.loads(sample.stdout)
        n = expected_examples(arm)
        if n is not None and plan["data"]["examples"] != n:
            raise RuntimeError(f"{arm.label}: planned {plan['data']['examples']} examples, expected {n}")
    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="recipe file (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=10, help="timed rounds (default: 10)")
    parser.add_argument("--peer-runs", type=int, default=None, help="(kept for compatibility; the peer runs "
                                                                     "in the same rounds)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default: 1)")
    parser.add_argument("--no-peer", action="store_true", help="skip the accelerate path")
    parser.add_argument("--data-lines", type=int, nargs="+", default=[],
                        help="also plan on training files of these many lines (e.g. 1000000 10000000)")
    parser.add_argument("--breakdown", action="store_true", help="also time the plan's stages (see above)")
    parser.add_argument("--data-runs", type=int, default=None, help="timed rounds for --data-lines (default: --runs)")
    args = parser.parse_args(argv)
    recipe = Path(args.recipe).resolve()

    print(f"python {sys.version.split()[0]} at {sys.executable}; {paired.threads_note()}; "
          f"load average before: {load()}")
    shown = recipe.relative_to(ROOT) if recipe.is_relative_to(ROOT) else recipe
    print(f"command: {' '.join(recipe_command(shown))}  (cwd {ROOT}; fresh subprocesses, arms alternated, "
          f"{args.warmup} untimed warm-up round)")

    heavy = heavy_modules_after_plan(recipe)
    plans = []
    arms = [paired.Arm("python -c pass", [sys.executable, "-c", "pass"]),
            paired.Arm(f"floor: python -c '{FLOOR}'", [sys.executable, "-c", FLOOR]),
            paired.Arm("python -c 'import recipe_ft.cli'", [sys.executable, "-c", "import recipe_ft.cli"]),
            paired.Arm("recipe plan --format json", recipe_command(recipe))]
    stages = breakdown_arms(heavy["ours"]) if args.breakdown else []
    arms += stages
    peer = peer_import = None
    name, config = model_config(recipe)
    tmp = Path(tempfile.mkdtemp(prefix="plan-speed-"))
    try:
        if not args.no_peer:
            if not peer_available():
                print("peer path skipped: torch, transformers or accelerate is not installed")
            else:
                config_dir = write_config(config, tmp / name.replace("/", "--"))
                peer = paired.Arm("accelerate estimate-memory path (no hub)",
                                  [sys.executable, "-c", PEER, str(config_dir)])
                peer_import = paired.Arm("  of which: import accelerate.commands.estimate",
                                         [sys.executable, "-c", "import accelerate.commands.estimate"])
                arms += [peer, peer_import]
                size = peer_size(config_dir)

        def check(arm, sample):
            if arm.label.startswith("recipe plan"):
                plans.append(json.loads(sample.stdout))
            elif arm is peer and "Memory Usage for loading" not in sample.stdout:
                raise RuntimeError(f"peer printed no table:\n{sample.stdout[-2000:]}")

        paired.alternate(arms, args.runs, env=ENV, cwd=ROOT, ok_codes=PLAN_OK, warmup=args.warmup, check=check)
        plan_arm, floor = arms[3], arms[1]
        print()
        print(paired.HEADER)
        for arm in arms:
            print(arm.row())
        print(f"recipe plan / floor: {paired.ratio(plan_arm, floor):.2f}x wall, "
              f"{paired.ratio(plan_arm, floor, 'cpu'):.2f}x CPU time (paired medians of {args.runs})")
        if stages:
            print_breakdown([arms[0], floor, *stages, plan_arm])
        print(f"load average after: {load()}")

        for lines in args.data_lines:
            big = write_lines(ROOT / "recipes" / "data" / "support" / "train.jsonl", lines, tmp / f"train-{lines}.jsonl")
            darms = data_arms(recipe, big, lines, tmp)
            paired.alternate(darms, args.data_runs or args.runs, env=ENV, cwd=ROOT, ok_codes=PLAN_OK,
                             warmup=args.warmup, check=check_plan(lambda a: lines if "-line file," in a.label else 40))
            print()
            print(f"{lines:,}-line training file ({big.stat().st_size / 2**20:,.0f} MiB) against the recipe's "
                  f"40-line file; load average {load()}")
            print(paired.HEADER)
            for arm in darms:
                print(arm.row())
            for arm in darms[1:]:
                print(f"{arm.label} / 40-line: {paired.ratio(arm, darms[0]):.2f}x wall, "
                      f"{paired.ratio(arm, darms[0], 'cpu'):.2f}x CPU time; peak RSS "
                      f"{max(x.max_rss_mib for x in arm.samples):,.0f} MiB "
                      f"(40-line: {max(x.max_rss_mib for x in darms[0].samples):,.0f} MiB)")
            big.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    plan = plans[-1]
    plan_timing = Timing("recipe plan --format json", [x.wall for x in arms[3].samples])
    print()
    print(f"model: {name}; recipe plan counts {plan['model']['parameters']:,} parameters")
    if peer is not None:
        print(f"accelerate's empty model: {size['class']}, {size['parameters']:,} parameters "
              f"({size['total_bytes_fp32'] / 2**30:.2f} GiB in fp32)")
    torch_line = "yes" if "torch" in heavy["heavy"] else "no"
    others = ", ".join(heavy["heavy"]) or "none"
    summary = f"recipe plan: {plan_timing.median:.2f} s (median of {len(plan_timing.times)})"
    if peer is not None:
        summary += (f" | accelerate estimate path: {peer.median():.2f} s (median of {len(peer.samples)}), of which "
                    f"{peer_import.median():.2f} s importing torch, transformers and accelerate and "
                    f"{max(0.0, peer.median() - peer_import.median()):.2f} s building the empty model and its size "
                    f"table | ratio {paired.ratio(peer, arms[3]):.1f}x wall, {paired.ratio(peer, arms[3], 'cpu'):.1f}x "
                    f"CPU (paired; not the same work: recipe plan computes the whole plan without torch; the peer "
                    f"only sizes the parameters, with torch)")
    summary += f"; torch imported by recipe plan: {torch_line} (heavy modules: {others})"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
