"""Preference tuning in the plan: what DPO, ORPO and KTO add to a step's memory and time.

What the runtime (trl 1.16) does, read from its source:

- DPOTrainer concatenates chosen and rejected into one batch: a micro batch of n pairs runs 2n
  sequences through the policy, forward and backward. It projects through trl's fused LM head
  (`add_fused_lm_head`), so no (batch, seq, vocab) logits are built, as for SFT.
- The reference: with an adapter, the policy with its adapter disabled (no second copy of the
  weights), run under no_grad after the policy's forward while its activations are still live;
  under full fine-tuning, a second model loaded in the policy's dtype, unless the reference
  log-probabilities are precomputed once before training (`precompute_ref_log_probs`), in which
  case the second model is never loaded (the policy scores the data before it changes).
- KTOTrainer runs each completion and a mismatched "KL" completion: 2 sequences per example, with
  the same reference handling as DPO.
- ORPO (trl.experimental.orpo) has no reference, but computes its loss on full logits: the (2n, seq,
  vocab) logits, their fp32 log-softmax and its gradient are held at the peak.
"""

from __future__ import annotations

from dataclasses import replace

from .architecture import Architecture, parameter_count

SEQUENCES_PER_EXAMPLE = {"sft": 1, "dpo": 2, "orpo": 2, "kto": 2}
REFERENCE_OBJECTIVES = ("dpo", "kto")


def reference_kind(objective: str, method: str, precompute: bool) -> str:
    """How the step gets the reference log-probabilities."""
    if objective not in REFERENCE_OBJECTIVES:
        return "none"
    if precompute:
        return "precomputed"
    return "second_model" if method == "full" else "adapter_disabled"


def choose_precompute(objective: str, method: str, setting) -> tuple[bool, str]:
    """Whether to precompute the reference log-probabilities, and why."""
    if objective not in REFERENCE_OBJECTIVES:
        return False, f"{objective} has no reference model"
    if isinstance(setting, bool):
        return setting, "pinned by training.precompute_ref_log_probs"
    if method == "full":
        return True, ("full fine-tuning: scoring the reference once before training avoids holding a second copy "
                      "of the model during training")
    return False, ("with an adapter the reference is the base with the adapter disabled: no second model to "
                   "save; scored at each step (one extra forward without gradients)")


def doubled(shape):
    """The policy's step: chosen and rejected (or completion and KL completion) in one batch, with
    dropout off (DPOConfig / KTOConfig disable_dropout defaults to true)."""
    return replace(shape, micro_batch_size=shape.micro_batch_size * SEQUENCES_PER_EXAMPLE[shape.objective],
                   objective="sft", reference="none", dropout=0.0)  # trl's disable_dropout (default on)


def reference_weight_bytes(arch: Architecture, shape) -> int:
    """A second model, loaded in the policy's dtype (fp32 master weights under full fine-tuning, bf16
    ones under bf16-pure); under FSDP / ZeRO-3 trl shards it across the ranks as it does the policy."""
    if shape.reference != "second_model":
        return 0
    fp32 = (shape.method == "full" and shape.precision != "bf16-pure") or shape.precision == "fp32"
    per = 4 if fp32 else 2
    total = parameter_count(arch).total * per
    return total // shape.processes if shape.shards_weights else total  # trl shards it like the policy


def full_logits_bytes(arch: Architecture, shape) -> int:
    """ORPO: logits of all 2n sequences in the compute dtype, fp32 log-softmax and its gradient."""
    if shape.objective != "orpo":
        return 0
    tokens = shape.micro_batch_size * SEQUENCES_PER_EXAMPLE["orpo"] * shape.seq_len
    dtype = 4 if shape.precision == "fp32" else 2
    return tokens * arch.vocab_size * (dtype + 4 + 4)


def estimate(arch: Architecture, shape, estimate_sft):
    """The preference step's memory: the SFT estimate at twice the sequences, plus the reference's
    weights (a second model) and ORPO's full logits. `estimate_sft` is memory.estimate."""
    from .memory import ALLOCATOR_OVERHEAD, MemoryEstimate

    base = estimate_sft(arch, doubled(shape))
    components = dict(base.components)
    components["reference_weights"] = reference_weight_bytes(arch, shape)
    added = components["reference_weights"]
    if shape.objective == "orpo":  # full logits instead of the fused head's tile
        components["logits_and_loss"] = full_logits_bytes(arch, shape)
        added += components["logits_and_loss"] - base.components["logits_and_loss"]
    overhead = int(ALLOCATOR_OVERHEAD * added)
    components["allocator_overhead"] += overhead
    allocated = base.allocated_peak_bytes + added
    required = base.required_bytes + added + overhead
    return MemoryEstimate(components, allocated, required, base.trainable_params)


def forward_passes(reference: str, epochs: float) -> float:
    """Extra forward passes per trained token for the reference: one per step when scored live, one
    per example over the whole run when precomputed (so 1 / epochs per trained token)."""
    if reference in ("adapter_disabled", "second_model"):
        return 1.0
    if reference == "precomputed":
        return 1.0 / max(epochs, 1e-9)
    return 0.0


def example_lengths(row: dict, encode) -> int:
    """Tokens of a pair's longer side (both are padded to it in the batch), or of a KTO example."""
    def text(value) -> tuple[str, int]:
        if isinstance(value, list):
            parts = [str(m.get("content", "")) for m in value if isinstance(m, dict)]
            return "\n".join(parts), len(parts)
        return ("" if value is None else str(value)), 0

    prompt, n_prompt = text(row.get("prompt"))
    sides = [row.get("chosen"), row.get("rejected")] if "chosen" in row else [row.get("completion")]
    best = 0
    for side in sides:
        body, n = text(side)
        best = max(best, encode(prompt + body, n_prompt + n))
    return best


def sequences_per_example(objective: str) -> int:
    return SEQUENCES_PER_EXAMPLE.get(objective, 1)


def describe(objective: str, reference: str) -> str:
    return {"adapter_disabled": "the base model with the adapter disabled (no second copy of the weights)",
            "second_model": "a second copy of the model, frozen",
            "precomputed": "scored once before training (precompute_ref_log_probs)",
            "none": f"none ({objective} has no reference model)"}[reference]


def settings(recipe) -> dict:
    """The StepShape fields for a recipe: objective, reference, the reference's forward passes."""
    from ..schemas.recipe import objective_of

    objective = objective_of(recipe)
    if objective == "sft":
        return {}
    method = "full" if recipe.method.name == "full" else "adapter"
    precompute, _ = choose_precompute(objective, method, recipe.training.precompute_ref_log_probs)
    reference = reference_kind(objective, method, precompute)
    return {"objective": objective, "reference": reference,
            "reference_passes": forward_passes(reference, recipe.training.epochs)}


def plan_section(recipe, arch: Architecture, shape, memory_estimate, estimate_sft):
    """(PreferencePlan, Decision) for the chosen option, or (None, None) for SFT."""
    from ..schemas.plan import Decision, PreferencePlan

    if shape.objective == "sft":
        return None, None
    method = "full" if shape.method == "full" else "adapter"
    precompute, why = choose_precompute(shape.objective, method, recipe.training.precompute_ref_log_probs)
    sft = estimate_sft(arch, replace(shape, objective="sft", reference="none", reference_passes=0.0))
    gib = 2**30
    ratio = memory_estimate.allocated_peak_bytes / max(sft.allocated_peak_bytes, 1)
    note = (f"{shape.objective.upper()} runs {SEQUENCES_PER_EXAMPLE[shape.objective]} sequences per example "
            f"(micro batch {shape.micro_batch_size} x {SEQUENCES_PER_EXAMPLE[shape.objective]}); reference: "
            f"{describe(shape.objective, shape.reference)}. Peak {memory_estimate.allocated_peak_bytes / gib:.2f} GiB "
            f"against {sft.allocated_peak_bytes / gib:.2f} GiB for SFT at the same micro batch ({ratio:.2f}x)")
    loss = (recipe.training.loss_type or "sigmoid") if shape.objective == "dpo" else None
    section = PreferencePlan(objective=shape.objective, beta=recipe.training.beta, loss_type=loss,
                             label_smoothing=recipe.training.label_smoothing if loss else None,
                             sequences_per_example=SEQUENCES_PER_EXAMPLE[shape.objective], reference=shape.reference,
                             precompute_ref_log_probs=precompute, sft_allocated_peak_bytes=sft.allocated_peak_bytes,
                             note=note)
    return section, Decision(what="reference", choice=shape.reference, reason=why)
