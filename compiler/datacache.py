"""An on-disk cache for data measurements, keyed by what they depend on.

Two kinds of entries, both small JSON files under the cache folder (RECIPE_CACHE_DIR, else
$XDG_CACHE_HOME/recipe_ft, else ~/.cache/recipe_ft; RECIPE_NO_CACHE=1 turns it off; derived model
descriptors live beside them, compiler/descriptor.py):

* digests/: a file's sha256, remembered with its stat signature (size, mtime, ctime, inode, as git's
  index does). A file whose signature is unchanged is not read again; any write to it changes its
  ctime, so an edit is seen even when the size and mtime are kept. The plan lock's staleness check
  (compiler/lock.py) always hashes the file itself.
* measure/: a measurement (records counted, sampled lengths), keyed by the data file's sha256, the
  tokenizer file's sha256 and every recipe setting that changes it. A different file or tokenizer is
  a different key, so stale entries are never read (and cost a few hundred bytes each). Hub and
  saved datasets' sampled sizes (compiler/source_size.py) and clean checks (compiler/source_checks.py)
  are entries here too, keyed by the source's fingerprint.

A cache that cannot be read or written is ignored: the measurement is made again, never refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

BLOCK = 1 << 22


def root() -> Path:
    """The one cache folder of the tool (data measurements, sampled source sizes, checked sources,
    derived model descriptors): RECIPE_CACHE_DIR, else $XDG_CACHE_HOME/recipe_ft, else ~/.cache/recipe_ft."""
    if os.environ.get("RECIPE_CACHE_DIR"):
        return Path(os.environ["RECIPE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recipe_ft"


def folder() -> Optional[Path]:
    if os.environ.get("RECIPE_NO_CACHE"):
        return None
    return root()


def _signature(path: Path) -> Optional[list]:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _read(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict) -> bool:
    """Atomic: a reader sees the old entry or the new one, never half of one. A folder that cannot be
    written is no error (the entry is computed again next time): returns whether it was written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        import tempfile  # only when writing: a plan that finds its measurements cached imports less

        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        return False
    return True


def _digest_entry(path: Path) -> Optional[Path]:
    root = folder()
    if root is None:
        return None
    return root / "digests" / (hashlib.sha256(str(path.resolve()).encode()).hexdigest() + ".json")


_memo: dict = {}  # (path, signature) -> sha256 in this process (also when the disk cache is off)


def known_digest(path: Path) -> Optional[str]:
    """The sha256 remembered for the file as it is now (same stat signature), or None."""
    signature = _signature(path)
    if signature is None:
        return None
    found = _memo.get((str(path.resolve()), tuple(signature)))
    if found is not None:
        return found
    entry = _digest_entry(path)
    data = _read(entry) if entry is not None else None
    if data and data.get("signature") == signature and isinstance(data.get("sha256"), str):
        _memo[(str(path.resolve()), tuple(signature))] = data["sha256"]
        return data["sha256"]
    return None


def remember_digest(path: Path, digest: str, signature: Optional[list]) -> None:
    """Remember `digest` for the file, under the signature taken before it was read (a file written to
    while it was hashed gets a new ctime, so the entry does not match it afterwards)."""
    if signature is None or signature != _signature(path):
        return
    _memo[(str(path.resolve()), tuple(signature))] = digest
    entry = _digest_entry(path)
    if entry is not None:
        write_json(entry, {"path": str(path.resolve()), "signature": signature, "sha256": digest})


def digest(path: Path) -> Optional[str]:
    """The file's sha256: remembered when its signature is unchanged, else read (streaming, in blocks of
    4 MiB: constant memory) and remembered. None when it is not a file."""
    if not path.is_file():
        return None
    found = known_digest(path)
    if found is not None:
        return found
    signature = _signature(path)
    found = file_sha256(path)
    remember_digest(path, found, signature)
    return found


def file_sha256(path: Path) -> Optional[str]:
    """The file's sha256, read now (streaming, in blocks of 4 MiB: constant memory); None when it is not a
    file. `digest` is the same value, remembered by the file's stat signature."""
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def key(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def get(name: str) -> Optional[dict]:
    root = folder()
    return None if root is None else _read(root / "measure" / f"{name}.json")


def put(name: str, data: dict) -> None:
    root = folder()
    if root is not None:
        write_json(root / "measure" / f"{name}.json", data)
