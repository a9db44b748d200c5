"""Preference tuning without torch: the recipe's rules, located errors for malformed pairs, and what
the plan says about DPO / ORPO / KTO memory and time against SFT."""

import json

import pytest

from recipe_ft.compiler.pipeline import check_file, compile_file
from recipe_ft.runtime.data import read_records
from recipe_ft.schemas.errors import RecipeError

PAIR = {"prompt": "Classify: my parcel is late", "chosen": "shipping", "rejected": "billing"}


def write(tmp_path, body, rows=(PAIR,), name="r.yaml", fmt="preference"):
    with (tmp_path / "pairs.jsonl").open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    text = (f"task: preference\nmodel:\n  base: meta-llama/Meta-Llama-3-8B-Instruct\ndata:\n  train: pairs.jsonl\n"
            f"  format: {fmt}\n  examples: 10000\n  tokens_per_example: 400\n{body}")
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def problems(path):
    return [(p.line, p.key, p.message) for p in check_file(path).problems]


def test_preference_recipe_is_valid_and_defaults_to_dpo(tmp_path):
    path = write(tmp_path, "training:\n  max_seq_len: 1024\n  batch_size: 16\nbudget:\n  gpu: A100-80GB\n  max_gpus: 1\n")
    assert problems(path) == []
    plan = compile_file(path).plan
    p = plan.preference
    assert p.objective == "dpo" and p.loss_type == "sigmoid" and p.beta == 0.1
    assert p.sequences_per_example == 2 and p.reference == "adapter_disabled"
    assert not p.precompute_ref_log_probs
    assert any(d.what == "reference" for d in plan.decisions)


def test_label_smoothing_reaches_the_plan_for_exo_pair_and_robust(tmp_path):
    for loss in ("exo_pair", "robust"):
        path = write(tmp_path, f"training:\n  loss_type: {loss}\n  label_smoothing: 0.001\n")
        assert problems(path) == []
        p = compile_file(path).plan.preference
        assert p.loss_type == loss and p.label_smoothing == 0.001


@pytest.mark.parametrize("body,line,key,words", [
    ("training:\n  objective: kto\n", 6, "data.format", "unpaired"),
    ("training:\n  loss_type: ipo\n  objective: orpo\n", 10, "training.loss_type", "DPO setting"),
    ("eval:\n  metric: exact_match\n", 10, "eval.metric", "preference_accuracy"),
    ("training:\n  loss_type: sideways\n", 10, "training.loss_type", "sigmoid"),
    # trl refuses exo_pair without label smoothing (the run failed after loading the model) and robust
    # without it is sigmoid; the recipe had no way to set it
    ("training:\n  loss_type: exo_pair\n", 10, "training.loss_type", "training.label_smoothing"),
    ("training:\n  loss_type: robust\n", 10, "training.loss_type", "training.label_smoothing"),
    ("training:\n  loss_type: ipo\n  label_smoothing: 0.1\n", 11, "training.label_smoothing", "exo_pair"),
    ("training:\n  loss_type: robust\n  label_smoothing: 0.5\n", 11, "training.label_smoothing", "0.5"),
])
def test_recipe_mistakes_are_located(tmp_path, body, line, key, words):
    found = problems(write(tmp_path, body))
    assert any(ln == line and path == key and words in msg for ln, path, msg in found), found


@pytest.mark.parametrize("objective,setting,key", [
    ("orpo", "precompute_ref_log_probs: true", "training.precompute_ref_log_probs"),
    (None, "precompute_ref_log_probs: false", "training.precompute_ref_log_probs"),
    (None, "loss_type: ipo", "training.loss_type"),
])
def test_reference_and_loss_settings_where_nothing_reads_them_are_located(tmp_path, objective, setting, key):
    """A pinned precompute_ref_log_probs on ORPO (no reference) or on SFT, or a DPO loss_type on an SFT
    task, was silently dropped."""
    body = "training:\n" + (f"  objective: {objective}\n" if objective else "") + f"  {setting}\n"
    path = write(tmp_path, body)
    if objective is None:
        text = open(path).read().replace("task: preference", "task: chat").replace("format: preference", "format: chat")
        open(path, "w").write(text)
    found = problems(path)
    assert any(k == key and ("no reference" in m or "DPO setting" in m) for _, k, m in found), found


def test_preference_data_needs_the_preference_task(tmp_path):
    path = write(tmp_path, "")
    text = open(path).read().replace("task: preference", "task: chat")
    open(path, "w").write(text)
    found = problems(path)
    assert any(p == "task" and "set task: preference" in m for _, p, m in found), found


def test_chat_data_cannot_train_preference(tmp_path):
    found = problems(write(tmp_path, "", fmt="chat"))
    assert any(p == "data.format" and "trains on pairs" in m for _, p, m in found), found


CHAT = [{"role": "user", "content": "my parcel is late"}]


@pytest.mark.parametrize("row,words", [
    ({"prompt": "p", "chosen": "same", "rejected": "same "}, "identical"),
    ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "'chosen' is empty"),
    ({"prompt": "p", "chosen": "a"}, "missing 'rejected'"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "'prompt' is empty"),
    ({"prompt": "p", "chosen": CHAT, "rejected": "b"}, "use one form"),
    ({"prompt": CHAT, "chosen": [{"role": "user", "content": "x"}], "rejected": "b"}, "only the assistant"),
    ({"chosen": CHAT + [{"role": "assistant", "content": "shipping"}],
      "rejected": [{"role": "user", "content": "my invoice is wrong"}, {"role": "assistant", "content": "billing"}]},
     "mismatched prompts"),
    ({"chosen": CHAT + [{"role": "assistant", "content": "a"}], "rejected": CHAT + [{"role": "assistant", "content": ""}]},
     "'rejected' is empty"),
])
def test_malformed_pairs_are_reported_with_their_line(tmp_path, row, words):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(RecipeError) as exc:
        read_records(path, "pairs.jsonl", "preference")
    assert "pairs.jsonl:2: " in exc.value.message and words in exc.value.message, exc.value.message


def test_pairs_convert_to_trl_format(tmp_path):
    whole = {"chosen": CHAT + [{"role": "assistant", "content": "shipping"}],
             "rejected": CHAT + [{"role": "assistant", "content": "billing"}]}
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (whole, {"prompt": CHAT, "chosen": "a", "rejected": "b"})))
    records = read_records(path, "pairs.jsonl", "preference")
    assert records.kind == "preference"
    assert records.rows[0] == {"prompt": CHAT, "chosen": whole["chosen"][-1:], "rejected": whole["rejected"][-1:]}
    assert records.rows[1]["chosen"] == [{"role": "assistant", "content": "a"}]
    path.write_text(json.dumps(PAIR))
    assert read_records(path, "pairs.jsonl", "preference").rows == [PAIR]


@pytest.mark.parametrize("fmt,first,second", [
    ("preference", PAIR, {"prompt": CHAT, "chosen": "a", "rejected": "b"}),
    ("preference", {"prompt": CHAT, "chosen": "a", "rejected": "b"}, PAIR),
    ("kto", {"prompt": "hi", "completion": "hello", "label": True},
     {"prompt": CHAT, "completion": "go away", "label": False}),
])
def test_plain_and_conversational_records_in_one_file_are_located(tmp_path, fmt, first, second):
    """trl (and Arrow) cannot hold a string prompt and a message-list prompt in one data set: `recipe
    run` crashed in datasets with a traceback, after validate and plan had passed."""
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    with pytest.raises(RecipeError) as exc:
        read_records(path, "pairs.jsonl", fmt)
    assert "pairs.jsonl:2: " in exc.value.message and "one form" in exc.value.message, exc.value.message
    found = problems(write(tmp_path, "", rows=(first, second), fmt=fmt,
                           ) if fmt == "preference" else write(tmp_path, "training:\n  objective: kto\n",
                                                                 rows=(first, second), fmt=fmt))
    assert any(k == "data.train" and "pairs.jsonl:2" in m and "one form" in m for _, k, m in found), found


def test_a_prompt_repeated_at_the_start_of_both_replies_is_located(tmp_path):
    """trl puts the prompt before each reply: a reply that repeats it trains on the prompt twice."""
    row = {"prompt": "Classify: my parcel is late", "chosen": "Classify: my parcel is late shipping",
           "rejected": "Classify: my parcel is late\nbilling"}
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(PAIR) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(RecipeError) as exc:
        read_records(path, "pairs.jsonl", "preference")
    assert "pairs.jsonl:2: " in exc.value.message and "repeat the prompt" in exc.value.message, exc.value.message


def test_kto_records(tmp_path):
    path = tmp_path / "kto.csv"
    path.write_text("prompt,completion,label\nhi,hello,true\nhi,go away,0\nhi,meh,maybe\n")
    with pytest.raises(RecipeError) as exc:
        read_records(path, "kto.csv", "kto")
    assert "kto.csv:4: 'label' must be true" in exc.value.message
    records = read_records(path, "kto.csv", "kto", on_error="skip")
    assert [r["label"] for r in records.rows] == [True, False]


def _plan(tmp_path, method="lora", training="", gpu="A100-80GB", task_body=None):
    body = (f"method:\n  name: {method}\ntraining:\n  max_seq_len: 1024\n  batch_size: 16\n  micro_batch_size: 4\n"
            f"  gradient_checkpointing: true\n{training}budget:\n  gpu: {gpu}\n  max_gpus: 1\n")
    return compile_file(write(tmp_path, body)).plan


def test_dpo_memory_is_sft_at_twice_the_sequences_and_no_second_model_with_an_adapter(tmp_path):
    from recipe_ft.compiler import memory
    from recipe_ft.compiler.architecture import from_config

    plan = _plan(tmp_path)
    c = plan.memory.components
    assert c["reference_weights"] == 0
    arch = from_config(plan.model.config, "llama")
    sft_double = memory.estimate(arch, memory.StepShape(method="lora", micro_batch_size=8, seq_len=1024, dropout=0.0,
                                                        attention="sdpa", gradient_checkpointing=True))
    assert plan.memory.allocated_peak_bytes == sft_double.allocated_peak_bytes
    assert plan.preference.sft_allocated_peak_bytes < plan.memory.allocated_peak_bytes
    assert "SFT at the same micro batch" in plan.preference.note


def test_full_fine_tuning_precomputes_the_reference_or_holds_a_second_model(tmp_path):
    auto = _plan(tmp_path, method="full", gpu="H100-80GB")
    assert auto.preference.reference == "precomputed" and auto.preference.precompute_ref_log_probs
    assert auto.memory.components["reference_weights"] == 0
    live = _plan(tmp_path, method="full", gpu="H100-80GB", training="  precompute_ref_log_probs: false\n")
    assert live.preference.reference == "second_model"
    assert live.memory.components["reference_weights"] == live.model.parameters * 4  # the policy's fp32 dtype
    assert live.memory.allocated_peak_bytes - auto.memory.allocated_peak_bytes == live.model.parameters * 4


def test_time_counts_both_sequences_and_the_reference_pass(tmp_path):
    from recipe_ft.compiler.architecture import from_config, parameter_count

    dpo = _plan(tmp_path)
    orpo = _plan(tmp_path, training="  objective: orpo\n")
    arch = from_config(dpo.model.config, "llama")
    assert dpo.fits and orpo.fits
    # the reference's forward, by hand: 2 x the decoder's matmul weights, the LM head, causal attention
    # over the padded length (declared 400 tokens, padded by 25% to the longest of a micro batch)
    counts = parameter_count(arch)
    attention = 2 * arch.num_layers * 400 * 1.25 * arch.num_heads * arch.head_dim
    reference = 2 * counts.decoder_linear + 2 * arch.vocab_size * arch.hidden_size + attention
    assert dpo.time.flops_per_token - orpo.time.flops_per_token == pytest.approx(reference)  # ORPO: no reference
    # chosen and rejected, 3 epochs, declared lengths padded by 25% to the longest of a micro batch
    assert dpo.time.train_tokens == orpo.time.train_tokens == 2 * 10000 * 3 * 400 * 1.25


def test_orpo_holds_full_logits(tmp_path):
    orpo = _plan(tmp_path, training="  objective: orpo\n")
    dpo = _plan(tmp_path)
    vocab = orpo.model.vocab_size
    assert orpo.memory.components["logits_and_loss"] == 2 * 4 * 1024 * vocab * (2 + 4 + 4)
    assert orpo.memory.allocated_peak_bytes > dpo.memory.allocated_peak_bytes


KTO_ROWS = ({"prompt": "hi", "completion": "hello", "label": True}, {"prompt": "hi", "completion": "go", "label": False})


def test_kto_never_plans_a_micro_batch_of_one(tmp_path):
    """KTO's KL term pairs each example with another of its micro batch: the runtime refuses a micro
    batch of 1 (after loading the model), yet the plan pinned or chose one (LoRA 8B on an L4)."""
    body = ("method:\n  name: lora\ntraining:\n  max_seq_len: 2048\n  batch_size: 16\n  micro_batch_size: 1\n"
            "budget:\n  gpu: L4\n  max_gpus: 1\n")
    found = problems(write(tmp_path, body, rows=KTO_ROWS, fmt="kto"))
    assert any(k == "training.micro_batch_size" and "KTO" in m for _, k, m in found), found
    plan = compile_file(write(tmp_path, body.replace("  micro_batch_size: 1\n", ""), rows=KTO_ROWS, fmt="kto")).plan
    assert plan.preference.objective == "kto" and plan.training.micro_batch_size >= 2

