"""`recipe validate` (and later `recipe plan`) never import the training stack."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "trl", "accelerate", "datasets")

PROBE = """
import json, sys
from recipe_ft.cli import run
code = run(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


def probe(*args):
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_validate_imports_no_training_stack():
    result = probe("validate", "-q", "recipes")
    assert result == {"code": 0, "heavy": []}


def test_plan_imports_no_training_stack():
    result = probe("plan", "--format", "json", "recipes/support-triage-llama3-8b.yaml")
    assert result == {"code": 0, "heavy": []}
