"""Expand the PATH arguments of `recipe validate`: files, directories and glob patterns."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from ..schemas.errors import UsageError
from .load import SUFFIXES


def expand(args: list[str]) -> list[str]:
    """Recipe files named by files, directories (searched recursively) and globs, in order."""
    files: list[str] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                os.path.join(root, name)
                for root, dirs, names in os.walk(arg)
                if not any(part.startswith(".") and part not in (".", "..") for part in Path(root).parts)
                for name in names
                if name.lower().endswith(SUFFIXES)
            )
            if not found:
                raise UsageError(f"{arg}: no .yaml, .yml or .toml files in this directory")
            files += found
        elif path.is_file():
            files.append(arg)
        elif glob.has_magic(arg):
            found = sorted(f for f in glob.glob(arg, recursive=True) if f.lower().endswith(SUFFIXES))
            if not found:
                raise UsageError(f"{arg}: the pattern matches no recipe files")
            files += found
        else:
            raise UsageError(f"{arg}: no such file or directory")
    return list(dict.fromkeys(files))
