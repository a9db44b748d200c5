"""Plans on disk: `recipe plan -o plan.json` writes a versioned lock file; readers check it is fresh."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import ValidationError

from ..schemas.plan import PLAN_SCHEMA_VERSION, Plan
from . import catalogs, datacache, models
from ..schemas.errors import RecipeError, UsageError

MAX_PLAN_BYTES = 64 << 20  # a plan file is tens of kilobytes; a bigger file is not one


def check_target(path: Path) -> None:
    """UsageError unless `path` can take a plan file: it ends in .json (`recipe run` tells plans from
    recipes by it) and is new or a plan file already; nothing else the user made is overwritten."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"-o {path}: is a directory; give a file name, e.g. -o {path / 'plan.json'}")
    if path.suffix.lower() != ".json":
        raise UsageError(f"-o {path}: plan files end in .json (`recipe run` tells a plan from a recipe by it); "
                         f"e.g. -o {path.with_suffix('.json').name}")
    if (path.exists() or path.is_symlink()) and not _is_plan_file(path):
        raise UsageError(f"-o {path}: the file exists and is not a plan file written by `recipe plan -o`; nothing "
                         f"is overwritten: give -o another path")
    check_can_create(path)


def check_can_create(path: Path) -> None:
    """UsageError unless `-o path` can be created: the first of its folders that exists is a writable
    directory (the missing ones below it are made)."""
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        why = "not a directory" if not parent.is_dir() else "not writable"
        raise UsageError(f"-o {path}: cannot write there ({parent} is {why}); give -o a path in a directory you "
                         f"can write")


def _is_plan_file(path: Path) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > MAX_PLAN_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "schema_version" in data and isinstance(data.get("lock"), dict)


def write(plan: Plan, path: Path) -> None:
    """Write atomically: a reader never sees half a plan, a failed write leaves the old one. The
    recipe's path is stored relative to the plan file, so the two can move together. Only a new file
    or an earlier plan file is replaced (check_target); a path that cannot be written is a UsageError."""
    path = Path(path)
    check_target(path)
    directory = path.resolve().parent
    recipe = os.path.relpath(Path(plan.lock.recipe_path).resolve(), directory)
    plan = seal(plan.model_copy(update={"lock": plan.lock.model_copy(update={"recipe_path": recipe})}))
    text = plan.model_dump_json(indent=2) + "\n"
    import tempfile  # only `-o` writes: `recipe plan` alone does not need it

    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise UsageError(f"-o {path}: cannot write there ({exc.strerror}); give -o a path in a "
                         f"directory you can write") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise UsageError(f"-o {path}: cannot write there ({exc.strerror}); nothing was written") from None
        raise


def content_sha256(data: dict) -> str:
    """sha256 of a plan's JSON without its lock, in a canonical form (key order and spacing do not count)."""
    rest = {k: v for k, v in data.items() if k != "lock"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal(plan: Plan) -> Plan:
    """The plan with the sha256 of its content in its lock, which `recipe run` checks (edited)."""
    digest = content_sha256(json.loads(plan.model_dump_json()))
    return plan.model_copy(update={"lock": plan.lock.model_copy(update={"plan_sha256": digest})})


def edited(path: Path) -> bool:
    """The plan file's content differs from what `recipe plan -o` wrote (the sha256 in its lock); a plan
    written before the lock held that sha256 cannot tell, and is not called edited."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        stored = data["lock"].get("plan_sha256")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return False  # read() says what is wrong with the file
    return stored is not None and stored != content_sha256(data)


def read(path: Path) -> Plan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecipeError(f"{path}: not a plan file ({exc})") from None
    version = str(data.get("schema_version", "")) if isinstance(data, dict) else ""
    if version.split(".")[0] != PLAN_SCHEMA_VERSION.split(".")[0]:
        raise RecipeError(f"{path}: plan schema version {version or 'missing'}; this recipe reads "
                          f"{PLAN_SCHEMA_VERSION.split('.')[0]}.x. Re-create it with `recipe plan -o`")
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RecipeError(f"{path}: not a valid plan ({where}: {first['msg']}); re-create it with "
                          f"`recipe plan -o`") from None
    recipe = Path(path).resolve().parent / plan.lock.recipe_path  # stored relative to the plan file
    return plan.model_copy(update={"lock": plan.lock.model_copy(update={"recipe_path": str(recipe)})})


def staleness(plan: Plan) -> list[str]:
    """Why the plan no longer matches its recipe, data or catalogs; empty when it is fresh."""
    lock = plan.lock
    recipe_path = Path(lock.recipe_path)
    reasons = []
    try:
        digest = hashlib.sha256(recipe_path.read_bytes()).hexdigest()
        if digest != lock.recipe_sha256:
            reasons.append(f"the recipe {lock.recipe_path} changed since the plan was made")
    except OSError:
        reasons.append(f"the recipe {lock.recipe_path} is gone")
    recipe_dir = recipe_path.resolve().parent
    from .source_size import stale  # files by sha256, hub and saved datasets by their fingerprint

    reasons += stale(plan.recipe, recipe_dir, lock.data_sha256)
    for name, digest in lock.model_sha256.items():
        if datacache.file_sha256(recipe_dir / name) != digest:  # recipe_dir / an absolute path is that path
            reasons.append(f"the model file {name} changed since the plan was made")
    now = {**catalogs.catalog_versions(), "models.json": models.catalog_version()}
    changed = sorted(k for k, v in lock.catalogs.items() if now.get(k) != v)
    if changed:
        reasons.append(f"the catalogs changed ({', '.join(changed)})")
    reasons += _calibration_change(plan, recipe_dir)
    return reasons


def _calibration_change(plan: Plan, recipe_dir: Path) -> list[str]:
    """The project's speed calibration (`recipe calibrate`) the plan's hours used, against today's."""
    from . import calibration

    try:
        found = calibration.find(recipe_dir)
    except RecipeError as exc:
        return [f"the speed calibration cannot be read ({exc.message})"]
    now = found.factor(plan.hardware.gpu) if found else 1.0
    if abs(now - plan.time.calibration_factor) > 1e-9:
        return [f"the speed calibration for {plan.hardware.gpu} changed since the plan was made "
                f"(x {plan.time.calibration_factor:.3g} then, x {now:.3g} now)"]
    return []
