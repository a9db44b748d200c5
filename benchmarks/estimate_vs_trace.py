"""Print the analytic estimate beside the tracer for the validation grid of tests/test_memory_vs_trace.py.

    python benchmarks/estimate_vs_trace.py

Needs the [train] extra (the tracer builds real transformers + peft models on fake tensors).
"""

from __future__ import annotations

import statistics
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    warnings.filterwarnings("ignore")
    from test_memory_vs_trace import GRID, measure

    errors = []
    print(f"{'configuration':32s} {'estimate GiB':>12s} {'traced GiB':>11s} {'error':>7s}")
    for label, cfg, opts in GRID:
        estimated, traced = measure(label, cfg, opts)
        error = (estimated - traced) / traced
        errors.append(abs(error))
        print(f"{label:32s} {estimated / 2**30:12.2f} {traced / 2**30:11.2f} {error:+7.1%}")
    print(f"{len(errors)} configurations: median |error| {statistics.median(errors):.1%}, max {max(errors):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
