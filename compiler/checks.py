"""Checks beyond the schema: catalog names, data files, templates.

They run on the raw document so that they report alongside schema errors, all at once; each check
looks only at values of the right type and leaves type errors to the schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..schemas.errors import Problem, RecipeError
from .load import Document
from .suggest import close

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def semantic_problems(doc: Document, base_dir: Optional[Path]) -> list[Problem]:
    from .validate import located  # local: validate imports this module

    out: list[Problem] = []

    def err(path: tuple, message: str, value: bool = True, severity: str = "error") -> None:
        out.append(located(doc, path, message, value=value, severity=severity))

    data = doc.data
    _check_gpus(_get(data, "budget"), err)
    _check_data(_get(data, "data"), base_dir, err)
    _check_model(_get(data, "model"), _get(data, "training"), base_dir, err)
    _check_economics(_get(data, "economics"), err)
    _check_eval(data if isinstance(data, dict) else {}, base_dir, err)
    return out


def _get(data: Any, key: str) -> dict:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _gpu_problem(name: str, custom: set[str]) -> Optional[str]:
    from .catalogs import find_gpu, gpu_names

    if name in custom or find_gpu(name) is not None:
        return None
    names = gpu_names()
    found = close(name, names + sorted(custom), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(f) for f in found)}?" if found else ""
    return (f"unknown GPU '{name}'{hint} (known: {', '.join(names)}; "
            f"or describe it under budget.custom_gpus)")


def _gpu_name(name: str, custom: set[str]) -> str:
    """A GPU's catalog name ('h100' -> 'H100-80GB'); a custom GPU's or an unknown one's as written."""
    from .catalogs import find_gpu

    found = None if name in custom else find_gpu(name)
    return found.name if found is not None else name


def _check_gpus(budget: dict, err) -> None:
    custom = {g.get("name") for g in budget.get("custom_gpus") or [] if isinstance(g, dict)}
    custom = {c for c in custom if isinstance(c, str)}
    gpus = budget.get("gpus")
    if isinstance(gpus, list):
        for i, name in enumerate(gpus):
            if isinstance(name, str) and name and (msg := _gpu_problem(name, custom)):
                err(("budget", "gpus", i), msg)
    gpu = budget.get("gpu")
    if isinstance(gpu, str) and gpu and (msg := _gpu_problem(gpu, custom)):
        err(("budget", "gpu"), msg)
    elif isinstance(gpu, str) and gpu and isinstance(gpus, list) and gpus:
        names = {_gpu_name(g, custom) for g in gpus if isinstance(g, str)}
        if _gpu_name(gpu, custom) not in names:
            err(("budget", "gpu"), f"gpu '{gpu}' is not among the candidates in budget.gpus; pin one of them or "
                                   f"drop budget.gpus", value=False)
    prices = budget.get("prices")
    if isinstance(prices, dict):
        for name in prices:
            if isinstance(name, str) and (msg := _gpu_problem(name, custom)):
                err(("budget", "prices", name), msg, value=False)
    provider = budget.get("provider")
    if isinstance(provider, str) and provider:
        from .catalogs import prices

        known = sorted({p.provider.lower() for p in prices()})
        if provider.lower() not in known:
            found = close(provider, known, n=1)
            hint = f"; did you mean '{found[0]}'?" if found else ""
            err(("budget", "provider"), f"no prices for provider '{provider}'{hint} "
                                        f"(known: {', '.join(known)}; or give budget.prices)")


def _check_data(data: dict, base_dir: Optional[Path], err) -> None:
    from . import source_checks
    from .sources import is_plain_file

    source_checks.check_chat_template(data, base_dir, err)
    source_checks.check_settings(data, err)
    source_checks.check_overlap(data, base_dir, err)
    for key in ("train", "eval"):
        value = data.get(key)
        if value and not is_plain_file(value):  # lists, globs, mappings, hub and saved datasets
            source_checks.check_sources(data, key, base_dir, err)
            continue
        if not isinstance(value, str) or not value:
            continue
        path = Path(value)
        if path.suffix.lower() not in DATA_SUFFIXES:
            err(("data", key), f"'{value}' is not a data file this tool reads "
                               f"(expected {', '.join(DATA_SUFFIXES)})")
            continue
        if base_dir is not None and not (base_dir / path).exists():
            if key == "train" and not data.get("examples"):  # a plan would size nothing: 0 examples, 0 steps
                err(("data", key), f"file not found: {value} (relative to the recipe's folder); `recipe plan` "
                                   f"sizes the run from it: fix the path, or declare data.examples (and "
                                   f"data.tokens_per_example) to plan without it")
                continue
            declared = "data.examples and data.tokens_per_example" if key == "train" else "eval_fraction"
            err(("data", key), f"file not found: {value} (relative to the recipe's folder); plans fall "
                               f"back to {declared}, `recipe run` needs it", severity="warning")
        elif base_dir is not None:
            _check_records(data, key, base_dir / path, err)
    template = data.get("template")
    if isinstance(template, dict):
        for key in ("prompt", "completion"):
            source = template.get(key)
            if isinstance(source, str):
                message = template_syntax_error(source)
                if message:
                    err(("data", "template", key), message)


SAMPLE_RECORDS = 1000  # records `recipe validate` reads (plan and run read them all)


def record_error(row: Any, error, convert):
    """What is wrong with one record as `recipe run` would read it (the reader's parse error first,
    then the shape, then the format's check), or None."""
    if error is None and not isinstance(row, dict):
        from .load import type_name

        error = f"expected an object, got {type_name(row)}"
    if error is None and convert is not None:
        try:
            convert(row)
        except ValueError as exc:
            error = str(exc)
    return error


def record_check(fmt: Any):
    """The check `recipe run` applies to each record of a format (not templates: rendered apart), or
    None (compiler/convert.py, the same check `recipe run` applies)."""
    if fmt not in ("chat", "sharegpt", "alpaca", "prompt_completion", "text", "preference", "kto"):
        return None
    from .convert import Converter

    return Converter(fmt)
SAMPLE_RENDERS = 5  # records it renders through data.template


def _check_records(data: dict, key: str, path: Path, err) -> None:
    """The first records, read as `plan` and `run` read them; the first few rendered by the template."""
    from . import records

    display = data[key]
    skip = data.get("on_error") == "skip"
    template = data.get("template")
    renders = None
    if data.get("format") == "template" and isinstance(template, dict) and all(
            isinstance(template.get(k), str) and not template_syntax_error(template[k]) for k in ("prompt", "completion")):
        from .templates import compile_pair  # jinja2: imported only for template recipes

        renders = compile_pair(template["prompt"], template["completion"])
    convert = record_check(data.get("format", "chat"))
    declared = key == "train" and bool(data.get("examples")) and bool(data.get("tokens_per_example"))
    bad, good, rendered, whole = [], 0, 0, True
    try:
        for n, (lineno, row, error) in enumerate(records.raw(path, display)):
            if n >= SAMPLE_RECORDS:
                whole = False
                break
            error = record_error(row, error, convert)
            if error is None and renders is not None and rendered < SAMPLE_RENDERS:
                rendered += 1
                from jinja2 import TemplateError

                from .templates import describe, render

                env, prompt, completion = renders
                for part, t in (("prompt", prompt), ("completion", completion)):
                    try:
                        if not render(env, t, row).strip() and part == "completion":
                            error = "the completion template renders empty"  # `recipe run` refuses it
                    except TemplateError as exc:
                        where = f"{display}:{lineno}" if records.where_word(path) == "line" else \
                            f"{display} {records.where_word(path)} {lineno}"
                        err(("data", "template", part), f"rendering {where}: {describe(exc)}")
                        error = "template"
                        break
            if error is None:
                good += 1
            elif error != "template":
                bad.append((lineno, error))
    except RecipeError as exc:
        err(("data", key), exc.message)
        return
    if bad:
        word = records.where_word(path)
        shown = "; ".join(f"{display}:{n}: {m}" if word == "line" else f"{display} {word} {n}: {m}"
                           for n, m in bad[:3]) \
            + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        # a warning where `recipe plan` would not fail: records skipped, or a stand-in file with declared sizes
        # plan (unless sizes are declared) and run refuse a file with no usable record
        none_usable = whole and not good and renders is None and not declared
        err(("data", key), f"{len(bad)} bad record(s) in the first {SAMPLE_RECORDS}: {shown}"
                           + ("; no usable record is left" if none_usable and skip else
                              "; data.on_error: skip leaves them out" if skip else
                              " (set data.on_error: skip to leave them out)")
                           + ("; plans use the declared sizes, `recipe run` refuses them" if declared and not skip else ""),
            severity="warning" if (skip or declared) and not none_usable else "error")
    elif not good and renders is None:
        err(("data", key), f"{display}: no records")


def template_syntax_error(source: str) -> Optional[str]:
    """The syntax error of a Jinja2 template, parsed in a sandbox; None when it parses."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    try:
        ImmutableSandboxedEnvironment().parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error on template line {exc.lineno}: {exc.message}"
    return None


def _check_model(model: dict, training: dict, base_dir: Optional[Path], err) -> None:
    """The model must resolve as `plan` resolves it (an error, as plan fails on it); a max_seq_len past
    the model's context (max_position_embeddings) is warned about."""
    base = model.get("base")
    if not isinstance(base, str) or not base:
        return
    from .models import resolve_model

    try:
        resolved = resolve_model(base, base_dir or Path.cwd())
    except RecipeError as exc:
        err(("model", "base"), exc.message.replace("\n", " "))
        return
    context = resolved.config.get("max_position_embeddings")
    length = training.get("max_seq_len")
    if isinstance(context, int) and not isinstance(context, bool) and isinstance(length, int) and length > context:
        err(("training", "max_seq_len"), f"max_seq_len {length:,} is past the model's context of {context:,} "
                                         f"tokens (max_position_embeddings): positions beyond it were never "
                                         f"trained; lower it to {context:,} or less", severity="warning")
    adapter = model.get("adapter")
    if isinstance(adapter, str) and adapter and base_dir is not None:
        if not (base_dir / adapter / "adapter_config.json").is_file():
            err(("model", "adapter"), f"no PEFT adapter at {adapter} (no adapter_config.json, relative to the "
                                      f"recipe's folder); `recipe run` needs it", severity="warning")


def _check_economics(economics: dict, err) -> None:
    name = economics.get("api_model")
    if not isinstance(name, str) or not name:
        return
    if economics.get("input_usd_per_mtok") is not None and economics.get("output_usd_per_mtok") is not None:
        return
    from .catalogs import api_prices, find_api_model

    if find_api_model(name) is None:
        found = close(name, list(api_prices()), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(f) for f in found)}?" if found else ""
        err(("economics", "api_model"), f"no price for API model '{name}'{hint} (give "
                                        f"economics.input_usd_per_mtok and output_usd_per_mtok)")


def _check_eval(data: dict, base_dir: Optional[Path], err) -> None:
    """eval.json_schema: a JSON object in a file `recipe run` reads after loading the model, read by the
    json_fields metric only."""
    import json

    from ..schemas.recipe import default_metric

    name = _get(data, "eval").get("json_schema")
    if not isinstance(name, str) or not name or base_dir is None:
        return
    where = ("eval", "json_schema")
    metric = _get(data, "eval").get("metric")
    task = data.get("task")
    if metric is None and isinstance(task, str):
        try:
            metric = default_metric(task)
        except KeyError:
            metric = None
    if isinstance(metric, str) and metric != "json_fields":
        err(where, f"only the json_fields metric uses it (eval.metric is {metric}): set eval.metric: json_fields "
                   f"or remove it", severity="warning")
    path = base_dir / name
    if not path.exists():
        err(where, f"file not found: {name} (relative to the recipe's folder); `recipe run` needs it",
            severity="warning")
        return
    if not path.is_file():
        err(where, f"{name} is not a regular file; give a JSON Schema file")
        return
    try:
        schema = json.loads(path.read_text(encoding="utf-8-sig"))  # as runtime/evaluate.py reads it
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        what = getattr(exc, "strerror", None) or (f"invalid JSON: {exc}" if isinstance(exc, ValueError) else str(exc))
        err(where, f"{name} is not a JSON Schema ({what}); fix the file")
        return
    if not isinstance(schema, (dict, bool)):
        err(where, f"{name} is not a JSON Schema (a schema is a JSON object, this is a {type(schema).__name__}); "
                   f"fix the file")
