"""Expand the PATH arguments of `recipe validate`: files, directories and glob patterns."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from ..schemas.errors import UsageError
from .load import SUFFIXES


RUN_MARKER = ".recipe-run.json"  # a run directory: everything in it was written by `recipe run`
EXPORT_MARKER = ".recipe-export.json"  # a merged model written by `recipe export`
LAUNCH_MARKER = ".recipe-launch.json"  # lists the launch files `recipe launch` wrote in its folder


def generated(file: str) -> bool:
    """True for files this tool wrote (run directories, exports, launch files): not recipes."""
    path = Path(file).resolve()
    for folder in path.parents:
        if (folder / RUN_MARKER).is_file() or (folder / EXPORT_MARKER).is_file():
            return True
    marker = path.parent / LAUNCH_MARKER
    if marker.is_file():
        try:
            return path.name in json.loads(marker.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError, AttributeError):
            return False
    return False


def expand(args: list[str]) -> list[str]:
    """Recipe files named by files, directories (searched recursively) and globs, in order; files this
    tool generated (run directories, launch files) are skipped unless named one by one. Every argument
    that names no recipe is reported, together, in one UsageError."""
    files: list[str] = []
    bad: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(arg)
                if not any(part.startswith(".") and part not in (".", "..") for part in Path(root).parts)
                for name in names
                if name.lower().endswith(SUFFIXES) and not generated(os.path.join(root, name))
            )
            if not found:
                bad.append(f"{arg}: no .yaml, .yml or .toml files in this directory")
            files += found
        elif path.is_file():
            files.append(arg)
        elif glob.has_magic(arg):
            found = sorted(f for f in glob.glob(arg, recursive=True)
                           if f.lower().endswith(SUFFIXES) and not generated(f))
            if not found:
                bad.append(f"{arg}: the pattern matches no recipe files")
            files += found
        elif path.exists():  # a named pipe or a device: reading it could wait forever
            bad.append(f"{arg}: not a regular file; give a recipe file")
        else:
            bad.append(f"{arg}: no such file or directory")
    if bad:
        raise UsageError("\n".join(bad) if len(bad) == 1 else
                         f"{len(bad)} paths name no recipe:\n  " + "\n  ".join(bad))
    return list(dict.fromkeys(files))
