"""`recipe demo`: a quickstart that runs anywhere, on a CPU, with nothing downloaded.

It writes a tiny Llama-architecture model (random weights), a byte-level BPE tokenizer trained on
the demo data with a chat template that marks assistant turns with `{% generation %}`, a synthetic
support-ticket data set (train and eval, chat format), and a recipe that trains a LoRA on them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

LABELS = {
    "billing": ["I was charged twice this month", "my invoice total is wrong", "please refund my last payment",
                "the card payment failed but money left my account", "I need a receipt for my order"],
    "bug": ["the app crashes when I export", "the page stays blank after login", "search returns nothing",
            "sync fails with an error", "the button does nothing when clicked"],
    "account": ["I cannot log in", "how do I reset my password", "please delete my account",
                "I want to change my email address", "two factor codes are rejected"],
    "shipping": ["my parcel has not arrived", "the box arrived damaged", "tracking number does not work",
                 "can you ship abroad", "I received the wrong item"],
}
OPENERS = ["Hi,", "Hello,", "Good morning,", "Hey team,", "Dear support,", ""]
CLOSERS = ["Thanks.", "Please help.", "Regards.", "Any idea?", "", "Cheers."]
SYSTEM = "Classify the support ticket. Answer with one word: billing, bug, account or shipping."

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|assistant|>\n{% generation %}{{ message['content'] }}<|end|>\n{% endgeneration %}"
    "{% else %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

RECIPE = """\
# recipe run {dir}/recipe.yaml
# A LoRA on a tiny Llama-architecture model, trained on a CPU in a few minutes (made by `recipe demo`).
name: quickstart
task: classification
model:
  base: tiny-llama
data:
  train: data/train.jsonl
  eval: data/eval.jsonl
  format: chat
method:
  name: lora
  rank: 16
  alpha: 32
  dropout: 0.0
training:
  epochs: {epochs}
  max_seq_len: 96
  batch_size: 8
  micro_batch_size: 8
  learning_rate: 3.0e-3
  lr_scheduler: constant_with_warmup
  warmup_ratio: 0.05
  precision: fp32
  optimizer: adamw
  logging_steps: 5
  seed: 7
budget:
  gpu: L4
eval:
  metric: exact_match
output:
  dir: runs/quickstart
"""


def tickets(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(LABELS))
        text = " ".join(p for p in (rng.choice(OPENERS), rng.choice(LABELS[label]) + ".", rng.choice(CLOSERS)) if p)
        rows.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text},
                                  {"role": "assistant", "content": label}]})
    return rows


def _tokenizer(texts: list[str], out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=512, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|end|>",
                                   pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))


def _model(vocab: int, out: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(str(out))


DEMO_FILES = ("recipe.yaml", "data/train.jsonl", "data/eval.jsonl", "tiny-llama/")  # what `make` writes (outdir checks them before)


def make(directory: Path, train_examples: int = 320, eval_examples: int = 40, epochs: int = 3,
         seed: int = 7, force: bool = False) -> Path:
    """Write the demo into `directory`; returns the recipe's path. Files the demo did not write, or
    that were edited since, are not overwritten unless `force`."""
    from .outdir import check_demo_dir, mark_demo

    directory = Path(directory)
    check_demo_dir(directory, DEMO_FILES, force)
    recipe = _make(directory, train_examples, eval_examples, epochs, seed)
    written = [directory / f for f in DEMO_FILES if not f.endswith("/")]
    written += [p for f in DEMO_FILES if f.endswith("/") for p in (directory / f).rglob("*") if p.is_file()]
    mark_demo(directory, [p for p in written if p.is_file()])
    return recipe


def _make(directory: Path, train_examples: int, eval_examples: int, epochs: int, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    data.mkdir(exist_ok=True)
    train, held = tickets(train_examples, seed), tickets(eval_examples, seed + 1)
    for name, rows in (("train", train), ("eval", held)):
        with (data / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    texts = [m["content"] for r in train for m in r["messages"]]
    model_dir = directory / "tiny-llama"
    _tokenizer(texts, model_dir)
    from transformers import AutoTokenizer

    _model(len(AutoTokenizer.from_pretrained(str(model_dir))), model_dir, seed)
    recipe = directory / "recipe.yaml"
    recipe.write_text(RECIPE.format(dir=directory, epochs=epochs))
    return recipe
