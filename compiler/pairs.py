"""Preference records: check them and turn them into what trl's DPOTrainer / KTOTrainer train on.

- preference: {"prompt", "chosen", "rejected"}, each side a string, or message lists:
  `prompt` a list of {role, content} and `chosen` / `rejected` the assistant's reply as a string or a
  list of assistant messages; or, without `prompt`, `chosen` and `rejected` as whole conversations
  that share every turn but the last (that shared part is the prompt).
- kto: {"prompt", "completion", "label"}: `label` true for a desirable completion, false for an
  undesirable one (CSV: true/false/1/0); prompt and completion as strings or message lists.

A malformed record raises ValueError with what is wrong; runtime.data reports it as file:line.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant", "tool")
LABELS = {True: True, False: False, 1: True, 0: False, "true": True, "false": False, "1": True, "0": False}


def _messages(value: Any, key: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{key}' must be a non-empty string or a non-empty list of {{role, content}}")
    return checked_messages(value, key)


def checked_messages(value: list, key: str) -> list[dict]:
    """Each item of a message list as {role, content}; ValueError naming `key[i]` otherwise."""
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise ValueError(f"{key}[{i}] must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise ValueError(f"{key}[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"{key}[{i}].content must be a string")
        out.append({"role": role, "content": content})
    return out


def _side(row: dict, key: str) -> Any:
    """One side (prompt, chosen, rejected, completion) as a string or a message list; never empty."""
    value = row.get(key)
    if value is None:
        raise ValueError(f"missing '{key}'")
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"'{key}' is empty")
        return value
    messages = _messages(value, key)
    if not any(m["content"].strip() for m in messages):
        raise ValueError(f"'{key}' is empty (every message's content is blank)")
    return messages


def _reply(value: Any, key: str) -> list[dict]:
    """A reply to a conversational prompt, as trl wants it: a list of assistant messages."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if any(m["role"] != "assistant" for m in value):
        raise ValueError(f"'{key}' must hold only the assistant's reply (the prompt goes in 'prompt')")
    return value


def _text(side: Any) -> str:
    return side if isinstance(side, str) else "\n".join(m["content"] for m in side)


def preference(row: dict) -> dict:
    """{prompt, chosen, rejected} in trl's format (strings, or conversational lists)."""
    if "prompt" not in row:
        return _implicit(row)
    prompt, chosen, rejected = _side(row, "prompt"), _side(row, "chosen"), _side(row, "rejected")
    if isinstance(prompt, list):
        if prompt[-1]["role"] == "assistant":
            raise ValueError("the prompt's last message is the assistant's; the reply goes in 'chosen' / 'rejected'")
        chosen, rejected = _reply(chosen, "chosen"), _reply(rejected, "rejected")
    elif isinstance(chosen, list) or isinstance(rejected, list):
        raise ValueError("'prompt' is a string but 'chosen' / 'rejected' are message lists: use one form for all "
                         "three")
    if _text(chosen).strip() == _text(rejected).strip():
        raise ValueError("'chosen' and 'rejected' are identical: the pair teaches nothing")
    if isinstance(prompt, str) and all(side.lstrip().startswith(prompt.strip()) for side in (chosen, rejected)):
        raise ValueError("'chosen' and 'rejected' both repeat the prompt: give only the replies (the prompt is put "
                         "before each of them in training)")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _implicit(row: dict) -> dict:
    """Whole conversations in chosen and rejected: the shared turns are the prompt."""
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not isinstance(chosen, list) or not isinstance(rejected, list):
        raise ValueError("missing 'prompt' (or give 'chosen' and 'rejected' as whole conversations)")
    chosen, rejected = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    for key, conv in (("chosen", chosen), ("rejected", rejected)):
        if conv[-1]["role"] != "assistant":
            raise ValueError(f"the last message of '{key}' must be the assistant's")
        if len(conv) < 2:
            raise ValueError(f"'{key}' has no prompt before the assistant's reply")
    if chosen[:-1] != rejected[:-1]:
        first = next(i for i, (a, b) in enumerate(zip(chosen[:-1] + [None], rejected[:-1] + [None])) if a != b)
        raise ValueError(f"mismatched prompts: 'chosen' and 'rejected' differ at message {first}, before the "
                         f"final reply (a pair must answer the same prompt)")
    if not chosen[-1]["content"].strip() or not rejected[-1]["content"].strip():
        side = "chosen" if not chosen[-1]["content"].strip() else "rejected"
        raise ValueError(f"'{side}' is empty (the assistant's reply is blank)")
    if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
        raise ValueError("'chosen' and 'rejected' are identical: the pair teaches nothing")
    return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}


def kto(row: dict) -> dict:
    """{prompt, completion, label} in trl's format."""
    prompt, completion = _side(row, "prompt"), _side(row, "completion")
    label = row.get("label")
    key = label.strip().lower() if isinstance(label, str) else label
    if isinstance(key, float) and key in (0.0, 1.0):
        key = int(key)
    if key not in LABELS or (isinstance(label, (int, float)) and not isinstance(label, bool) and label not in (0, 1)):
        raise ValueError(f"'label' must be true (desirable) or false (undesirable), got {label!r}")
    if isinstance(prompt, list):
        completion = _reply(completion, "completion")
    elif isinstance(completion, list):
        raise ValueError("'prompt' is a string but 'completion' is a message list: use one form for both")
    return {"prompt": prompt, "completion": completion, "label": LABELS[key]}


def same_form(row: dict, form):
    """The record's form ("conversational" or "plain"); ValueError when it is not `form`, the first
    record's (trl, and Arrow under it, cannot hold string and message-list prompts in one data set)."""
    mine = "conversational" if isinstance(row.get("prompt"), list) else "plain"
    if form is not None and mine != form:
        shape = {"conversational": "message lists", "plain": "strings"}
        raise ValueError(f"this record is {mine} ({shape[mine]}) but the file's first records are {form} "
                         f"({shape[form]}): use one form for every record of a file")
    return mine


def kind(fmt: str, row: dict) -> str:
    conversational = isinstance(row.get("prompt"), list)
    return ("conversational_" if conversational else "") + fmt


def check_kto_balance(rows: list[dict], display: str) -> None:
    """KTO needs desirable and undesirable examples both."""
    from ..schemas.errors import RecipeError

    labels = {r["label"] for r in rows}
    if len(labels) < 2:
        which = "desirable (label true)" if True in labels else "undesirable (label false)"
        raise RecipeError(f"{display}: every record is {which}; KTO needs both kinds")
