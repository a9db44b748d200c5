"""The estimate's static parts on a known model, computed by hand: LoRA's trainable parameters and the
optimizer states that go with them (torch AdamW, bitsandbytes 8-bit, paged), and QLoRA's 4-bit base."""

import pytest

from recipe_ft.compiler import memory
from recipe_ft.compiler.architecture import from_config
from recipe_ft.compiler.models import catalog_entry

# Llama-3-8B: 32 layers, hidden 4096, MLP 14336, 8 KV heads of 128 (k, v: 1024 wide), vocab 128256.
# LoRA r=16 on every linear, per layer: A is 16 x in, B is out x 16.
A = [16 * 4096] * 6 + [16 * 14336]  # q k v o gate up: in 4096; down: in 14336
B = [4096 * 16, 1024 * 16, 1024 * 16, 4096 * 16, 14336 * 16, 14336 * 16, 4096 * 16]
TENSORS = (A + B) * 32
LORA_PARAMS = sum(TENSORS)


@pytest.fixture(scope="module")
def llama3():
    return from_config(catalog_entry("meta-llama/Meta-Llama-3-8B-Instruct")["config"], "llama3")


def estimate(arch, method="lora", optimizer="adamw"):
    return memory.estimate(arch, memory.StepShape(method=method, rank=16, optimizer=optimizer))


def test_lora_parameters_and_adamw_states(llama3):
    assert LORA_PARAMS == 41_943_040
    e = estimate(llama3)
    assert e.trainable_params == LORA_PARAMS
    assert e.components["adapter_weights"] == 4 * LORA_PARAMS  # fp32 adapters on a bf16 base
    assert e.components["optimizer_states"] == 2 * 4 * LORA_PARAMS, "optimizer states: two fp32 moments"
    assert e.components["optimizer_states_paged"] == 0


def test_8bit_and_paged_optimizer_states(llama3):
    # every tensor has >= 4096 values: uint8 moments plus a float32 absmax per 256 values, for each moment
    states = sum(2 * n + 2 * 4 * (n // 256) for n in TENSORS)
    assert states == 85_196_800
    e = estimate(llama3, optimizer="adamw_8bit")
    assert e.components["optimizer_states"] == states, "8-bit optimizer states"
    # paged: only the moments of tensors of 1e5 values or more (down's A, gate's and up's B) are paged
    paged = sum(2 * n for n in TENSORS if n >= 100_000)
    assert paged == 44_040_192
    p = estimate(llama3, optimizer="paged_adamw_8bit")
    assert p.components["optimizer_states_paged"] == paged, "paged optimizer states"
    assert p.components["optimizer_states"] == states - paged, "optimizer states left on the device"
    assert p.required_bytes - p.allocated_peak_bytes - p.components["allocator_overhead"] \
        - p.components["cuda_context"] == paged


def test_qlora_4bit_base(llama3):
    linear = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336)  # q o, k v, gate up down
    rest = 2 * 128256 * 4096 + 65 * 4096  # embeddings and lm_head (untied), 65 norms: bf16
    e = estimate(llama3, method="qlora")
    assert e.components["weights"] == linear // 2 + rest * 2, "4-bit weights: half a byte per weight"
    blocks = [4096 * 4096 // 64] * 2 + [4096 * 1024 // 64] * 2 + [4096 * 14336 // 64] * 3
    constants = 32 * sum(b + -(-b // 256) * 4 for b in blocks)  # 8-bit absmax per block, fp32 per 256 blocks
    assert e.components["quantization_constants"] == constants, "4-bit double-quant constants"
    assert e.components["adapter_weights"] == 2 * LORA_PARAMS  # bf16 adapters on a quantized base
