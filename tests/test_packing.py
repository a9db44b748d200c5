"""Packing: never across examples. Planned only with flash_attention_2 (trl's padding-free rows,
varlen kernels); refused with a located error under sdpa / eager and on a CPU; and the plan counts
the packed rows trl really makes (planned steps == steps trl runs)."""

import json

import pytest
from demo_copy import fresh_copy

from recipe_ft.compiler.datasize import best_fit_decreasing
from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.runtime import demo
from recipe_ft.schemas.errors import RecipeError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("tokenizers")
    return demo.make(tmp_path_factory.mktemp("pack") / "qs", train_examples=16, eval_examples=4, epochs=1)


def test_best_fit_decreasing():
    assert best_fit_decreasing([60, 60, 60, 60], 128) == 2
    assert best_fit_decreasing([100, 38, 90, 28], 128) == 2  # 100+28, 90+38: each into the tightest bin
    assert best_fit_decreasing([500], 128) == 1  # clipped to a full row


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packing_refused_where_examples_would_see_each_other(tiny, attention):
    with pytest.raises(RecipeError) as err:
        compile_file(str(tiny), [f"training.attention={attention}", "training.packing=true"])
    problem = err.value.problems[0]
    assert problem.key == "training.packing" and problem.line > 0
    assert "flash_attention_2" in problem.message and attention in problem.message


def test_packing_plans_flash_attention_and_rows(tiny):
    sets = ["training.batch_size=4", "training.micro_batch_size=4", "training.max_seq_len=512"]
    plain = compile_file(str(tiny), sets).plan
    packed = compile_file(str(tiny), ["training.packing=true", *sets]).plan
    assert packed.training.attention == "flash_attention_2" and packed.build.packing == "padding_free"
    assert "flash_attention_2" in packed.build.stack
    assert packed.training.steps < plain.training.steps  # rows hold several short examples
    assert any(d.what == "packing" for d in packed.decisions)


def test_packing_refused_on_cpu_before_loading(tiny, tmp_path):
    pytest.importorskip("trl")
    from recipe_ft.runtime.preflight import preflight

    plan = compile_file(str(tiny), ["training.packing=true"]).plan
    with pytest.raises(RecipeError, match="flash_attention_2.*CPU.*packing: false"):
        preflight(plan, tiny.parent)


def _same_length_texts(tokenizer_dir, n: int, tokens: int) -> list[str]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    words = ["billing", "refund", "parcel", "login", "crash", "invoice", "account", "tracking"]
    out = []
    for i in range(n):
        text, k = "", 0
        while len(tok.encode(text).ids) < tokens:
            text = (text + " " + words[(i + k) % len(words)]).strip()
            k += 1
        assert tokens <= len(tok.encode(text).ids) <= tokens + 6  # two fit a row of 128, three do not
        out.append(text)
    return out


def test_planned_steps_equal_trl_packed_steps(tiny, tmp_path):
    """A text data set of 40 examples of ~50 tokens, rows of 128: trl packs 2 per row -> 20 rows,
    5 steps of 4 rows; unpacked it would be 10 steps. The plan must say 5."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from recipe_ft.runtime.preflight import Device
    from recipe_ft.runtime.train import _sft_config

    root = fresh_copy(tiny, tmp_path / "qs").parent
    texts = _same_length_texts(root / "tiny-llama", 40, 50)
    (root / "data" / "text.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    sets = ["training.packing=true", "data.train=data/text.jsonl", "data.format=text", "task=generation",
            "training.max_seq_len=128", "training.batch_size=4", "training.micro_batch_size=4",
            "training.epochs=1", "data.eval=null"]
    plan = compile_file(str(root / "recipe.yaml"), sets).plan
    assert plan.data.counted_with == "tokenizer"

    tokenizer = AutoTokenizer.from_pretrained(str(root / "tiny-llama"))
    model = AutoModelForCausalLM.from_pretrained(str(root / "tiny-llama"))  # sdpa: only the step count matters here
    device = Device("cpu", "cpu", 0, "fp32")
    args = _sft_config(plan, tmp_path / "run", device, "text", False)
    args.bf16 = False
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"text": t} for t in texts]),
                         processing_class=tokenizer)
    assert len(trainer.train_dataset) == 20  # trl's rows
    trainer.train()
    assert trainer.state.global_step == plan.training.steps == 5
