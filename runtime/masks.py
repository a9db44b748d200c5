"""Conversations -> token ids and labels, with the loss on the assistant's turns only (or on all).

The masks are derived by rendering, so they are right for any chat template, with or without
`{% generation %}` markers: for each assistant turn k, the text before it is the rendering of
turns [0, k) with the generation prompt, and the turn ends where the rendering of turns [0, k] ends;
a token is trained on when its first character falls in such a span (the reply and the template's
end-of-turn text). A template whose earlier renderings are not prefixes of the whole conversation
(one that rewrites earlier turns) cannot be masked this way: that is an error naming the fix.
"""

from __future__ import annotations

from ..schemas.errors import RecipeError

IGNORE = -100


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    full = _render(tokenizer, messages, False)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:k], True) if k else ""
        start = len(before)
        upto = _render(tokenizer, messages[: k + 1], False)
        if not full.startswith(before) or not full.startswith(upto) or len(upto) < start:
            raise RecipeError("the chat template renders earlier turns differently once later turns are added, so "
                              "the assistant's turns cannot be located for assistant-only loss: use a template that "
                              "renders turns in order (data.chat_template: chatml, llama3, ...) or set "
                              "data.train_on_inputs: true")
        spans.append((start, len(upto)))
    return full, spans


def tokenize(tokenizer, messages: list[dict], train_on_inputs: bool) -> dict:
    """{"input_ids", "labels"} for one conversation."""
    if train_on_inputs:
        ids = list(tokenizer(_render(tokenizer, messages, False), add_special_tokens=False)["input_ids"])
        return {"input_ids": ids, "labels": list(ids)}
    full, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = []
    for token, (begin, end) in zip(ids, enc["offset_mapping"]):
        inside = any(s <= begin < e for s, e in spans) if end > begin else False
        labels.append(token if inside else IGNORE)
    return {"input_ids": ids, "labels": labels}


def tokenize_rows(tokenizer, rows: list[dict], train_on_inputs: bool) -> list[dict]:
    if not train_on_inputs and not getattr(tokenizer, "is_fast", False):
        raise RecipeError("deriving assistant-only masks needs a fast tokenizer (tokenizer.json with character "
                          "offsets); set data.train_on_inputs: true to train on every token")
    return [tokenize(tokenizer, r["messages"], train_on_inputs) for r in rows]
