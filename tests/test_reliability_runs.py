"""Issue 12, the cases that train: a full disk during a save, the lock while a run is alive, and random
sequences of run / kill -9 / run / run --resume / run --fresh / export on the demo, after each of which
every complete checkpoint, adapter and report written is still there or was moved aside with a message.

Every wait is on an event (a checkpoint marker appearing, a process exiting), never on a clock.
"""

import errno
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from demo_copy import fresh_copy

pytest.importorskip("trl")
pytest.importorskip("peft")

from recipe_ft.runtime import demo, outdir  # noqa: E402

SETS = ["training.epochs=1", "training.max_steps=4", "training.save_steps=1", "training.logging_steps=1",
        "data.eval=null"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return demo.make(tmp_path_factory.mktemp("runs") / "qs", train_examples=16, eval_examples=2, epochs=1)


@pytest.fixture
def project(tiny, tmp_path):
    return fresh_copy(tiny, tmp_path / "qs")


def args(recipe, *extra, sets=SETS):
    out = ["run", str(recipe)]
    for s in sets:
        out += ["--set", s]
    return out + list(extra)


def complete(run_dir: Path) -> set[str]:
    return {m.parent.name for m in (run_dir / "checkpoints").glob("checkpoint-*/CHECKPOINT_COMPLETE")}


def test_disk_full_during_a_save_keeps_the_last_complete_checkpoint(cli, project, monkeypatch):
    from transformers import Trainer

    original = Trainer._save
    calls = []

    def full_disk(self, output_dir=None, state_dict=None):
        calls.append(output_dir)
        if len(calls) == 2:  # the second checkpoint: half written, then the disk is full
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "adapter_model.safetensors").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, output_dir, state_dict)

    monkeypatch.setattr(Trainer, "_save", full_disk)
    code, out, err = cli(*args(project))
    run_dir = project.parent / "runs" / "quickstart"
    assert code == 1 and "the disk is full" in err and "checkpoint-1, is kept" in err and "--resume" in err, out + err
    assert "Traceback" not in out + err
    assert complete(run_dir) == {"checkpoint-1"} and not (run_dir / "adapter").exists()
    assert json.loads((run_dir / outdir.LOCK_FILE).read_text() or "{}") == {}  # released on the error
    monkeypatch.setattr(Trainer, "_save", original)  # space freed
    code, out, err = cli(*args(project, "--resume"))
    assert code == 0, out + err
    report = json.loads((run_dir / "run_report.json").read_text())
    assert report["resumed_from"].endswith("checkpoint-1") and (run_dir / "adapter" / "adapter_config.json").is_file()
    assert not (run_dir / "checkpoints" / "checkpoint-2" / "CHECKPOINT_COMPLETE").exists() or \
        "checkpoint-2" in complete(run_dir)  # the half-written one was discarded, then saved again


def start(recipe, *extra, sets=SETS):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "recipe_ft", *args(recipe, *extra, sets=sets)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_for_new_checkpoint(run_dir: Path, proc, before: set[str]) -> bool:
    """Until a complete checkpoint not in `before` appears (True) or the process exits (False)."""
    while not complete(run_dir) - before:
        if proc.poll() is not None:
            return False
        time.sleep(0.05)  # a poll interval, not a deadline
    return True


def test_a_second_run_is_refused_while_the_first_is_alive(cli, project):
    run_dir = project.parent / "runs" / "quickstart"
    proc = start(project, sets=[*SETS[:1], "training.max_steps=100000", *SETS[2:]])
    try:
        assert wait_for_new_checkpoint(run_dir, proc, set()), proc.communicate()[0][-3000:]
        code, out, err = cli(*args(project, "--resume"))
        assert code == 1 and f"pid {proc.pid}" in err and "in use by another run" in err, out + err
    finally:
        proc.kill()
        proc.wait()
    code, out, err = cli(*args(project))
    assert code == 1 and "--resume" in err  # killed: its checkpoints are kept, not cleared


# --- random sequences ---------------------------------------------------------------------------

def digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if p.is_file():
            h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def snapshot(run_dir: Path) -> dict:
    """What a user would not want to lose: complete checkpoints, the adapter, the reports."""
    out = {}
    if not run_dir.is_dir():
        return out
    for name in complete(run_dir):
        out[f"checkpoints/{name}"] = digest(run_dir / "checkpoints" / name)
    if (run_dir / "adapter" / "adapter_config.json").is_file():
        out["adapter"] = digest(run_dir / "adapter")
    for name in ("run_report.json", "run_report.md"):
        if (run_dir / name).is_file():
            out[name] = digest(run_dir / name)
    return out


def op_run(recipe, extra=()):
    proc = start(recipe, *extra)
    out, _ = proc.communicate()
    return proc.returncode, out


def op_kill(recipe, run_dir):
    """Start a run (resuming when there is something to resume), kill -9 it after its first new
    complete checkpoint; a run that is refused or finishes first is left as it ended."""
    extra = ["--resume"] if complete(run_dir) else []
    proc = start(recipe, *extra)
    if wait_for_new_checkpoint(run_dir, proc, complete(run_dir)):
        proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate()
    return proc.returncode, out


def test_random_run_kill_resume_fresh_export_sequences_lose_nothing(project, tmp_path):
    seed = int(os.environ.get("RECIPE_SEQUENCE_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    ops = ["run", "kill", "run", "resume", "export", "fresh"]
    rng.shuffle(ops)
    ops = ["kill", *ops[:int(os.environ.get("RECIPE_SEQUENCE_LENGTH", 5))]]  # start from a crash
    run_dir = project.parent / "runs" / "quickstart"
    exports = 0
    history = []
    for op in ops:
        before = snapshot(run_dir)
        if op == "run":
            code, out = op_run(project)
        elif op == "resume":
            code, out = op_run(project, ["--resume"])
        elif op == "fresh":
            code, out = op_run(project, ["--fresh"])
        elif op == "kill":
            code, out = op_kill(project, run_dir)
        else:
            exports += 1
            target = tmp_path / f"export-{exports}"
            proc = subprocess.run([sys.executable, "-m", "recipe_ft", "export", str(run_dir), "--merge", "-o",
                                   str(target)], capture_output=True, text=True)
            code, out = proc.returncode, proc.stdout + proc.stderr
            if "adapter" in before:
                assert code == 0 and (target / "merge_check.json").is_file(), out[-3000:]
        history.append((op, code))
        context = f"seed {seed}, ops so far {history}:\n{out[-3000:]}"
        assert "Traceback" not in out or code == -signal.SIGKILL, context
        moved = re.search(r"moved the earlier run \S+ aside to (\S+) \(nothing deleted\)", out)
        if op == "run" and before:
            assert code == 1 and "--resume" in out, context  # refused: nothing cleared
        after = snapshot(run_dir)
        newest = max((int(k.rsplit("-", 1)[1]) for k in after if k.startswith("checkpoints/")), default=0)
        for key, value in before.items():
            if moved:
                assert snapshot(Path(moved.group(1))).get(key) == value, (key, context)
            elif key.startswith("checkpoints/") and key not in after:
                # rotated by a resumed run's own save_total_limit: only once newer complete ones exist
                assert op in ("resume", "kill") and newest > int(key.rsplit("-", 1)[1]), (key, context)
            elif key in ("adapter", "run_report.json", "run_report.md") and after.get(key) != value:
                # superseded by a run that finished (a resume, or a kill that came after the run ended)
                assert op in ("resume", "kill") and code == 0 and key in after, (key, context)
            else:
                assert after.get(key) == value, (key, context)
        if op == "fresh":
            assert code == 0 and (moved or not before), context
