"""`recipe demo`: a quickstart that runs anywhere, on a CPU, with nothing downloaded.

It writes a tiny Llama-architecture model (random weights), a byte-level BPE tokenizer trained on
the demo data with a chat template that marks assistant turns with `{% generation %}`, a synthetic
support-ticket data set (train and eval, chat format: the held-out tickets use wording and items
the training tickets never have), and a recipe that trains a LoRA on them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Two disjoint halves of the ticket space. A ticket is a frame (label-neutral wording) around a topic
# (what is wrong: it decides the label) about an item, between an opener and a closer. The training
# set is written from TRAIN's frames, topics, items, openers and closers; the held-out set from
# HELD_OUT's, none of which the training set contains. The held-out topics reuse the domain's words
# (charged, refund, crash, password, parcel...) in new sentences, so the score after tuning measures
# generalisation to new wording, not recall of training rows.
TRAIN = {
    "frames": ["{topic} for {item}", "I have a problem with {item}: {topic}", "about {item}: {topic}",
               "{topic}, this is for {item}", "since yesterday {topic} ({item})", "can you help? {topic} with {item}"],
    "topics": {
        "billing": ["I was charged twice", "you charged the wrong amount", "I want a refund", "the refund is missing",
                    "the invoice is wrong", "please send the invoice again", "the card payment failed",
                    "I need a receipt"],
        "bug": ["the app crashes", "the app crashes on start", "the page stays blank", "export fails with an error",
                "search returns an error", "the button does nothing", "sync fails", "the screen freezes"],
        "account": ["I cannot log in", "how do I reset my password", "my password is not accepted",
                    "please delete my account", "I want to change my email address", "two factor codes are rejected",
                    "my account is locked", "I cannot change my username"],
        "shipping": ["my parcel has not arrived", "the parcel is late", "the box arrived damaged",
                     "the tracking number does not work", "can you ship abroad", "I received the wrong item",
                     "the delivery is late", "the courier lost my parcel"],
    },
    "items": ["order 1042", "the Pro plan", "my headphones", "the desk lamp", "invoice 88", "my phone case",
              "the yearly subscription", "order 2210"],
    "openers": ["Hi,", "Hello,", "Good morning,", ""],
    "closers": ["Thanks.", "Please help.", "Regards.", ""],
}
HELD_OUT = {
    "frames": ["writing about {item} because {topic}", "urgent, {topic} regarding {item}",
               "{item} again: {topic}, what should I do", "{topic} on {item}, and nobody answered yet"],
    "topics": {
        "billing": ["my card was charged again", "my refund never came", "the invoice total looks too high",
                    "no receipt was sent after payment"],
        "bug": ["the app keeps crashing", "exporting stops halfway with an error", "a blank page shows after login",
                "search freezes every time"],
        "account": ["I forgot my password", "the login code is rejected", "please close my account",
                    "the email on my account is out of date"],
        "shipping": ["the delivery never arrived", "tracking shows nothing for my parcel", "the box came crushed",
                     "a wrong item was shipped to me"],
    },
    "items": ["order 5317", "the Family plan", "my smartwatch", "the office chair", "the monthly bundle",
              "invoice 604"],
    "openers": ["Good evening,", "Dear support,", "Hey team,"],
    "closers": ["Cheers.", "Any idea?", "Kind regards."],
}
LABELS = sorted(TRAIN["topics"])
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


def tickets(n: int, seed: int, space: dict = TRAIN) -> list[dict]:
    """n tickets drawn from one half of the ticket space (TRAIN or HELD_OUT)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(LABELS)
        topic = rng.choice(space["topics"][label])
        body = rng.choice(space["frames"]).format(topic=topic, item=rng.choice(space["items"])) + "."
        text = " ".join(p for p in (rng.choice(space["openers"]), body, rng.choice(space["closers"])) if p)
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
    return write_guarded(Path(directory), DEMO_FILES, force,
                         lambda d: _make(d, train_examples, eval_examples, epochs, seed))


def write_guarded(directory: Path, files: tuple, force: bool, write) -> Path:
    """Run `write(directory)` (it writes `files`; a trailing / is a folder) unless that would overwrite
    files a demo did not write or that were edited since (then refused, unless `force`); mark what
    was written so the next demo can tell."""
    from .outdir import check_demo_dir, mark_demo

    check_demo_dir(directory, files, force)
    recipe = write(directory)
    written = [directory / f for f in files if not f.endswith("/")]
    written += [p for f in files if f.endswith("/") for p in (directory / f).rglob("*") if p.is_file()]
    mark_demo(directory, [p for p in written if p.is_file()])
    return recipe


def _make(directory: Path, train_examples: int, eval_examples: int, epochs: int, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    data.mkdir(exist_ok=True)
    train, held = tickets(train_examples, seed, TRAIN), tickets(eval_examples, seed + 1, HELD_OUT)
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
