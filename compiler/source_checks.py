"""`recipe validate`'s checks of data sources, chat templates and the mixture, located in the recipe.

What can be known before a run is reported here: a glob that matches nothing, a saved dataset or a
hub dataset that is not there (a warning when `recipe run` could still download it), a split or a
column that does not exist (with "did you mean"), a column mapping naming a field the format does
not read, formats that cannot be mixed, and bad records among the first ones of each source.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from ..schemas.errors import RecipeError
from . import chat_templates, datacache, mixture, sources
from .convert import CONVERSATIONAL, Converter
from .suggest import did_you_mean

SAMPLE_RECORDS = 1000
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _offline() -> bool:
    return any(os.environ.get(v, "0") not in ("0", "", "false") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def check_chat_template(data: dict, base_dir: Optional[Path], err) -> None:
    value = data.get("chat_template")
    if not isinstance(value, str) or not value:
        return
    if not chat_templates.is_file(value) and value not in chat_templates.choices():
        err(("data", "chat_template"), f"unknown chat template '{value}'{did_you_mean(value, chat_templates.choices())} "
                                       f"(known: {', '.join(chat_templates.choices())}; or a Jinja file such as "
                                       f"templates/chat.jinja)")
        return
    if base_dir is None:
        return
    try:
        text = chat_templates.resolve(value, base_dir)
    except RecipeError as exc:
        err(("data", "chat_template"), exc.message.removeprefix("data.chat_template: "))
        return
    if text is not None and (problem := chat_templates.problem(text)):
        err(("data", "chat_template"), f"{value}: {problem}")


def _formats(data: dict) -> set:
    fmt = data.get("format", "chat")
    found = {fmt} if isinstance(fmt, str) else set()  # the schema reports another type
    for key in ("train", "eval"):
        for item in sources.listed(data.get(key)):
            if isinstance(item, dict) and isinstance(item.get("format"), str):
                found.add(item["format"])
    return found


def check_settings(data: dict, err) -> None:
    if isinstance(data.get("system_prompt"), str):
        plain = sorted(f for f in _formats(data) if f not in (*CONVERSATIONAL, "preference", "kto"))
        if plain and len(plain) == len(_formats(data)):
            err(("data", "system_prompt"), f"data.system_prompt is added to conversations; format '{plain[0]}' has "
                                           f"none, so it is not used", severity="warning")


def _valid_item(item: Any) -> bool:
    if isinstance(item, str):
        return bool(item)
    if not isinstance(item, dict):
        return False
    given = [k for k in ("path", "disk", "hub") if isinstance(item.get(k), str) and item.get(k)]
    return len(given) == 1


def check_sources(data: dict, key: str, base_dir: Optional[Path], err) -> None:
    """The sources of data.train / data.eval that are not one plain file (checks.py handles that)."""
    items = sources.listed(data.get(key))
    fmt = data.get("format", "chat")
    if not items or not isinstance(fmt, str) or fmt not in sources.FORMAT_FIELDS:
        return

    def usable(item) -> bool:  # the schema reports malformed sources
        return _valid_item(item) and not (isinstance(item, dict) and (
            item.get("format") not in (None, *sources.FORMAT_FIELDS)
            or not isinstance(item.get("columns", {}), dict) or not isinstance(item.get("roles", {}), dict)
            or not all(v in ("system", "user", "assistant", "tool") for v in (item.get("roles") or {}).values())
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in (item.get("columns") or {}).items())))

    listed = [s for s, item in zip(sources.parse(data.get(key), fmt, key), items) if usable(item)]
    if not listed:
        return
    for s in listed:
        for fld, message in sources.unknown_fields(s):
            err((*s.key, "columns", fld), message, value=False)
        if s.kind == "hub" and not s.mapping and not HUB_NAME.fullmatch(s.location):  # `hub:` keys: the schema
            err(s.key + (("hub",) if s.mapping else ()), f"{s.display}: not a hub dataset name; expected "
                                                         f"hf://org/name or hf://org/name@revision")
    for s in listed:
        if s.roles and s.format != "sharegpt":
            err((*s.key, "roles"), f"roles maps sharegpt role names; format '{s.format}' does not read it: "
                                   f"remove it", value=False, severity="warning")
    if len(items) == 1 and listed[0].weight is not None:
        err((*listed[0].key, "weight"), "a weight shares a mixture between sources; with one source it has no "
                                        "effect", severity="warning")
    clash = mixture.check_kinds(listed)
    if clash:
        err(clash[0].key, clash[1])
        return
    if base_dir is None:
        return
    template = data.get("template")
    system = data.get("system_prompt") if isinstance(data.get("system_prompt"), str) else None
    for s in listed:
        if s.kind != "hub" or HUB_NAME.fullmatch(s.location):
            _check_source(s, data, base_dir, template, system, err)


def _check_source(s: sources.Source, data: dict, base_dir: Path, template: Any, system: Optional[str], err) -> None:
    where = s.key + (("path",) if s.mapping and s.local else ("disk",) if s.mapping and s.kind == "disk" else
                     ("hub",) if s.mapping else ())
    if s.kind == "file" and not (base_dir / s.location).exists():
        if s.key[1] == "train" and not (data.get("examples") and data.get("tokens_per_example")):
            err(where, f"file not found: {s.location} (relative to the recipe's folder); `recipe plan` sizes the "
                       f"mixture from its files: fix the path, or declare data.examples and "
                       f"data.tokens_per_example to plan without them")
            return
        err(where, f"file not found: {s.location} (relative to the recipe's folder); plans fall back to declared "
                   f"sizes, `recipe run` needs it", severity="warning")
        return
    if s.kind == "hub" and sources.hub_snapshot(s)[0] is None:
        if _offline():
            err(where, f"{s.display}: not in the local hub cache ({sources.hub_cache_dir()}) and this host is offline "
                       f"(HF_HUB_OFFLINE): download it where the hub is reachable with `hf download --repo-type "
                       f"dataset {s.location}`" + ("; plans use data.examples, `recipe run` needs it" if data.get("examples")
                                                   else ""),
                severity="warning" if _datasets_cached(s) or data.get("examples") else "error")
        else:
            err(where, f"{s.display}: not in the local hub cache ({sources.hub_cache_dir()}); `recipe run` downloads "
                       f"it, `recipe plan` needs it cached or data.examples and data.tokens_per_example",
                severity="warning")
        return
    spec = None
    if template is not None and isinstance(template, dict) and all(isinstance(template.get(k), str)
                                                                   for k in ("prompt", "completion")):
        from ..schemas.recipe import TemplateSpec

        spec = TemplateSpec(prompt=template["prompt"], completion=template["completion"])
    if s.format == "template" and spec is None:
        return

    def converter(source):
        return Converter(source.format, spec, True, system, dict(source.roles))

    checked = _checked_key(s, base_dir, data, system)
    if checked is not None and datacache.get(checked) is not None:  # this very content passed these checks before
        return
    try:
        part = mixture.read_source(s, base_dir, converter, "skip", limit=SAMPLE_RECORDS, allow_download=False)
    except RecipeError as exc:
        message = exc.message
        sub = ()
        if "no split" in message and s.mapping:
            sub = ("split",)
        elif "no column" in message or "needs a '" in message:
            column = next((f for f, c in s.columns if f"'{c}'" in message), None)
            sub = ("columns", column) if column else ()
        severity = "error"
        if "no usable records (all in the first" in message and data.get("on_error") == "skip":
            # only a sample was read: later records may be usable (a source read whole is refused by plan and run)
            severity = "warning"
        err(s.key + sub if sub else where, message, value=not sub or sub[0] != "columns", severity=severity)
        return
    if part.problems:
        skip = data.get("on_error") == "skip"
        shown = "; ".join(f"{w}: {m}" for w, m in part.problems[:3]) + \
            (f"; and {len(part.problems) - 3} more" if len(part.problems) > 3 else "")
        err(where, f"{len(part.problems)} bad record(s) in the first {part.read}: {shown}"
                   + ("; data.on_error: skip leaves them out" if skip else " (set data.on_error: skip to leave them out)"),
            severity="warning" if skip else "error")
    elif checked is not None:
        datacache.put(checked, {"clean": True})


def _checked_key(s: sources.Source, base_dir: Path, data: dict, system: Optional[str]) -> Optional[str]:
    """The name under which a clean check of a hub or saved dataset is remembered in the tool's cache
    (datacache), by its fingerprint and the settings the check used (a changed dataset, format,
    mapping or template is checked again)."""
    if s.kind not in ("hub", "disk"):
        return None  # files are read directly (their checks are cheap)
    fp = sources.fingerprint(s, base_dir)
    if fp is None:
        return None
    return datacache.key(kind="source-check", v=1, fp=fp, source=[s.format, s.columns, s.roles, s.split, s.subset,
                                                                s.data_files, s.max_examples],
                         template=data.get("template"), system=system)


def _datasets_cached(s: sources.Source) -> bool:
    """Whether the `datasets` cache holds a prepared copy (load_dataset uses it offline)."""
    root = Path(os.environ["HF_DATASETS_CACHE"]).expanduser() if os.environ.get("HF_DATASETS_CACHE") else \
        sources.hf_home() / "datasets"
    org, _, name = s.location.partition("/")
    return Path(root, f"{org}___{name}").is_dir()


def check_overlap(data: dict, base_dir: Optional[Path], err) -> None:
    """A local file read by two training sources (its examples count twice; with data.eval_fraction the
    held-out examples of one are trained on through the other), or by data.train and data.eval."""
    fmt = data.get("format", "chat")
    if base_dir is None or not isinstance(fmt, str):
        return
    seen: dict = {}  # resolved file -> (key, source)
    for key in ("train", "eval"):
        for s in sources.parse(data.get(key), fmt, key):
            if not s.local or not s.location:
                continue
            for path in sources.files_of(s, base_dir):
                if not path.is_file():
                    continue
                first = seen.setdefault(path.resolve(), (key, s))
                if first[1] is s:
                    continue
                name = path.relative_to(base_dir) if path.is_relative_to(base_dir) else path
                if first[0] == "eval" or key == "eval":
                    message = (f"{name} is in data.train ({first[1].display}) and data.eval: the held-out "
                               f"scores are of examples the model trained on")
                else:
                    message = (f"{name} is read by {first[1].display} too: its examples count twice" +
                               ("; data.eval_fraction's held-out examples of one are trained on through the other"
                                if data.get("eval_fraction") else "") + " (use weight to repeat a source)")
                err(s.key + (("path",) if s.mapping else ()), message, severity="warning")
                break
