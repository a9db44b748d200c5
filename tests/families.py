"""The families the planner knows through derived descriptors (transformers on the meta device) rather
than the hand normaliser, with their tiny test configs under tests/data/configs/<family>/."""

import json
from pathlib import Path

CONFIGS = Path(__file__).parent / "data" / "configs"

# model_type -> tests/data/configs/<dir>: each built from the family's published config, sizes shrunk
DERIVED_FAMILIES = ("qwen3", "qwen3_moe", "qwen3_5_text", "qwen3_5_moe_text", "gemma3_text", "gpt_oss", "smollm3",
                    "olmo2", "olmo3", "granite")


def tiny_config(family: str) -> dict:
    return json.loads((CONFIGS / family / "config.json").read_text(encoding="utf-8"))


def derived_architecture(cfg: dict, where: str = "test config"):
    """The planner's architecture for `cfg` as `recipe plan` gets it for a local directory: the catalog's
    descriptor, the hand normaliser (older families), or a descriptor derived by transformers."""
    from recipe_ft.compiler import descriptor
    from recipe_ft.compiler.models import local_architecture
    from recipe_ft.runtime.describe import describe

    def derive_and_keep(cfg: dict, where: str) -> dict:
        desc = describe(cfg, where)
        descriptor.store(desc)
        return desc

    old = descriptor.set_deriver(derive_and_keep)
    try:
        return local_architecture(cfg, where)
    finally:
        descriptor.set_deriver(old)
