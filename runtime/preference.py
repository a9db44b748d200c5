"""Preference tuning at run time: trl's DPOTrainer (and KTOTrainer, ORPO where trl has it).

The trainer is configured from the same training arguments as SFT (checkpoints, logging, optimizer,
precision: every field trl's configs share is taken from the SFT configuration the runtime builds),
plus the objective's own: beta, the DPO loss variant, precompute_ref_log_probs as the plan decided.
With an adapter no reference model is passed and none is built: trl scores the reference with the
adapter disabled (or, for an adapter being trained further, with a frozen copy of it named "ref").
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..schemas.errors import RecipeError


def trainer_classes(objective: str):
    """(config class, trainer class) for the objective, from the installed trl."""
    if objective == "dpo":
        from trl import DPOConfig, DPOTrainer

        return DPOConfig, DPOTrainer
    if objective == "kto":
        from trl import KTOConfig, KTOTrainer

        return KTOConfig, KTOTrainer
    try:
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    except ImportError:
        raise RecipeError("training.objective orpo: the installed trl has no ORPOTrainer "
                          "(trl.experimental.orpo); use dpo, or install a trl that has it") from None
    return ORPOConfig, ORPOTrainer


# Fields SFTConfig shares by name but not by meaning (its loss_type is SFT's "nll"), and those whose
# trl default the objective needs: KTO's KL term pairs each example with its neighbours in a
# fixed-order batch (train_sampling_strategy "sequential").
OWN_DEFAULTS = {"dpo": ("loss_type",), "orpo": ("loss_type",), "kto": ("loss_type", "train_sampling_strategy")}


def config(plan, sft_args, objective: str):
    """The objective's trl config: the SFT arguments' shared fields, then its own settings."""
    Config, _ = trainer_classes(objective)
    sft_fields = {f.name for f in dataclasses.fields(type(sft_args)) if f.init}
    own = OWN_DEFAULTS.get(objective, ())
    shared = {f.name: getattr(sft_args, f.name) for f in dataclasses.fields(Config)
              if f.init and f.name in sft_fields and not f.name.startswith("_") and f.name not in own}
    p = plan.preference
    shared["beta"] = p.beta
    if objective == "dpo":
        shared["loss_type"] = [p.loss_type or "sigmoid"]
        if p.label_smoothing is not None:
            shared["label_smoothing"] = p.label_smoothing
    if objective in ("dpo", "kto"):
        shared["precompute_ref_log_probs"] = p.precompute_ref_log_probs
    if objective == "orpo":
        shared["max_completion_length"] = plan.training.max_seq_len
    return Config(**shared)


def build(plan, model, tokenizer, train_rows: list, eval_rows: list, sft_args, peft_config, callbacks):
    """The preference trainer. A model that already carries an adapter (stacked) gets no peft_config."""
    from datasets import Dataset

    objective = plan.preference.objective
    _, Trainer = trainer_classes(objective)
    if objective == "kto":
        check_data(plan, train_rows)
        if plan.training.micro_batch_size < 2:
            raise RecipeError("training.micro_batch_size: KTO needs at least 2 (its KL term pairs each example with "
                              "another in the same micro batch)")
    one_form(train_rows, "train")
    one_form(eval_rows, "eval")
    from peft import PeftModel

    kwargs = dict(model=model, args=config(plan, sft_args, objective), train_dataset=Dataset.from_list(train_rows),
                  eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None, processing_class=tokenizer,
                  peft_config=None if isinstance(model, PeftModel) else peft_config, callbacks=callbacks)
    if objective in ("dpo", "kto"):
        kwargs["ref_model"] = _merged_reference(plan, model)
    if objective == "orpo":
        Trainer = _counting_pairs(Trainer)
    try:
        return Trainer(**kwargs)
    except ValueError as exc:  # trl's own checks of a combination of settings
        raise RecipeError(f"trl's {Trainer.__name__} refuses these settings: {exc}") from None


def check_data(plan, train_rows: list) -> None:
    """What the training data must hold beyond each record being good: KTO needs both labels."""
    if plan.preference.objective != "kto":
        return
    from ..compiler.pairs import check_kto_balance
    from ..compiler.sources import describe, parse

    check_kto_balance(train_rows, describe(parse(plan.recipe.data.train, plan.recipe.data.format)))


def _merged_reference(plan, model):
    """None (adapter: disabled for the reference; full: trl loads or precomputes it), except for full
    fine-tuning from a merged adapter with a second model: trl would load the reference from the base's
    path, without the adapter, so the reference is a frozen copy of the merged model instead."""
    if plan.preference.reference != "second_model" or plan.recipe.model.adapter is None:
        return None
    import copy

    return copy.deepcopy(model).requires_grad_(False).eval()


def one_form(rows: list, key: str) -> None:
    """Each file's records keep one form (compiler/pairs.same_form); sources of data.train (or eval)
    must too: trl cannot hold string and message-list prompts in one data set."""
    if len({isinstance(r["prompt"], list) for r in rows}) > 1:
        raise RecipeError(f"data.{key}: its sources mix plain (string) and conversational (message-list) records; "
                          f"use one form in all of them")


def _counting_pairs(Trainer):
    """ORPO's batches carry chosen_* / rejected_* tensors, no `input_ids`, so transformers counts no
    tokens (the run report's tokens/s would read 0): count both sides' non-padding tokens (each holds the
    prompt), as the other trainers count theirs."""

    class PairCounting(Trainer):
        def _track_num_input_tokens(self, inputs):
            masks = [inputs[k] for k in ("chosen_attention_mask", "rejected_attention_mask") if k in inputs]
            if self.args.include_num_input_tokens_seen == "no" or "input_ids" in inputs or not masks:
                return super()._track_num_input_tokens(inputs)
            import torch

            seen = torch.as_tensor(sum(int(m.sum()) for m in masks), device=self.args.device, dtype=torch.int64)
            self.state.num_input_tokens_seen += self.accelerator.gather(seen).sum().item()

    PairCounting.__name__ = Trainer.__name__
    return PairCounting


def token_count(tokenizer, row: dict) -> int:
    """Tokens of the longer side of a pair (both sides are padded to it), or of a KTO example."""
    sides = [row["chosen"], row["rejected"]] if "chosen" in row else [row["completion"]]
    prompt = row["prompt"]
    longest = 0
    for side in sides:
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(prompt + side, tokenize=True, return_dict=True)["input_ids"]
            n = len(ids)
        else:
            n = len(tokenizer(prompt + side)["input_ids"]) + 1
        longest = max(longest, n)
    return longest


def adapter_path(plan, plan_dir: Path) -> Path:
    path = (plan_dir / plan.recipe.model.adapter).resolve()
    if not (path / "adapter_config.json").is_file():
        raise RecipeError(f"model.adapter: no PEFT adapter at {plan.recipe.model.adapter} (no adapter_config.json; "
                          f"it is relative to the recipe's folder)")
    return path
