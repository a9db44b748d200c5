import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Set RECIPE_UPDATE_GOLDEN=1 to rewrite golden files from the current output (then review the diff).
UPDATE_GOLDEN = os.environ.get("RECIPE_UPDATE_GOLDEN") == "1"


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from recipe_ft.cli import run

    def invoke(*args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke
