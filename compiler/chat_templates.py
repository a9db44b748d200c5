"""Chat templates a recipe can name (`data.chat_template`), or a Jinja file of the user's.

`model` (the default) keeps the model's own template. The named ones follow the published formats of
those families; a file is read relative to the recipe. Templates are data: validate parses and test-
renders them in the limited sandbox (compiler/templates.py); the runtime sets them on the tokenizer,
whose renderer is jinja2's immutable sandbox too. None carries `{% generation %}` markers: the
runtime derives assistant-only masks by rendering (runtime/masks.py), so any template works.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError

_CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_QWEN = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}" + _CHATML
)
_LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
_GEMMA = (  # Gemma has no system role: a system message is put before the first user turn
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (ns.system if role == 'user' else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{% if role == 'user' %}{% set ns.system = '' %}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
_ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}"
    "{% else %}{{ '### ' + message['role'] | capitalize + ':\n' + message['content'] + '\n\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)

NAMED = {"chatml": _CHATML, "qwen": _QWEN, "llama3": _LLAMA3, "gemma": _GEMMA, "alpaca": _ALPACA}
MODEL = "model"
GENERATION_TAG = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")
FILE_SUFFIXES = (".jinja", ".j2", ".jinja2", ".txt")
SAMPLE = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
          {"role": "assistant", "content": "Goodbye."}]


def choices() -> list[str]:
    return [MODEL, *NAMED]


def is_file(value: str) -> bool:
    return value not in NAMED and value != MODEL and ("/" in value or Path(value).suffix.lower() in FILE_SUFFIXES)


def resolve(value: Optional[str], recipe_dir: Path) -> Optional[str]:
    """The template's Jinja text, or None for the model's own."""
    if value is None or value == MODEL:
        return None
    if value in NAMED:
        return NAMED[value]
    if not is_file(value):
        from .suggest import did_you_mean

        raise RecipeError(f"data.chat_template: unknown template '{value}'{did_you_mean(value, choices())} "
                          f"(known: {', '.join(choices())}; or a Jinja file such as templates/chat.jinja)")
    path = recipe_dir / value
    if path.exists() and not path.is_file():  # a directory, or a named pipe that reading would wait on
        raise RecipeError(f"data.chat_template: {value} is not a regular file; give a Jinja file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM is not template text
    except FileNotFoundError:
        raise RecipeError(f"data.chat_template: no such file {value} (relative to the recipe's folder)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"data.chat_template: cannot read {value} ({exc})") from None
    if not text.strip():
        raise RecipeError(f"data.chat_template: {value} is empty")
    return text


def problem(text: str) -> Optional[str]:
    """Why a chat template cannot be used: a syntax error, or an error rendering a sample conversation
    in the limited sandbox; None when it renders."""
    from jinja2 import TemplateError

    from .templates import describe, environment, render

    env = environment()

    def raise_exception(message):
        from jinja2 import TemplateError as Raised

        raise Raised(message)

    env.globals["raise_exception"] = raise_exception
    text = GENERATION_TAG.sub("", text)  # transformers' markers; rendering ignores them
    try:
        template = env.from_string(text)
    except TemplateError as exc:
        return f"template syntax error: {describe(exc)}"
    try:
        out = render(env, template, {"messages": SAMPLE, "add_generation_prompt": False, "bos_token": "<s>",
                                     "eos_token": "</s>", "tools": None})
    except TemplateError as exc:
        return f"rendering a sample conversation: {describe(exc)}"
    if "Goodbye." not in out:
        return "rendering a sample conversation leaves out the assistant's reply"
    return None
