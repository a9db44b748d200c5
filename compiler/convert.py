"""Check one training record of a data format and convert it to what trl trains on.

Pure Python (Jinja2 for templates, rendered in compiler/templates.py's sandbox): `recipe validate`,
`recipe plan` and `recipe run` all check records with this, so a record one accepts the others do too.
"""

from __future__ import annotations

from typing import Any, Optional

from ..schemas.errors import RecipeError

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"


def _text(row: dict, key: str, required: bool = True) -> Optional[str]:
    value = row.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing '{key}'")
        return None
    if not isinstance(value, str):
        raise ValueError(f"'{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"'{key}' is empty")
    return value


def _chat(row: dict) -> list[dict]:
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("expected 'messages': a non-empty list of {role, content}")
    from .pairs import checked_messages

    out = checked_messages(messages, "messages")
    if out[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's (it is what the model learns to say)")
    return out


class Converter:
    """One record of a format -> what trl trains on; ValueError says what is wrong with it."""

    def __init__(self, fmt: str, template=None, generation_markers: bool = True):
        self.fmt = fmt
        self.generation_markers = generation_markers
        self.templates = None
        if fmt == "template":  # sandboxed, with limits on ranges, sizes and time (compiler/templates.py)
            from .templates import compile_pair

            self.env, *pair = compile_pair(template.prompt, template.completion)
            self.templates = tuple(pair)

    @property
    def kind(self) -> str:
        if self.fmt == "chat":
            return "messages" if self.generation_markers else "conversational_prompt_completion"
        if self.fmt in ("preference", "kto"):
            return self.fmt
        return "text" if self.fmt == "text" else "prompt_completion"

    def __call__(self, row: Any) -> dict:
        if not isinstance(row, dict):
            raise ValueError(f"expected an object, got {type(row).__name__}")
        if self.fmt == "chat":
            messages = _chat(row)
            if self.generation_markers:
                return {"messages": messages}
            return {"prompt": messages[:-1], "completion": messages[-1:]}
        if self.fmt == "alpaca":
            instruction, output = _text(row, "instruction"), _text(row, "output")
            extra = _text(row, "input", required=False) or ""
            block = f"### Input:\n{extra}\n\n" if extra.strip() else ""
            return {"prompt": ALPACA_PROMPT.format(instruction=instruction, input_block=block), "completion": output}
        if self.fmt in ("preference", "kto"):
            from . import pairs

            return pairs.preference(row) if self.fmt == "preference" else pairs.kto(row)
        if self.fmt == "prompt_completion":
            return {"prompt": _text(row, "prompt"), "completion": _text(row, "completion")}
        if self.fmt == "text":
            return {"text": _text(row, "text")}
        from jinja2 import TemplateError
        from jinja2.exceptions import SecurityError

        from .templates import SECONDS_TOTAL, describe, render

        try:
            prompt, completion = (render(self.env, t, row) for t in self.templates)
        except SecurityError as exc:
            raise ValueError(f"template refused by the sandbox: {exc} (recipes are data: templates may not "
                             f"reach Python internals)") from None
        except TemplateError as exc:
            if self.env.clock.total > SECONDS_TOTAL:
                raise RecipeError(f"data.template: {describe(exc)}") from None
            raise ValueError(f"template: {describe(exc)}") from None
        if not completion.strip():
            raise ValueError("the completion template renders empty")
        return {"prompt": prompt, "completion": completion}
