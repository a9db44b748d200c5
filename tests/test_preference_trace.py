"""The DPO step's memory estimate agrees with the tracer (the step run on fake tensors the way trl's
DPOTrainer runs it: chosen and rejected in one batch, the reference with the adapter disabled under
no_grad, or a second model) within 10%."""

import pytest

pytest.importorskip("peft")
pytest.importorskip("trl")

from recipe_ft.compiler import memory  # noqa: E402
from recipe_ft.compiler.architecture import from_config  # noqa: E402
from recipe_ft.runtime.trace import TraceSpec, trace  # noqa: E402
from test_memory_vs_trace import catalog  # noqa: E402

LLAMA = "meta-llama/Meta-Llama-3-8B-Instruct"
GRID = [
    ("llama3-8b dpo lora", catalog(LLAMA), dict(method="lora", seq_len=1024, micro_batch_size=2)),
    ("llama3-8b dpo qlora gc", catalog(LLAMA),
     dict(method="qlora", seq_len=1024, micro_batch_size=2, gradient_checkpointing=True, optimizer="paged_adamw_8bit")),
    ("qwen2.5-7b dpo lora r64 8bit", catalog("Qwen/Qwen2.5-7B-Instruct"),
     dict(method="lora", seq_len=512, rank=64, optimizer="adamw_8bit")),
]


def measure(label, cfg, opts):
    arch = from_config(cfg, label)
    opts = dict(opts)
    reference = opts.pop("reference", "adapter_disabled")
    spec = TraceSpec(config=cfg, objective="dpo", reference=reference, attention="sdpa", **opts)
    shape = memory.StepShape(
        method=spec.method, rank=spec.rank, dropout=spec.dropout, micro_batch_size=spec.micro_batch_size,
        seq_len=spec.seq_len, gradient_checkpointing=spec.gradient_checkpointing, optimizer=spec.optimizer,
        precision=spec.precision, attention="sdpa", objective="dpo", reference=reference)
    estimated = memory.estimate(arch, shape)
    measured = trace(spec)
    assert estimated.trainable_params == measured.trainable_params
    return estimated, measured


@pytest.mark.parametrize("label,cfg,opts", GRID, ids=[g[0] for g in GRID])
def test_dpo_step_estimate_within_10_percent_of_trace(label, cfg, opts):
    estimated, measured = measure(label, cfg, opts)
    error = (estimated.allocated_peak_bytes - measured.peak_bytes) / measured.peak_bytes
    assert abs(error) <= 0.10, (label, estimated.allocated_peak_bytes, measured.peak_bytes, f"{error:+.1%}")


def test_the_traced_dpo_step_is_larger_than_sft_and_holds_no_second_model_with_an_adapter():
    cfg = catalog(LLAMA)
    dpo = trace(TraceSpec(config=cfg, method="lora", seq_len=512, objective="dpo", reference="adapter_disabled"))
    sft = trace(TraceSpec(config=cfg, method="lora", seq_len=512, dropout=0.0))
    assert dpo.weights_bytes == sft.weights_bytes  # the reference is the same weights, adapter disabled
    assert dpo.activation_peak_bytes > 1.5 * sft.activation_peak_bytes  # two sequences per example


def test_full_fine_tuning_second_reference_model_adds_its_weights():
    """Full fine-tuning's reference: a second model in the policy's fp32, or nothing when precomputed.
    (The tracer counts the second model's storages; the estimate adds parameters x 4 bytes.)"""
    cfg = catalog("TinyLlama/TinyLlama-1.1B-Chat-v1.0", layers=4)
    second, second_traced = measure("tinyllama full", cfg, dict(method="full", seq_len=256, reference="second_model"))
    pre, pre_traced = measure("tinyllama full", cfg, dict(method="full", seq_len=256, reference="precomputed"))
    traced = second_traced.peak_bytes - pre_traced.peak_bytes
    estimated = second.allocated_peak_bytes - pre.allocated_peak_bytes
    assert estimated == second.components["reference_weights"] > 0
    assert abs(estimated - traced) / traced <= 0.01, (estimated, traced)
