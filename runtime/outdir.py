"""The output-directory contract every writer follows: nothing a user owns is ever deleted.

- A run directory carries a marker (`.recipe-run.json`) and a lock (`.recipe-run.lock`, an flock held
  for the run's life; the kernel releases it on any exit, kill -9 included). A second run on a locked
  directory is refused, naming the holder (pid, host, start time); a lock left by a dead process is
  reported as stale and taken over.
- An existing run directory with checkpoints, an adapter or a report is never cleared: `--resume`
  continues it, `--fresh` moves it aside (RUN_DIR.1, .2, ...), never deletes it.
- `recipe export -o DIR` writes only into a new directory, an empty one, or one it wrote itself (its
  marker lists the files; a directory holding anything else is refused).
- `recipe demo` refuses to overwrite files it did not write, or wrote and the user then edited,
  unless `--force`.
- Reports, plans and markers are written atomically (temp file + rename).
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

from ..schemas.errors import RecipeError, UsageError

from ..compiler.discover import EXPORT_MARKER, RUN_MARKER  # `recipe validate` skips folders holding these

LOCK_FILE = ".recipe-run.lock"
DEMO_MARKER = ".recipe-demo.json"
RUN_OUTPUTS = ("checkpoints", "adapter", "model", "run_report.json", "run_report.md", "merged")
TOOL_FILES = {RUN_MARKER, LOCK_FILE, "plan.json", "launch", "ranks", "serve", "loss.png"}


# --- atomic writes ------------------------------------------------------------------------------

def atomic_write(path: Path, data: Union[str, bytes], mode: Optional[int] = None) -> None:
    """Write a file so that a reader sees the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


# --- run directories ----------------------------------------------------------------------------

def usable_dir(path: Path, what: str) -> None:
    """Refuse a path that is a file, or lies under a file, before anything is loaded."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RecipeError(f"{what} {path} is an existing file, not a directory: set it to a directory")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise RecipeError(f"{what} {path} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK):
        raise RecipeError(f"{what} {path} cannot be written ({probe} is not writable)")


def holder_text(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


def _locked_by(run_dir: Path) -> Optional[dict]:
    """The holder of the run directory's lock, or None when it is free."""
    import fcntl

    path = run_dir / LOCK_FILE
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_json(path) or {"pid": "?"}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def outputs(run_dir: Path) -> list[str]:
    """What an earlier run left in the directory that a new run would overwrite (an empty checkpoints/
    folder, made when a trainer is created, is not a checkpoint)."""
    found = []
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if name == "checkpoints":
            if path.is_dir() and any(path.glob("checkpoint-*")):
                found.append(name)
        elif path.exists():
            found.append(name)
    return found


def foreign(run_dir: Path) -> list[str]:
    """Entries this tool did not write, in a directory without a run marker."""
    if (run_dir / RUN_MARKER).is_file():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name not in TOOL_FILES and p.name not in RUN_OUTPUTS)


def aside_name(run_dir: Path) -> Path:
    n = 1
    while Path(f"{run_dir}.{n}").exists():
        n += 1
    return Path(f"{run_dir}.{n}")


def check_run_dir(run_dir: Path, resume: bool, fresh: bool, keep: Iterable[Path] = ()) -> None:
    """Before anything is loaded: refuse an unusable, busy or occupied run directory, or one that is
    (or holds) a folder in `keep` (the recipe's, the current one)."""
    if resume and fresh:
        raise UsageError("--resume and --fresh contradict each other: choose one")
    run_dir = Path(run_dir).resolve()
    for folder in (Path(k).resolve() for k in keep):
        if run_dir == folder or run_dir in folder.parents:
            raise RecipeError(f"output.dir {run_dir} is (or holds) {folder}: a run needs a directory of its own, "
                              f"e.g. runs/<name>")
    usable_dir(run_dir, "output.dir")
    if not run_dir.is_dir():
        return
    holder = _locked_by(run_dir)
    if holder is not None:
        raise RecipeError(f"{run_dir} is in use by another run ({holder_text(holder)}); wait for it to finish, "
                          f"or set output.dir to another directory")
    if fresh:
        return
    other = foreign(run_dir)
    if other:
        raise RecipeError(f"output.dir {run_dir} is not a run directory: it holds files `recipe run` did not "
                          f"write ({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); set output.dir to a "
                          f"new directory, or pass --fresh to move it aside (nothing is deleted)")
    found = outputs(run_dir)
    if not found:
        return
    if resume and "checkpoints" in found:
        return
    what = ", ".join(found)
    if resume:
        raise RecipeError(f"{run_dir} holds an earlier run ({what}) but no checkpoint to resume from; "
                          f"pass --fresh to move it aside to {aside_name(run_dir)} and start over")
    raise RecipeError(f"{run_dir} holds an earlier run ({what}): continue it with --resume, or start over "
                      f"with --fresh (the earlier run is moved to {aside_name(run_dir)}, not deleted)")


class RunLock:
    """The run directory's lock, held from creation of its outputs to the end of the process."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir = run_dir
        self.fd: Optional[int] = fd

    @classmethod
    def acquire(cls, run_dir: Path, fresh: bool = False, log: Callable = print) -> "RunLock":
        """Move an earlier run aside when `fresh`, create the directory, its marker and its lock."""
        import fcntl

        run_dir = Path(run_dir)
        if fresh and run_dir.is_dir() and any(run_dir.iterdir()):
            holder = _locked_by(run_dir)
            if holder is not None:
                raise RecipeError(f"{run_dir} is in use by another run ({holder_text(holder)})")
            aside = aside_name(run_dir)
            os.rename(run_dir, aside)
            log(f"moved the earlier run {run_dir} aside to {aside} (nothing deleted)")
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = _read_json(path)
            raise RecipeError(f"{run_dir} is in use by another run ({holder_text(holder)}); wait for it to "
                              f"finish, or set output.dir to another directory") from None
        stale = _read_json(path)
        if stale:
            log(f"note: {run_dir} had a stale lock from a run that ended without finishing "
                f"({holder_text(stale)}; killed?); taking it over")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": "recipe run"}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        if not (run_dir / RUN_MARKER).is_file():
            atomic_write(run_dir / RUN_MARKER, json.dumps({"tool": "recipe", "kind": "run", "created": _now()}) + "\n")
        return cls(run_dir, fd)

    def release(self) -> None:
        """Clear the holder (a clean exit leaves no stale lock) and unlock."""
        import fcntl

        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --- export directories -------------------------------------------------------------------------

def _files(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() or p.is_symlink()}


def export_owned(directory: Path) -> bool:
    """True when every file in `directory` is one `recipe export` wrote there."""
    marker = directory / EXPORT_MARKER
    if not marker.is_file():
        return False
    listed = set(_read_json(marker).get("files", []))
    return _files(directory) <= listed | {EXPORT_MARKER}


def check_export_dir(out: Path) -> None:
    """Before loading anything: `out` must be new, empty, or an export this tool wrote."""
    usable_dir(out, "export directory")
    if not out.is_dir() or not any(out.iterdir()) or export_owned(out):
        return
    marker = (out / EXPORT_MARKER).is_file()
    why = "it holds files `recipe export` did not write" if marker else "it exists and was not made by `recipe export`"
    raise RecipeError(f"refusing to export into {out}: {why}, and nothing a user made is overwritten or deleted. "
                      f"Give -o a new directory (it is created)")


def publish_export(tmp: Path, out: Path) -> None:
    """Move a finished export from its temporary directory to `out`, replacing only an earlier export."""
    import shutil

    atomic_write(tmp / EXPORT_MARKER, json.dumps({"tool": "recipe", "kind": "export", "created": _now(),
                                                  "files": sorted(_files(tmp))}, indent=2) + "\n")
    if out.is_dir():
        check_export_dir(out)  # again: it may have changed while the model was merging
        if any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old)  # an earlier export: only files this tool wrote
            return
        out.rmdir()
    os.replace(tmp, out)


# --- the demo -----------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_demo_dir(directory: Path, targets: Iterable[str], force: bool) -> None:
    """Refuse to overwrite files of `targets` (relative paths; a trailing / means a folder) that the
    demo did not write, or wrote and were edited since, unless `force`."""
    usable_dir(directory, "demo directory")
    if force or not directory.is_dir():
        return
    written = _read_json(directory / DEMO_MARKER).get("files", {})
    clash = []
    for target in targets:
        path = directory / target
        paths = [p for p in path.rglob("*") if p.is_file()] if target.endswith("/") else [path]
        for p in paths:
            if not p.is_file():
                continue
            rel = str(p.relative_to(directory))
            if written.get(rel) != _sha256(p):
                clash.append(rel)
    if clash:
        shown = ", ".join(sorted(clash)[:5]) + (", ..." if len(clash) > 5 else "")
        raise RecipeError(f"{directory} holds files the demo would overwrite that it did not write or that were "
                          f"edited since ({shown}): choose another directory, or pass --force to overwrite them")


SERVE_MARKER = ".recipe-serve.json"  # in RUN_DIR/serve: the serving files `recipe export` wrote, by hash
SERVE_FILES = ("vllm_merged.sh", "Modelfile", "vllm_lora.sh", "Modelfile.adapter")


def check_serve_files(serve: Path) -> None:
    """Before an export: refuse to overwrite a serving file edited since `recipe export` wrote it (folders
    exported before the marker existed: their files are taken as the tool's)."""
    marker = serve / SERVE_MARKER
    if not marker.is_file():
        return
    written = _read_json(marker).get("files", {})
    edited = [name for name in SERVE_FILES if (serve / name).is_file() and written.get(name) != _sha256(serve / name)]
    if edited:
        raise RecipeError(f"{serve}: {', '.join(edited)} edited since `recipe export` wrote it, and nothing a user "
                          f"made is overwritten: move it aside (e.g. to a .local name) and export again")


def mark_serve(serve: Path) -> None:
    hashes = {name: _sha256(serve / name) for name in SERVE_FILES if (serve / name).is_file()}
    atomic_write(serve / SERVE_MARKER, json.dumps({"tool": "recipe", "kind": "serve", "files": hashes},
                                                  indent=2) + "\n")


def mark_demo(directory: Path, files: Iterable[Path]) -> None:
    hashes = {str(Path(f).relative_to(directory)): _sha256(Path(f)) for f in files}
    atomic_write(directory / DEMO_MARKER, json.dumps({"tool": "recipe", "kind": "demo", "files": hashes},
                                                     indent=2) + "\n")
