"""runtime/bnb_sizes.py: what bitsandbytes keeps, measured from its own objects, against hand-computed
sizes and against full-size objects (the tracer relies on it, and must not reuse the estimator)."""

import pytest

pytest.importorskip("bitsandbytes")

from recipe_ft.runtime import bnb_sizes  # noqa: E402


def sizes(records):
    return {t.name: t.nbytes for t in records}


def test_a_4bit_double_quant_linear_by_hand():
    # 4096 x 4096 NF4: half a byte per weight; an 8-bit absmax per 64 weights; those absmax quantized
    # again with a float32 absmax per 256 of them, an offset, and the two code tables (16 and 256 floats)
    got = sizes(bnb_sizes.quantized_linear(4096, 4096, 4, True))
    assert got == {"weight": 4096 * 4096 // 2, "absmax": 4096 * 4096 // 64, "nested_absmax": 4096 * 4096 // 64 // 256 * 4,
                   "offset": 4, "code": 16 * 4, "nested_code": 256 * 4}


def test_a_4bit_linear_without_double_quant_and_an_8bit_linear_by_hand():
    assert sizes(bnb_sizes.quantized_linear(4096, 4096, 4, False)) == {
        "weight": 4096 * 4096 // 2, "absmax": 4096 * 4096 // 64 * 4, "code": 16 * 4}
    # LLM.int8: an int8 weight and one float32 scale per output row
    assert sizes(bnb_sizes.quantized_linear(14336, 4096, 8)) == {"weight": 14336 * 4096, "SCB": 14336 * 4}


@pytest.mark.parametrize("bits,double_quant", [(4, True), (4, False), (8, False)])
def test_the_per_row_extension_matches_a_full_size_layer(bits, double_quant):
    """Row counts that are not whole blocks, widths of real models: extended from two small samples,
    the sizes are those of the real object at full size (within the last block's rounding)."""
    for out_features, in_features in ((1000, 2880), (333, 11008), (77, 4864)):
        extended = sizes(bnb_sizes.quantized_linear(out_features, in_features, bits, double_quant))
        real = {name: t.untyped_storage().nbytes()
                for name, t in bnb_sizes._quantized_tensors(out_features, in_features, bits, double_quant)}
        assert extended.keys() == real.keys()
        for name in real:
            assert abs(extended[name] - real[name]) <= 4, (out_features, in_features, name, extended[name], real[name])


def test_8bit_optimizer_states_by_hand():
    lora_a, small = ((16, 4096), "bfloat16"), ((8, 100), "float32")
    a, s = bnb_sizes.optimizer_states([lora_a, small], "adamw_8bit")
    # 65,536 values: two uint8 moments, a float32 absmax per 256 values for each, and the two
    # quantization maps (256 floats each), shared by every parameter and listed once
    assert sizes(a) == {"state1": 65536, "state2": 65536, "absmax1": 256 * 4, "absmax2": 256 * 4,
                        "qmap1": 1024, "qmap2": 1024}
    assert sizes(s) == {"state1": 800 * 4, "state2": 800 * 4}  # under 4096 values: 32-bit states
    assert not any(t.paged for t in a + s)


def test_paged_optimizers_page_only_large_tensors():
    big, lora_a = ((4096, 64), "float32"), ((16, 4096), "bfloat16")  # 262,144 and 65,536 values
    b, a = bnb_sizes.optimizer_states([big, lora_a], "paged_adamw_8bit")
    assert {t.name for t in b if t.paged} == {"state1", "state2"}  # the moments, in managed memory
    assert {t.name for t in b if not t.paged} >= {"absmax1", "absmax2"}
    assert not any(t.paged for t in a)  # under 1e5 values: an ordinary allocation
    b32, a32 = bnb_sizes.optimizer_states([big, lora_a], "paged_adamw_32bit")
    assert sizes(b32) == {"state1": 262144 * 4, "state2": 262144 * 4} and all(t.paged for t in b32)
    assert sizes(a32) == {"state1": 65536 * 4, "state2": 65536 * 4} and not any(t.paged for t in a32)
