"""recipe: a declarative compiler and runner for LoRA-family fine-tuning of open LLMs.

The import package ``recipe_ft`` is assembled from the repository's folders (pyproject.toml,
[tool.setuptools] package-dir):

    recipe_ft            src/recipe_ft/  this file (the version) and ``python -m recipe_ft``
    recipe_ft.schemas    schemas/        pydantic models of a recipe and a plan (pydantic + stdlib only)
    recipe_ft.compiler   compiler/       recipe -> plan, pure functions; catalogs in compiler/data/
    recipe_ft.runtime    runtime/        executes plans; every torch / transformers / peft import
    recipe_ft.cli        cli/            the ``recipe`` command (argparse)

Dependencies point one way: compiler and runtime import schemas; the runtime may import the
compiler; nothing imports the cli.
"""

__version__ = "0.1.0"
