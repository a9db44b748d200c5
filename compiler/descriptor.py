"""Architecture descriptors: what transformers builds from a config.json, as data (no torch here).

A descriptor is derived by runtime/describe.py (the config's model built on the meta device, its
modules walked). Catalog models' descriptors are checked in (data/descriptors.json, rewritten by
`python -m recipe_ft.runtime.describe --catalog`); a local model of a family the catalog does not
hold is described once by the runtime, through the deriver the CLI installs (`set_deriver`), and
cached on disk keyed by the config's hash (`cache_dir()`), so the next plan reads it in
milliseconds.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

from ..schemas.errors import UnsupportedArchitecture

DESCRIPTOR_VERSION = 2  # 2: a multimodal config is described as the text model `recipe run` loads
DESCRIPTORS_PATH = Path(__file__).parent / "data" / "descriptors.json"

# Keys that do not change what the model is made of (and that differ between copies of one model).
_IGNORED_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "use_cache",
                 "quantization_config", "auto_map")

Deriver = Callable[[dict, str], dict]
_deriver: Optional[Deriver] = None


def config_hash(cfg: dict) -> str:
    """sha256 of the config's architecture keys, canonical JSON."""
    kept = {k: v for k, v in cfg.items() if k not in _IGNORED_KEYS}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=1)
def catalog_descriptors() -> dict[str, dict]:
    """config hash -> descriptor, for the catalog's configs."""
    if not DESCRIPTORS_PATH.is_file():
        return {}
    with DESCRIPTORS_PATH.open(encoding="utf-8") as f:
        return json.load(f)["descriptors"]


def cache_dir() -> Path:
    """Where derived descriptors of uncatalogued models are kept: descriptors/ under the tool's cache
    folder (datacache.root: $RECIPE_CACHE_DIR, else $XDG_CACHE_HOME/recipe_ft, else ~/.cache/recipe_ft)."""
    from .datacache import root
    return root() / "descriptors"


def _cache_path(key: str) -> Path:
    return cache_dir() / f"{key}.json"


def cached(cfg: dict) -> dict | None:
    """A descriptor for `cfg`: the catalog's, else one derived before and cached on disk."""
    key = config_hash(cfg)
    found = catalog_descriptors().get(key)
    if found is not None:
        return found
    path = _cache_path(key)
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(desc, dict) or desc.get("descriptor_version") != DESCRIPTOR_VERSION \
            or desc.get("config_sha256") != key or not isinstance(desc.get("architecture"), dict):
        return None  # stale or foreign: derive again
    return desc


def store(desc: dict) -> Optional[Path]:
    """Keep a derived descriptor in the cache (atomically, through the data cache's writer); its path,
    or None when the cache folder cannot be written (the next plan derives it again)."""
    from .datacache import write_json

    path = _cache_path(desc["config_sha256"])
    return path if write_json(path, desc) else None


def set_deriver(fn: Optional[Deriver]) -> Optional[Deriver]:
    """Install the function that derives a descriptor and keeps it (`store`) where it can: the CLI installs
    one that also says what it did. Returns the old one."""
    global _deriver
    old, _deriver = _deriver, fn
    return old


INSTALL_HINT = "pip install 'recipe-ft[train]'"


def describe(cfg: dict, where: str) -> dict:
    """The descriptor of `cfg`: from the catalog or the cache, else derived (and kept in the cache) by
    the installed deriver; without one, an error that says what to install."""
    found = cached(cfg)
    if found is not None:
        return found
    family = cfg.get("model_type")
    if _deriver is None:
        raise UnsupportedArchitecture(
            f"{where}: model_type '{family}' is not in the model catalog, and describing it needs transformers "
            f"(the [train] extra: {INSTALL_HINT}); install it and plan again (the description is cached, "
            f"so later plans need no transformers), or pick a catalog model")
    return _deriver(cfg, where)
