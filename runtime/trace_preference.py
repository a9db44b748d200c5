"""The DPO step on fake tensors, as trl 1.16's DPOTrainer runs it (used by runtime/trace.py).

- the policy gets trl's fused LM head with DPO's outputs (log-probs, entropy, mean logits, top-1);
- dropout is disabled in the model (DPOConfig.disable_dropout defaults to true);
- chosen and rejected go through the policy as one batch of 2n sequences;
- the reference runs after the policy's forward, under no_grad: the same model with its adapter
  disabled, or a second model (full fine-tuning) whose weights are counted; precomputed reference
  log-probabilities come in with the batch (no forward);
- the loss is DPO's sigmoid loss on the summed log-probabilities; then backward.
"""

from __future__ import annotations

POLICY_OUTPUTS = {"dpo": ("log_probs", "entropy", "mean_logits", "is_top1")}
BETA = 0.1


def reference_model(spec, config, dtype):
    """The second model on the meta device when the reference is one (full fine-tuning), else None."""
    if spec.reference != "second_model":
        return None
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    ref = AutoModelForCausalLM.from_config(config, dtype=dtype)
    add_fused_lm_head(ref)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def materialise(ref, counter) -> None:
    """Fake storage for the second model's weights, counted (inside the fake-tensor mode)."""
    ref.to_empty(device="cpu")
    if getattr(ref.config, "tie_word_embeddings", False):
        ref.tie_weights()
    for tensor in list(ref.parameters()) + list(ref.buffers()):
        counter.track(tensor)


def disable_dropout(model) -> None:
    from trl.trainer.utils import disable_dropout_in_model

    disable_dropout_in_model(model)


def preference_loss(model, reference, spec):
    """One DPO micro step's loss (the caller runs backward)."""
    import torch
    import torch.nn.functional as F

    b, s = 2 * spec.micro_batch_size, spec.seq_len
    ids = torch.zeros(b, s, dtype=torch.long)
    mask = torch.ones(b, s, dtype=torch.long)
    out = model(input_ids=ids, attention_mask=mask, labels=ids, fused_lm_head=True, use_cache=False)
    logps = out.log_probs.sum(dim=1)
    if spec.reference == "precomputed":
        ref = torch.zeros(b, dtype=logps.dtype)
    else:
        with torch.no_grad():
            if reference is not None:
                ref_out = reference(input_ids=ids, attention_mask=mask, labels=ids, fused_lm_head=True, use_cache=False)
            else:
                with model.disable_adapter():
                    ref_out = model(input_ids=ids, attention_mask=mask, labels=ids, fused_lm_head=True,
                                    use_cache=False)
            ref = ref_out.log_probs.sum(dim=1)
            del ref_out
    chosen, rejected = logps.chunk(2)
    ref_chosen, ref_rejected = ref.chunk(2)
    loss = -F.logsigmoid(BETA * ((chosen - ref_chosen) - (rejected - ref_rejected))).mean()
    metrics = (out.entropy, out.mean_logits, out.is_top1)  # live until the loss is returned, as in trl
    del metrics, out
    return loss
