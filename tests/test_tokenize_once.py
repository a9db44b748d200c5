"""`recipe run` tokenizes once: the truncation counts come from trl's own tokenization, and the dataset
trl trains on is exactly the one plain SFTTrainer makes (same tokens, same masked labels)."""

import json

import pytest

pytest.importorskip("trl")

from recipe_ft.runtime import demo, tokenized  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    recipe = demo.make(tmp_path_factory.mktemp("demo") / "qs", train_examples=24, eval_examples=4, epochs=1)
    return recipe.parent


def _rows(project):
    return [json.loads(line) for line in (project / "data" / "train.jsonl").read_text().splitlines() if line.strip()]


def _trainers(project, rows, tmp_path, max_length, **config):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(project / "tiny-llama")
    calls = []
    real = tok.apply_chat_template

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    built = {}
    for name, cls in (("plain", SFTTrainer), ("counting", tokenized.counting_trainer())):
        model = AutoModelForCausalLM.from_pretrained(project / "tiny-llama")
        args = SFTConfig(output_dir=str(tmp_path / name), use_cpu=True, report_to="none", max_length=max_length,
                         per_device_train_batch_size=2, **config)
        calls.clear()
        tok.apply_chat_template = counted
        built[name] = (cls(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok),
                       len(calls))
        tok.apply_chat_template = real
    return built, tok


def _columns(trainer):
    ds = trainer.train_dataset
    return ds["input_ids"], ds["labels"] if "labels" in ds.column_names else None


def test_messages_masks_and_counts(tiny, tmp_path):
    from transformers import AutoTokenizer

    rows = _rows(tiny)
    tok = AutoTokenizer.from_pretrained(tiny / "tiny-llama")
    full = [len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]) for r in rows]
    limit = sorted(full)[len(full) // 2]  # about half are longer
    built, tok = _trainers(tiny, rows, tmp_path, limit, assistant_only_loss=True)
    (plain, plain_calls), (counting, calls) = built["plain"], built["counting"]
    assert _columns(counting) == _columns(plain)  # the same tokens and the same assistant-only labels
    assert counting.token_counts["train"] == (len(rows), sum(n > limit for n in full))
    assert 0 < counting.token_counts["train"][1] < len(rows)  # the test truncates some, not all
    assert calls == plain_calls <= len(rows) + 1  # each example through the chat template once, as plain trl


def test_prompt_completion_masks(tiny, tmp_path):
    rows = [{"prompt": f"Classify ticket {i}: " + "words " * (i % 9), "completion": " billing"} for i in range(12)]
    built, tok = _trainers(tiny, rows, tmp_path, 12, completion_only_loss=True)
    (plain, _), (counting, _) = built["plain"], built["counting"]
    assert _columns(counting) == _columns(plain)
    full = [len(tok(r["prompt"] + r["completion"] + tok.eos_token)["input_ids"]) for r in rows]
    assert 0 < sum(n > 12 for n in full) < len(rows)
    assert counting.token_counts["train"] == (len(rows), sum(n > 12 for n in full))


def test_workers_only_with_cores_and_rows(monkeypatch):
    monkeypatch.setattr(tokenized.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert tokenized.workers(100) is None and tokenized.workers(100_000) == tokenized.MAX_WORKERS
    monkeypatch.setattr(tokenized.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert tokenized.workers(100_000) is None
