"""Score a model on held-out data: batched greedy generation, then the recipe's metric."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError
from ..schemas.recipe import default_metric
from . import metrics

MAX_EXAMPLES = 1000  # generation is the slow part; larger held-out sets are scored on their first 1000
SHOWN = 5


def prompts_and_references(rows: list[dict]) -> tuple[list, list[str]]:
    """From records in trl's format: what the model is given, and what it should answer."""
    prompts, refs = [], []
    for row in rows:
        if "messages" in row:
            prompts.append(row["messages"][:-1])
            refs.append(row["messages"][-1]["content"])
        elif isinstance(row.get("prompt"), list):
            prompts.append(row["prompt"])
            refs.append(row["completion"][0]["content"])
        elif "prompt" in row:
            prompts.append(row["prompt"])
            refs.append(row["completion"])
    return prompts, refs


def _render(tokenizer, prompt) -> tuple[str, bool]:
    """The prompt as text, and whether the tokenizer should add its special tokens to it."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), False
    return prompt, True


def new_tokens_for(tokenizer, references: list[str], setting) -> int:
    if isinstance(setting, int):
        return setting
    longest = max((len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=16)
    return min(1024, max(8, math.ceil(longest * 1.25) + 4))


def _no_router_logits(model) -> dict:
    config = getattr(model, "config", None)
    return {"output_router_logits": False} if getattr(config, "output_router_logits", False) else {}


def generate(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int = 8) -> list[str]:
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            rendered = [_render(tokenizer, p) for p in prompts[start:start + batch_size]]
            texts = [t for t, _ in rendered]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=rendered[0][1])
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            with torch.no_grad():
                # MoE: trl turns on the router logits for its load-balancing loss; generating with them
                # computes that loss on every step, which fails on left-padded batches (and is unused)
                generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                           **_no_router_logits(model))
            new = generated[:, inputs["input_ids"].shape[1]:]
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [o.strip() for o in out]


def load_schema(plan, plan_dir: Path) -> Optional[dict]:
    path = plan.recipe.eval.json_schema
    if not path:
        return None
    try:
        return json.loads((plan_dir / path).read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise RecipeError(f"eval.json_schema: cannot read {path} as a JSON Schema ({exc})") from None


def evaluate(plan, model, tokenizer, rows: list[dict], schema: Optional[dict] = None,
             batch_size: int = 8) -> Optional[dict]:
    """Scores on held-out rows, or None when there is nothing to generate (text format, no rows)."""
    if plan.recipe.task == "preference":  # log-probabilities of chosen and rejected, no generation
        from .preference_eval import evaluate_pairs

        return evaluate_pairs(plan, model, tokenizer, rows[:MAX_EXAMPLES], batch_size)
    prompts, refs = prompts_and_references(rows[:MAX_EXAMPLES])
    if not prompts:
        return None
    metric = plan.recipe.eval.metric or default_metric(plan.recipe.task)
    n_new = new_tokens_for(tokenizer, refs, plan.recipe.eval.max_new_tokens)
    predictions = generate(model, tokenizer, prompts, n_new, batch_size)
    result = metrics.compute_metric(metric, predictions, refs, schema)
    examples = []
    for p, r, g in list(zip(prompts, refs, predictions))[:SHOWN]:
        shown = p[-1]["content"] if isinstance(p, list) else p
        examples.append({"input": shown[-300:], "reference": r, "prediction": g})
    return {"metric": metric, "score": result["score"], "details": result, "examples": examples,
            "examples_scored": len(prompts), "max_new_tokens": n_new}


def gate(plan, tuned: Optional[dict]) -> dict:
    """Promotion: the tuned score must reach eval.min_score (when the recipe sets one)."""
    bar = plan.recipe.eval.min_score
    if bar is None:
        return {"promoted": True, "min_score": None, "reason": "no eval.min_score: nothing to gate on"}
    if tuned is None:
        return {"promoted": False, "min_score": bar, "reason": "no held-out examples to score"}
    passed = tuned["score"] >= bar
    verb = "reaches" if passed else "is below"
    return {"promoted": passed, "min_score": bar,
            "reason": f"{tuned['metric']} {tuned['score']:.3f} {verb} eval.min_score {bar:g}"}
