"""Check one training record of a data format and convert it to what trl trains on.

Pure Python (Jinja2 for templates, rendered in compiler/templates.py's sandbox): `recipe validate`,
`recipe plan` and `recipe run` all check records with this, so a record one accepts the others do too.
"""

from __future__ import annotations

from typing import Any, Optional

from ..schemas.errors import RecipeError

ALPACA_PROMPT = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"  # the `alpaca` chat template's shape
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "system": "system", "tool": "tool", "observation": "tool", "function_call": "assistant"}
CONVERSATIONAL = ("chat", "sharegpt", "alpaca")  # formats that become a conversation, rendered by the chat template


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


def _sharegpt(row: dict, roles: dict) -> list[dict]:
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError("expected 'conversations': a non-empty list of {from, value}")
    out = []
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        out.append({"role": "system", "content": system})
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"conversations[{i}] must be an object with from and value")
        who, value = turn.get("from"), turn.get("value")
        if who not in roles:
            known = ", ".join(sorted(roles))
            raise ValueError(f"conversations[{i}].from is {who!r}; expected one of {known} (or map it: "
                             f"roles: {{{who}: assistant}})")
        if not isinstance(value, str):
            raise ValueError(f"conversations[{i}].value must be a string")
        out.append({"role": roles[who], "content": value})
    return out


def _with_system(messages: list[dict], system_prompt: Optional[str]) -> list[dict]:
    if system_prompt and not any(m["role"] == "system" for m in messages):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


class Converter:
    """One record of a format -> what trl trains on; ValueError says what is wrong with it.

    chat, sharegpt and alpaca records become conversations ({"messages"}) that the chat template
    renders; `system_prompt` is added to those that have no system message."""

    def __init__(self, fmt: str, template=None, generation_markers: bool = True, system_prompt: Optional[str] = None,
                 roles: Optional[dict] = None):
        self.fmt = fmt
        self.generation_markers = generation_markers
        self.system_prompt = system_prompt
        self.roles = {**SHAREGPT_ROLES, **(roles or {})}
        self.templates = None
        self.form: Optional[str] = None  # preference / kto: the first good record's form, which the others keep
        if fmt == "template":  # sandboxed, with limits on ranges, sizes and time (compiler/templates.py)
            from .templates import compile_pair

            self.env, *pair = compile_pair(template.prompt, template.completion)
            self.templates = tuple(pair)

    @property
    def kind(self) -> str:
        if self.fmt in CONVERSATIONAL:
            return "messages" if self.generation_markers else "conversational_prompt_completion"
        if self.fmt in ("preference", "kto"):
            return self.fmt
        return "text" if self.fmt == "text" else "prompt_completion"

    def _messages(self, row: dict) -> list[dict]:
        if self.fmt == "chat":
            return _chat(row)
        if self.fmt == "sharegpt":
            messages = _sharegpt(row, self.roles)
            from .pairs import checked_messages

            checked_messages(messages, "conversations")
            if messages[-1]["role"] != "assistant":
                raise ValueError("the last turn must be the assistant's (gpt): it is what the model learns to say")
            return messages
        instruction, output = _text(row, "instruction"), _text(row, "output")
        extra = _text(row, "input", required=False) or ""
        system = _text(row, "system", required=False)
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        head = [{"role": "system", "content": system}] if system and system.strip() else []
        return [*head, {"role": "user", "content": user}, {"role": "assistant", "content": output}]

    def __call__(self, row: Any) -> dict:
        if not isinstance(row, dict):
            raise ValueError(f"expected an object, got {type(row).__name__}")
        if self.fmt in CONVERSATIONAL:
            messages = _with_system(self._messages(row), self.system_prompt)
            if self.generation_markers:
                return {"messages": messages}
            return {"prompt": messages[:-1], "completion": messages[-1:]}
        if self.fmt in ("preference", "kto"):
            from . import pairs

            out = pairs.preference(row) if self.fmt == "preference" else pairs.kto(row)
            self.form = pairs.same_form(out, self.form)
            if self.system_prompt and isinstance(out["prompt"], list):
                out["prompt"] = _with_system(out["prompt"], self.system_prompt)
            return out
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
