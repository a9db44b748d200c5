"""The recipe's JSON Schema, as checked in at schemas/recipe.schema.json."""

from __future__ import annotations

import json
from pathlib import Path

from .recipe import Recipe

SCHEMA_FILE = Path(__file__).with_name("recipe.schema.json")


def recipe_schema() -> dict:
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def recipe_schema_text() -> str:
    return json.dumps(recipe_schema(), indent=2, sort_keys=True) + "\n"
