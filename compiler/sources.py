"""Data sources: where a recipe's records come from, read the same way by validate, plan and run.

A source is a local file, a glob of files, a directory written by `datasets.save_to_disk`, or a
Hugging Face hub dataset (`hf://org/name[@revision]` or a mapping with `hub:`). Hub and disk
sources load through `datasets`; a hub dataset is read from the local hub cache (a snapshot made by
`hf download --repo-type dataset org/name`) when it is there, else through `load_dataset` (which
downloads when online, or uses the `datasets` cache offline). `recipe plan` never downloads.

Every record comes with where it is (`file:line`, `hf://org/name[split] row N`) so a bad record is
reported at its place, and with the recipe's column mapping applied (`columns: {prompt: question}`).
"""

from __future__ import annotations

import glob as globmod
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..schemas.errors import RecipeError
from . import datacache, records

GLOB_CHARS = set("*?[")
HUB_PREFIX = "hf://"

# The fields each format reads (columns may map them to other column names)
FORMAT_FIELDS = {
    "chat": ("messages",),
    "sharegpt": ("conversations", "system"),
    "alpaca": ("instruction", "input", "output", "system"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
    "preference": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "template": (),  # any columns: the template names them
}
REQUIRED_FIELDS = {"chat": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output"),
                   "prompt_completion": ("prompt", "completion"), "text": ("text",),
                   "preference": ("chosen", "rejected"), "kto": ("prompt", "completion", "label")}


@dataclass(frozen=True)
class Source:
    kind: str  # file | glob | disk | hub
    location: str  # the path as written, or org/name
    display: str  # how messages name it
    format: str
    key: tuple  # where the recipe gives it, for located validate messages
    subset: Optional[str] = None
    split: Optional[str] = None
    revision: Optional[str] = None
    data_files: Any = None
    weight: Optional[float] = None
    max_examples: Optional[int] = None
    columns: tuple = ()  # ((field, column), ...)
    roles: tuple = ()  # ((source role, role), ...)
    mapping: bool = field(default=False, compare=False)  # given as a mapping (keys like columns are located under it)

    @property
    def local(self) -> bool:
        return self.kind in ("file", "glob")


def is_plain_file(value: Any) -> bool:
    """One local file named by a string: the case datasize and the original reader handle alone."""
    return isinstance(value, str) and not value.startswith(HUB_PREFIX) and not (GLOB_CHARS & set(value))


def listed(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


def parse(value: Any, default_format: str, key: str = "train") -> list[Source]:
    """The recipe's data.train / data.eval as sources (value: a string, a SourceSpec or a mapping, or a list)."""
    out = []
    many = isinstance(value, list)
    for i, item in enumerate(listed(value)):
        where = ("data", key, i) if many else ("data", key)
        out.append(_one(item, default_format, where))
    return out


def _get(item: Any, name: str, default=None):
    if isinstance(item, dict):
        return item.get(name, default)
    return getattr(item, name, default)


def _text(item: Any, name: str) -> str:
    """A string field of a raw source ("" when it is missing or of another type: the schema reports that)."""
    value = _get(item, name)
    return value if isinstance(value, str) else ""


def _mapping(item: Any, name: str) -> dict:
    value = _get(item, name)
    return {k: v for k, v in value.items() if isinstance(k, str)} if isinstance(value, dict) else {}


def _one(item: Any, default_format: str, where: tuple) -> Source:
    if isinstance(item, str):
        if item.startswith(HUB_PREFIX):
            name, _, revision = item[len(HUB_PREFIX):].partition("@")
            return Source("hub", name, item, default_format, where, revision=revision or None)
        kind = "glob" if GLOB_CHARS & set(item) else "file"
        return Source(kind, item, item, default_format, where)
    fmt = _get(item, "format") or default_format
    common = dict(format=fmt, key=where, subset=_get(item, "subset"), split=_get(item, "split"),
                  revision=_get(item, "revision"), data_files=_get(item, "data_files"), weight=_get(item, "weight"),
                  max_examples=_get(item, "max_examples"),
                  columns=tuple(sorted(_mapping(item, "columns").items())),
                  roles=tuple(sorted(_mapping(item, "roles").items())), mapping=True)
    if _text(item, "hub"):
        hub = _text(item, "hub")
        display = f"{HUB_PREFIX}{hub}" + (f"@{common['revision']}" if common["revision"] else "")
        return Source("hub", hub, display, **common)
    if _text(item, "disk"):
        disk = _text(item, "disk")
        return Source("disk", disk, disk, **common)
    path = _text(item, "path")
    return Source("glob" if GLOB_CHARS & set(path) else "file", path, path, **common)


def describe(sources: list[Source]) -> str:
    """One line naming the sources (a plan's data path)."""
    if len(sources) == 1:
        return sources[0].display
    return f"{len(sources)} sources: " + ", ".join(s.display for s in sources)


# ---- where records are: files, globs, save_to_disk directories, the hub cache


def files_of(source: Source, recipe_dir: Path) -> list[Path]:
    if source.kind == "file":
        return [recipe_dir / source.location]
    pattern = str(recipe_dir / source.location)
    found = sorted(Path(p) for p in globmod.glob(pattern, recursive=True) if Path(p).is_file())
    return [p for p in found if p.suffix.lower() in records.SUFFIXES]


def hf_home() -> Path:
    """Hugging Face's home folder: HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface."""
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser()


def hub_cache_dir() -> Path:
    """The hub cache huggingface_hub uses (HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, else hf_home()/hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    return hf_home() / "hub"


def hub_snapshot(source: Source, repo_type: str = "datasets",
                 revision: Optional[str] = None) -> tuple[Optional[Path], Optional[str]]:
    """(snapshot directory, commit) of a hub dataset (or model) in the local hub cache, or (None, None)."""
    org_name = source.location.replace("/", "--")
    repo = hub_cache_dir() / f"{repo_type}--{org_name}"
    revision = revision or source.revision or "main"
    ref = repo / "refs" / revision
    commit = None
    try:
        if ref.is_file():
            commit = ref.read_text(encoding="utf-8").strip()
        elif (repo / "snapshots" / revision).is_dir():
            commit = revision
    except OSError:
        return None, None
    if commit and (repo / "snapshots" / commit).is_dir():
        return repo / "snapshots" / commit, commit
    return None, None


def fingerprint(source: Source, recipe_dir: Path, sha256=datacache.file_sha256) -> Optional[str]:
    """What identifies the source's content, cheaply: a file's sha256, a glob's files' hashes, a
    saved dataset's state files, a hub dataset's commit. None when it cannot be found here. `sha256`: how
    a file is hashed (read now, or datacache.digest: remembered by its stat signature)."""

    if source.kind == "file":
        digest = sha256(recipe_dir / source.location)
        return f"sha256:{digest}" if digest else None
    if source.kind == "glob":
        files = files_of(source, recipe_dir)
        if not files:
            return None
        h = hashlib.sha256()
        for p in files:
            h.update(f"{p.relative_to(recipe_dir) if p.is_relative_to(recipe_dir) else p}:{sha256(p)}\n".encode())
        return f"files:{h.hexdigest()}"
    if source.kind == "disk":
        root = recipe_dir / source.location
        if not root.is_dir():
            return None
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                rel = str(p.relative_to(root))
                h.update(rel.encode())
                if p.suffix == ".json":
                    h.update(p.read_bytes())
                else:
                    st = p.stat()
                    h.update(f":{st.st_size}:{st.st_mtime_ns}".encode())
        return f"saved:{h.hexdigest()}"
    snapshot, commit = hub_snapshot(source)
    if commit:
        return f"revision:{commit}"
    return None


# ---- reading


@dataclass
class Opened:
    """A source ready to read: its rows with locations, how many there are (None: unknown until read)."""

    source: Source
    count: Optional[int]
    columns: Optional[list[str]]  # known up front for datasets; None for files
    rows: Any  # callable(indices=None) -> iterator of (display, word, number, row, error)


def _dataset_rows(source: Source, dataset, display: str):
    def rows(indices=None):
        picked = dataset if indices is None else dataset.select(indices)
        numbers = range(len(dataset)) if indices is None else indices
        for number, row in zip(numbers, picked):
            yield display, "row", number + 1, row, None
    return rows


def open_source(source: Source, recipe_dir: Path, allow_download: bool = True) -> Opened:
    """Open a source for reading. RecipeError (naming the source) when it cannot be."""
    if source.local:
        files = files_of(source, recipe_dir)
        if not files:
            if source.kind == "glob":
                raise RecipeError(f"{source.display}: no data file matches this pattern (relative to the recipe's "
                                  f"folder; {', '.join(records.SUFFIXES)})")
            records.check_file(recipe_dir / source.location, source.display)

        def rows(indices=None):
            for path in files:
                display = str(path.relative_to(recipe_dir)) if path.is_relative_to(recipe_dir) else str(path)
                display = source.display if source.kind == "file" else display
                word = records.where_word(path)
                for number, row, error in records.raw(path, display):
                    yield display, word, number, row, error
        return Opened(source, None, None, rows)
    dataset, display = load_dataset(source, recipe_dir, allow_download)
    return Opened(source, len(dataset), list(dataset.column_names), _dataset_rows(source, dataset, display))


def load_dataset(source: Source, recipe_dir: Path, allow_download: bool = True):
    """(datasets.Dataset of the source's split, display naming the split)."""
    try:
        import datasets
    except ImportError:
        raise RecipeError(f"{source.display}: reading hub and saved datasets needs the `datasets` package "
                          f"(pip install 'recipe-ft[train]')") from None
    datasets.disable_progress_bars()
    try:
        if source.kind == "disk":
            root = recipe_dir / source.location
            if not root.is_dir():
                raise RecipeError(f"{source.display}: no such directory (a folder written by datasets' save_to_disk, "
                                  f"relative to the recipe's folder)")
            try:
                loaded = datasets.load_from_disk(str(root))
            except FileNotFoundError:
                raise RecipeError(f"{source.display}: not a dataset saved with save_to_disk (no dataset_info.json "
                                  f"or dataset_dict.json)") from None
        else:
            loaded = _load_hub(datasets, source, allow_download)
    except RecipeError:
        raise
    except Exception as exc:  # datasets' own errors: say which source and what it said
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        configs = re.search(r"available configs: \[(.*?)\]", str(exc))
        if text.startswith("Config name is missing") and configs:
            raise RecipeError(f"{source.display}: it has several subsets ({configs.group(1).replace(chr(39), '')}); "
                              f"choose one with subset: NAME") from None
        raise RecipeError(f"{source.display}: cannot load it ({text})") from None
    return _split(loaded, source)


def _load_hub(datasets, source: Source, allow_download: bool):
    snapshot, _ = hub_snapshot(source)
    kwargs = dict(name=source.subset, data_files=source.data_files,
                  cache_dir=os.environ.get("HF_DATASETS_CACHE") or None)  # read now, not when datasets was imported
    if snapshot is not None:  # the hub repository as downloaded: datasets reads its layout and README configs
        return datasets.load_dataset(str(snapshot), **kwargs)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or \
        os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false")
    where = f"not in the local hub cache ({hub_cache_dir()})"
    if not allow_download and not offline:
        raise RecipeError(f"{source.display}: {where}; `recipe plan` does not download: fetch it with "
                          f"`hf download --repo-type dataset {source.location}` (or `recipe run`, which downloads), "
                          f"or declare data.examples and data.tokens_per_example")
    try:
        return datasets.load_dataset(source.location, revision=source.revision, **kwargs)
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = (f"this host is offline: download it where the hub is reachable with `hf download --repo-type "
                f"dataset {source.location}` and copy the cache here (or point HF_HUB_CACHE at it)") if offline else \
            "check the name (org/name) and your access to it"
        raise RecipeError(f"{source.display}: cannot load it: {where} and {text}; {hint}") from None


def _split(loaded, source: Source):
    from .suggest import did_you_mean

    if hasattr(loaded, "column_names") and not isinstance(loaded.column_names, dict):  # a Dataset
        if source.split and source.split != "train":
            raise RecipeError(f"{source.display}: holds one dataset, not splits; remove split: {source.split}")
        return loaded, source.display
    splits = list(loaded.keys())
    split = source.split or ("train" if "train" in splits or len(splits) != 1 else splits[0])
    if split not in splits:
        raise RecipeError(f"{source.display}: no split '{split}'{did_you_mean(split, splits)} (splits: "
                          f"{', '.join(splits)})")
    return loaded[split], f"{source.display}[{split}]"


# ---- column mapping


def check_columns(source: Source, columns: list[str]) -> Optional[str]:
    """The mapping's first column the source lacks (with 'did you mean'), or None."""
    from .suggest import did_you_mean

    for fld, column in source.columns:
        if column not in columns:
            return (f"no column '{column}' (mapped to {fld}){did_you_mean(column, columns)}; the columns are: "
                    f"{', '.join(columns)}")
    mapped = {f for f, _ in source.columns}
    for fld in REQUIRED_FIELDS.get(source.format, ()):
        if fld not in mapped and fld not in columns and not (source.format == "preference" and fld == "prompt"):
            found = did_you_mean(fld, columns)
            return (f"format '{source.format}' needs a '{fld}' column; the columns are: {', '.join(columns)}"
                    f"{found or ''} (map one with columns: {{{fld}: <column>}})")
    return None


def mapped(row: Any, source: Source) -> Any:
    """The row with the recipe's column mapping applied: format field <- source column."""
    if not source.columns or not isinstance(row, dict):
        return row
    out = dict(row)
    for fld, column in source.columns:
        if column not in row:
            from .suggest import did_you_mean

            raise ValueError(f"no column '{column}' (mapped to {fld}){did_you_mean(column, list(row))}")
        out[fld] = row[column]
    return out


def unknown_fields(source: Source) -> list[tuple[str, str]]:
    """Mapped field names the source's format does not read: (field, message)."""
    from .suggest import did_you_mean

    fields = FORMAT_FIELDS.get(source.format, ())
    if not fields:
        return []
    return [(f, f"format '{source.format}' has no field '{f}'{did_you_mean(f, fields)} (fields: {', '.join(fields)})")
            for f, _ in source.columns if f not in fields]

