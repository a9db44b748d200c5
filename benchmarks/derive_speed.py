"""`recipe plan` on a local directory holding only the config.json of an uncatalogued family: the first
plan (derives the architecture descriptor with transformers on the meta device, caches it) against
the second (reads the cache, no torch import), and a catalog model's plan for reference.

    python benchmarks/derive_speed.py                 # 5 rounds
    python benchmarks/derive_speed.py --rounds 9 --family seed_oss

Each round makes an empty cache directory (RECIPE_CACHE_DIR), then runs, each as a fresh subprocess,
alternating which arm goes first from one round to the next: the catalog plan (Qwen/Qwen3-8B), then
the cold plan and the warm plan of the local directory (cold must precede warm within a round: the
cold one fills the cache). Wall time (time.perf_counter around the subprocess) and CPU time (the
child's user + system, from resource.getrusage) are recorded per run. Reported: medians, the paired
median ratio cold / warm (per round) for wall and CPU time. Threads: the subprocesses run with
OMP_NUM_THREADS=1 and MKL_NUM_THREADS=1 (stated in the output), so the figures do not depend on the
number of cores free at the time. The recipe and data come from `recipe demo` in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Published-size configs of uncatalogued families (transformers builds them; the catalog does not hold them).
# A benchmark input only: the dimensions of the published models, not catalog data.
CONFIGS = {
    # ByteDance-Seed/Seed-OSS-36B-Instruct, config.json (architecture keys)
    "seed_oss": {"model_type": "seed_oss", "architectures": ["SeedOssForCausalLM"], "hidden_size": 5120,
                 "intermediate_size": 27648, "num_hidden_layers": 64, "num_attention_heads": 80,
                 "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 155136, "max_position_embeddings": 524288,
                 "attention_bias": True, "attention_out_bias": False, "mlp_bias": False, "rope_theta": 10000000.0,
                 "tie_word_embeddings": False, "pad_token_id": 1},
    # LGAI-EXAONE/EXAONE-4.0-1.2B, config.json (architecture keys)
    "exaone4": {"model_type": "exaone4", "architectures": ["Exaone4ForCausalLM"], "hidden_size": 2048,
                "intermediate_size": 4096, "num_hidden_layers": 30, "num_attention_heads": 32,
                "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 102400, "max_position_embeddings": 65536,
                "tie_word_embeddings": True, "rope_theta": 1000000.0},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TRANSFORMERS_OFFLINE": "1"}


def recipe_command() -> list[str]:
    exe = Path(sys.executable).with_name("recipe")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "recipe_ft"]


def timed(args: list[str], env: dict) -> tuple[float, float, str]:
    """(wall seconds, child CPU seconds, stderr) of one subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    json.loads(proc.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stderr


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--family", choices=sorted(CONFIGS), default="seed_oss")
    args = parser.parse_args(argv)
    from recipe_ft.runtime import demo

    with tempfile.TemporaryDirectory() as tmp:
        recipe = demo.make(Path(tmp) / "qs", train_examples=8, eval_examples=4, epochs=1)
        model = recipe.parent / "uncatalogued"
        model.mkdir()
        (model / "config.json").write_text(json.dumps(CONFIGS[args.family]))
        base = [*recipe_command(), "plan", "--format", "json", str(recipe), "--set", "budget.gpu=A100-80GB"]
        local = [*base, "--set", f"model.base={model}"]
        catalog = [*base, "--set", "model.base=Qwen/Qwen3-8B"]
        rows: dict[str, list[tuple[float, float]]] = {"catalog": [], "cold": [], "warm": []}
        print(f"family {args.family}; {args.rounds} rounds; subprocesses with OMP_NUM_THREADS=1 MKL_NUM_THREADS=1; "
              f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        for i in range(args.rounds):
            env = {**ENV, "RECIPE_CACHE_DIR": str(Path(tmp) / f"cache{i}")}
            order = ["catalog", "local"] if i % 2 == 0 else ["local", "catalog"]
            for arm in order:
                if arm == "catalog":
                    rows["catalog"].append(timed(catalog, env)[:2])
                else:
                    wall, cpu, err = timed(local, env)
                    assert "described it with transformers" in err, err
                    rows["cold"].append((wall, cpu))
                    wall, cpu, err = timed(local, env)
                    assert "described it" not in err, err
                    rows["warm"].append((wall, cpu))
            print(f"round {i + 1}: " + "  ".join(f"{k} {v[-1][0]:.2f}s" for k, v in rows.items()), flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"\n{'plan':28s} {'median wall s':>14s} {'median CPU s':>13s}")
        for arm, label in (("catalog", "catalog (Qwen/Qwen3-8B)"), ("cold", "local, first (derives)"),
                           ("warm", "local, second (cached)")):
            print(f"{label:28s} {statistics.median(w for w, _ in rows[arm]):14.3f} "
                  f"{statistics.median(c for _, c in rows[arm]):13.3f}")
        wall_ratio = statistics.median(c[0] / w[0] for c, w in zip(rows["cold"], rows["warm"]))
        cpu_ratio = statistics.median(c[1] / w[1] for c, w in zip(rows["cold"], rows["warm"]) if w[1] > 0)
        print(f"paired median ratio first / second: wall {wall_ratio:.1f}x, CPU {cpu_ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
