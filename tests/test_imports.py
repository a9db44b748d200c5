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


def test_compiler_and_schemas_never_import_the_runtime():
    """The dependency direction: schemas <- compiler, schemas <- runtime; the compiler never reaches
    into runtime/ (not even lazily), so planning cannot depend on how the runtime is written."""
    import ast

    offenders = []
    for folder in ("compiler", "schemas"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module and (
                        node.module == "runtime" or node.module.startswith("runtime.")) and node.level >= 2:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {'.' * node.level}{node.module}")
                if isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module is None and any(
                        a.name == "runtime" for a in node.names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {'.' * node.level} import runtime")
    assert not offenders, "compiler/schemas import the runtime:\n" + "\n".join(offenders)
