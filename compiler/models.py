"""Resolve `model.base` to an architecture: a catalog name, or a local directory with config.json."""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from . import descriptor
from .architecture import SUPPORTED_FAMILIES, Architecture, from_config, from_descriptor
from ..schemas.errors import ModelNotFound, UnsupportedArchitecture

CATALOG_PATH = Path(__file__).parent / "data" / "models.json"


@dataclass(frozen=True)
class ResolvedModel:
    name: str  # hub id for catalog models, the directory for local ones
    source: str  # "catalog" | "local"
    path: Path | None  # the local directory, None for catalog models
    architecture: Architecture
    published_params: int | None
    config: dict = field(default_factory=dict, compare=False, repr=False)  # the config.json fields
    # what the plan must say about the model as loaded (a multimodal checkpoint loaded as its text model)
    note: str | None = None


@functools.lru_cache(maxsize=1)
def _catalog() -> dict:
    with CATALOG_PATH.open(encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, dict]:
    """Lower-cased hub id and aliases -> catalog entry."""
    _catalog_hashes()  # hashed before any entry is handed out
    index: dict[str, dict] = {}
    for entry in _catalog()["models"]:
        for key in (entry["name"], *entry.get("aliases", ())):
            index[key.lower()] = entry
    return index


@functools.lru_cache(maxsize=1)
def _catalog_hashes() -> dict[str, str]:
    """Hub id -> the config's hash, taken when the catalog is read (callers may edit what they are given)."""
    return {entry["name"]: descriptor.config_hash(entry["config"]) for entry in _catalog()["models"]}


def catalog_configs() -> list[tuple[str, dict]]:
    """(hub id, config) of every catalog model, in catalog order (runtime/describe.py derives from these)."""
    return [(entry["name"], copy.deepcopy(entry["config"])) for entry in _catalog()["models"]]


def catalog_version() -> str:
    return _catalog()["catalog_version"]


def catalog_entry(base: str) -> dict | None:
    """The raw catalog entry for a hub id or alias (case-insensitive), or None."""
    return _index().get(base.strip().lower())


def resolve_model(base: str, recipe_dir: Path) -> ResolvedModel:
    """Look `base` up in the catalog, else as a directory (absolute or relative to recipe_dir)."""
    entry = catalog_entry(base)
    if entry is not None:
        where = f"model catalog entry '{entry['name']}' ({CATALOG_PATH})"
        desc = descriptor.catalog_descriptors().get(_catalog_hashes()[entry["name"]])
        if desc is None:
            raise UnsupportedArchitecture(f"{where}: no architecture descriptor in {descriptor.DESCRIPTORS_PATH}; "
                                          "run `python -m recipe_ft.runtime.describe --catalog`")
        arch = from_descriptor(desc, where)
        return ResolvedModel(entry["name"], "catalog", None, arch, entry.get("published_params"),
                             copy.deepcopy(entry["config"]), _catalog_note(entry, arch))

    path = Path(base).expanduser()
    if not path.is_absolute():
        path = Path(recipe_dir) / path
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        return _resolve_local(path)
    raise ModelNotFound(_not_found_message(base, path))


def _resolve_local(directory: Path) -> ResolvedModel:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise ModelNotFound(
            f"model.base points at the directory {directory}, but it holds no config.json. "
            "Point model.base at the model's directory (the one with config.json and the weights), "
            "or copy the model's config.json into it."
        )
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotFound(
            f"{config_path}: cannot read it as JSON ({exc}). "
            "Replace it with the model's original config.json."
        ) from None
    if not isinstance(cfg, dict):
        raise ModelNotFound(f"{config_path}: expected a JSON object; replace it with the model's original config.json.")
    arch = local_architecture(cfg, str(config_path))
    return ResolvedModel(str(directory.resolve()), "local", directory.resolve(), arch, None, cfg,
                         _multimodal_note(cfg, arch, config_path))


def _catalog_note(entry: dict, arch: Architecture) -> str | None:
    """What the plan says about a catalog model as loaded: a multimodal checkpoint's text model (the entry's
    `multimodal` facts), then the entry's own `plan_note` (e.g. where its config came from)."""
    mm = entry.get("multimodal")
    note = _text_model_note(entry["name"], mm["model_type"], arch.layout.model_class, LOADED_BY[mm["loaded_by"]],
                           mm.get("vision_tower")) if mm else None
    return ". ".join(n for n in (note, entry.get("plan_note")) if n) or None


def _multimodal_note(cfg: dict, arch: Architecture, config_path: Path) -> str | None:
    """A local checkpoint with a vision_config that `recipe run` loads as its text model alone
    (runtime/text_model.py: Qwen3.5, which transformers' AutoModelForCausalLM builds text-only; Gemma 3 and
    other vision-language models, whose text_config's causal LM is loaded with the checkpoint's language-model
    weights). The descriptor is of that same text model."""
    model_class = arch.layout.model_class if arch.layout is not None else ""
    if "vision_config" not in cfg or not model_class.endswith("ForCausalLM"):
        return None
    how = "text_config" if "text_config" in cfg and cfg.get("model_type") != arch.family else "auto"
    return _text_model_note(str(config_path), cfg.get("model_type"), model_class, LOADED_BY[how])


# how runtime/text_model.py loads a multimodal checkpoint's text model (a catalog entry's multimodal.loaded_by)
LOADED_BY = {"auto": "transformers' AutoModelForCausalLM",
             "text_config": "built from the checkpoint's text_config, with its language-model weights"}


def _text_model_note(where: str, model_type: str, model_class: str, loaded_by: str,
                    vision_tower: str | None = None) -> str:
    """The plan's warning for a multimodal checkpoint trained as its text model (catalog and local alike)."""
    from ..schemas.plan import MULTIMODAL_NOTE  # here: `recipe validate` does not build the plan's models

    tower = f"the vision tower ({vision_tower})" if vision_tower else "the vision tower"
    return (f"{where} {MULTIMODAL_NOTE} ('{model_type}'): `recipe run` loads its text model "
            f"({model_class}, {loaded_by}); {tower} is not loaded, trained or counted, and the adapter is for "
            f"text only")


def local_architecture(cfg: dict, where: str) -> Architecture:
    """A local config's architecture: the catalog's descriptor when the config is a catalog model's;
    for the families normalised by hand (`SUPPORTED_FAMILIES`, checked against transformers by the
    tests), from the config alone; for any other family, a descriptor derived by transformers
    (cached on disk after the first time, see compiler/descriptor.py)."""
    known = descriptor.catalog_descriptors().get(descriptor.config_hash(cfg))
    if known is not None:
        return from_descriptor(known, where)
    family = cfg.get("model_type")
    if not family or family in SUPPORTED_FAMILIES:
        return from_config(cfg, where)
    if not isinstance(family, str):
        raise UnsupportedArchitecture(f"{where}: field 'model_type' must be a string, got {family!r}; fix config.json")
    return from_descriptor(descriptor.describe(cfg, where), where)


def _suggestions(base: str) -> list[str]:
    """Up to five catalog hub ids closest to `base` (by hub id, alias, or the part after 'org/')."""
    import difflib  # only for an unknown model

    query = base.strip().lower()
    queries = {query, query.split("/")[-1]}
    scores: dict[str, float] = {}
    for key, entry in _index().items():
        for candidate in (key, key.split("/")[-1]):
            for q in queries:
                ratio = difflib.SequenceMatcher(None, q, candidate).ratio()
                ratio += 0.5 if candidate.startswith(q) else 0.0  # "mistral-7b" -> "mistral-7b-v0.1"
                scores[entry["name"]] = max(scores.get(entry["name"], 0.0), ratio)
    ranked = sorted((name for name, score in scores.items() if score >= 0.6), key=lambda n: -scores[n])
    return ranked[:5]


def _not_found_message(base: str, looked_at: Path) -> str:
    close = _suggestions(base)[:3]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
    where = "" if Path(base).is_absolute() else " (relative to the recipe file)"
    return (
        f"'{base}' is not in the model catalog and is not a directory{where}{hint} "
        "For another model, set model.base to a local directory that holds its config.json "
        "(the planner reads the architecture from it; nothing is downloaded)."
    )
