"""Score a model on held-out preference pairs: is the chosen reply more likely than the rejected one?

- preference_accuracy: the share of pairs whose chosen completion has the higher log-probability
  (summed over its tokens, given the prompt), the comparison DPO's loss is built on;
- mean_logp_margin: the mean of log p(chosen) - log p(rejected);
- mean_reward_margin and reward_accuracy: DPO's implicit reward, beta x (log-ratio to the reference
  of chosen - of rejected), where the model carries an adapter (the reference is the model with its
  adapter disabled, or the frozen "ref" copy of an adapter trained further). For the base model the
  margin is 0 by definition. ORPO, which has no reference, gets none.

KTO held-out data ({prompt, completion, label}) is paired by prompt: each desirable completion
against each undesirable one to the same prompt.
"""

from __future__ import annotations

from typing import Optional

SHOWN = 5


def pairs_of(rows: list[dict]) -> list[tuple]:
    """(prompt, chosen, rejected) triples from preference rows or from KTO rows paired by prompt."""
    if rows and "chosen" in rows[0]:
        return [(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    import json

    by_prompt: dict[str, dict] = {}
    for r in rows:
        entry = by_prompt.setdefault(json.dumps(r["prompt"], sort_keys=True), {"prompt": r["prompt"], True: [], False: []})
        entry[r["label"]].append(r["completion"])
    return [(e["prompt"], good, bad) for e in by_prompt.values() for good in e[True] for bad in e[False]]


def _ids(tokenizer, prompt, completion, max_len: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion and where the completion starts, as trl tokenizes them."""
    if isinstance(prompt, list):
        head = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True,
                                             return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=True, return_dict=True)["input_ids"]
        if full[:len(head)] != head:  # a template that renders the prompt differently with a reply after it
            head = full[:len(head)]
    else:
        head = tokenizer(prompt)["input_ids"]
        full = head + tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return full[:max_len], min(len(head), max_len)


def _has_reply(tokenizer, prompt, completion, max_len: int) -> bool:
    ids, head = _ids(tokenizer, prompt, completion, max_len)
    return len(ids) > head


def sequence_logps(model, tokenizer, items: list[tuple], max_len: int, batch_size: int = 8) -> list[float]:
    """Sum of the completion's token log-probabilities for each (prompt, completion)."""
    import torch

    encoded = [_ids(tokenizer, p, c, max_len) for p, c in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)
        for i, (ids, head) in enumerate(chunk):
            input_ids[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = 1
            scored[i, head:len(ids)] = True
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float()
        logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None].to(device))[..., 0]
        out += (logps * scored[:, 1:].to(device)).sum(dim=1).tolist()
    return out


def _reference(model):
    """A context in which the model is its reference, or None when it has none (no adapter)."""
    try:
        from peft import PeftModel
    except ImportError:
        return None
    if not isinstance(model, PeftModel):
        return None
    if "ref" in model.peft_config:
        from trl.trainer.utils import use_adapter

        return lambda: use_adapter(model, "ref")
    return model.disable_adapter


def evaluate_pairs(plan, model, tokenizer, rows: list[dict], batch_size: int = 8) -> Optional[dict]:
    max_len = plan.training.max_seq_len
    triples = pairs_of(rows)
    scorable = [t for t in triples if all(_has_reply(tokenizer, t[0], side, max_len) for side in t[1:])]
    skipped = len(triples) - len(scorable)  # as trl drops them: the prompt fills max_seq_len
    triples = scorable
    if not triples:
        return None
    was_training = model.training
    model.eval()
    items = [(p, c) for p, c, _ in triples] + [(p, r) for p, _, r in triples]
    try:
        logps = sequence_logps(model, tokenizer, items, max_len, batch_size)
        has_reference = plan.preference is None or plan.preference.reference != "none"  # ORPO has none
        reference = _reference(model) if has_reference else None
        ref_logps = None
        if reference is not None:
            with reference():
                ref_logps = sequence_logps(model, tokenizer, items, max_len, batch_size)
    finally:
        model.train(was_training)
    n = len(triples)
    chosen, rejected = logps[:n], logps[n:]
    margins = [c - r for c, r in zip(chosen, rejected)]
    correct = sum(1 for m in margins if m > 0)
    details = {"score": correct / n, "correct": correct, "total": n, "mean_logp_margin": sum(margins) / n,
               "mean_reward_margin": None, "reward_accuracy": None, "skipped_truncated": skipped}
    if ref_logps is not None:
        beta = plan.preference.beta if plan.preference else plan.recipe.training.beta
        rewards = [beta * ((c - rc) - (r - rr)) for c, r, rc, rr in zip(chosen, rejected, ref_logps[:n], ref_logps[n:])]
        details["mean_reward_margin"] = sum(rewards) / n
        details["reward_accuracy"] = sum(1 for x in rewards if x > 0) / n
    examples = []
    for (p, c, r), m in list(zip(triples, margins))[:SHOWN]:
        shown = p[-1]["content"] if isinstance(p, list) else p
        text = (lambda x: x if isinstance(x, str) else x[-1]["content"])
        examples.append({"input": shown[-300:], "reference": text(c), "rejected": text(r),
                         "prediction": f"{'chosen' if m > 0 else 'rejected'} preferred (log-prob margin {m:+.2f})"})
    return {"metric": "preference_accuracy", "score": details["score"], "details": details, "examples": examples,
            "examples_scored": n, "max_new_tokens": 0}


def against_base(plan, base: Optional[dict], tuned: Optional[dict]) -> None:
    """Full fine-tuning: the reference is the base model, scored on the same pairs before training,
    so the mean reward margin is beta x the change in the mean log-prob margin (a mean is linear).
    Filled in where the tuned model had no adapter to disable; reward_accuracy, per pair, stays None."""
    p = plan.preference
    if not base or not tuned or p is None or p.reference == "none":
        return
    b, t = base["details"], tuned["details"]
    if t.get("mean_reward_margin") is not None or b.get("total") != t.get("total"):
        return
    t["mean_reward_margin"] = p.beta * (t["mean_logp_margin"] - b["mean_logp_margin"])
    b["mean_reward_margin"] = 0.0


def check_scorable(plan, rows: list[dict], log) -> None:
    """KTO held-out records are scored in pairs, by prompt. When none pairs, say so before training:
    a RecipeError when eval.min_score would gate on the score, else a warning."""
    from .evaluate import MAX_EXAMPLES

    if not rows or "chosen" in rows[0] or pairs_of(rows[:MAX_EXAMPLES]):
        return
    where = "data.eval" if plan.recipe.data.eval else "the held-out split of data.train"
    what = (f"{where}: none of the {len(rows[:MAX_EXAMPLES])} held-out KTO records' prompts has both a desirable and "
            f"an undesirable completion, so preference_accuracy (is the desirable one more likely?) has no pair "
            f"to score")
    if plan.recipe.eval.min_score is not None:
        from ..schemas.errors import RecipeError

        raise RecipeError(f"{what}; eval.min_score cannot be checked: give some prompts a completion of each kind "
                          f"in the held-out data, or remove eval.min_score")
    log(f"warning: {what}; held-out scoring is skipped")
