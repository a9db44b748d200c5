import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Set RECIPE_UPDATE_GOLDEN=1 to rewrite golden files from the current output (then review the diff).
UPDATE_GOLDEN = os.environ.get("RECIPE_UPDATE_GOLDEN") == "1"


@pytest.fixture(scope="session", autouse=True)
def descriptor_cache(tmp_path_factory):
    """Everything the tool caches during the tests (data measurements, descriptors) goes to a temporary
    folder (subprocesses inherit it), never ~/.cache."""
    old = os.environ.get("RECIPE_CACHE_DIR")
    path = tmp_path_factory.mktemp("recipe-cache")
    os.environ["RECIPE_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RECIPE_CACHE_DIR", None)
    else:
        os.environ["RECIPE_CACHE_DIR"] = old


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """The hub and datasets offline, their caches (and the tool's) in tmp_path: hub code loads only what
    a test puts there."""
    import datasets
    import huggingface_hub.constants

    for var, value in (("HF_HUB_CACHE", tmp_path / "hub"), ("HF_DATASETS_CACHE", tmp_path / "ds-cache"),
                       ("RECIPE_CACHE_DIR", tmp_path / "recipe-cache"), ("HF_HUB_OFFLINE", "1"),
                       ("HF_DATASETS_OFFLINE", "1")):
        monkeypatch.setenv(var, str(value))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path


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


@contextmanager
def benchmark_module(name: str):
    """Import benchmarks/NAME.py as a module for the duration of a test module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
