"""`recipe demo preference`: preference tuning (DPO with LoRA) that runs on a CPU in about a minute.

It writes the quickstart's tiny Llama-architecture model and tokenizer, a preference data set built
from the demo's support tickets (the correct one-word category preferred over an unhelpful terse
reply, a wrong category or a rambling non-answer), and a recipe whose run shows held-out preference
accuracy rising from the base.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .demo import DEMO_FILES, HELD_OUT, LABELS, SYSTEM, TRAIN, _model, _tokenizer, tickets, write_guarded

RAMBLING = ["Thanks for reaching out! It is hard to say what this is about without more details, so it "
            "could be {a} or perhaps {b}.",
            "Well, there are many possible categories here and I would not want to guess; maybe {a}?"]
UNHELPFUL = ["ok", "no", "?", "idk", "n/a", "maybe"]
SHARES = (("unhelpful", 0.5), ("wrong", 0.3), ("rambling", 0.2))

RECIPE = """\
# recipe run {dir}/recipe.yaml
# DPO with a LoRA on a tiny Llama-architecture model, on a CPU in about a minute (made by `recipe demo preference`).
# The reference is the base with the adapter disabled: no second copy of the model.
name: preference
task: preference
model:
  base: tiny-llama
data:
  train: data/train.jsonl
  eval: data/eval.jsonl
  format: preference
method:
  name: lora
  rank: 16
  alpha: 32
  dropout: 0.0
training:
  objective: dpo
  beta: {beta}
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
  metric: preference_accuracy
output:
  dir: runs/preference
"""


def pairs(n: int, seed: int, space: dict = TRAIN) -> list[dict]:
    """{prompt, chosen, rejected}: the ticket, its category, and an unhelpful terse reply, a wrong
    category or a rambling one (a random model already ranks most rambling replies below a word)."""
    rng = random.Random(seed)
    rows = []
    for row in tickets(n, seed, space):  # held-out pairs come from wording the training pairs never have
        prompt, label = row["messages"][:2], row["messages"][2]["content"]
        wrong = [x for x in sorted(LABELS) if x != label]
        kind = rng.choices([k for k, _ in SHARES], weights=[w for _, w in SHARES])[0]
        if kind == "unhelpful":
            rejected = rng.choice(UNHELPFUL)
        elif kind == "wrong":
            rejected = rng.choice(wrong)
        else:
            a, b = rng.sample(wrong + [label], 2)
            rejected = rng.choice(RAMBLING).format(a=a, b=b)
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": label}],
                     "rejected": [{"role": "assistant", "content": rejected}]})
    return rows


def make(directory: Path, train_examples: int = 160, eval_examples: int = 48, epochs: int = 3,
         beta: float = 0.5, seed: int = 7, force: bool = False) -> Path:
    """Write the preference demo into `directory`; returns the recipe's path. Files the demo did not
    write, or that were edited since, are not overwritten unless `force` (as `recipe demo`)."""
    return write_guarded(Path(directory), DEMO_FILES, force,
                         lambda d: _make(d, train_examples, eval_examples, epochs, beta, seed))


def _make(directory: Path, train_examples: int, eval_examples: int, epochs: int, beta: float, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "data"
    data.mkdir(exist_ok=True)
    train, held = pairs(train_examples, seed, TRAIN), pairs(eval_examples, seed + 1, HELD_OUT)
    for name, rows in (("train", train), ("eval", held)):
        with (data / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    texts = [SYSTEM] + [m["content"] for r in train for m in r["prompt"] + r["chosen"] + r["rejected"]]
    model_dir = directory / "tiny-llama"
    _tokenizer(texts, model_dir)
    from transformers import AutoTokenizer

    _model(len(AutoTokenizer.from_pretrained(str(model_dir))), model_dir, seed)
    recipe = directory / "recipe.yaml"
    recipe.write_text(RECIPE.format(dir=directory, epochs=epochs, beta=beta))
    return recipe
