"""`recipe demo`'s data: the held-out tickets share no record, phrasing or item with the training
tickets, so the quickstart's score after tuning measures generalisation, not recall."""

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from recipe_ft.runtime import demo  # noqa: E402
from recipe_ft.runtime.data import duplicates, read_records  # noqa: E402


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    recipe = demo.make(tmp_path_factory.mktemp("demo") / "qs")
    return recipe.parent / "data"


def users(path):
    return [json.loads(line)["messages"][1]["content"] for line in path.read_text().splitlines()]


def test_held_out_and_training_share_no_record(written):
    train = read_records(written / "train.jsonl", "train.jsonl", "chat").rows
    held = read_records(written / "eval.jsonl", "eval.jsonl", "chat").rows
    assert len(train) == 320 and len(held) == 40
    assert duplicates(train, held) == 0
    assert set(users(written / "train.jsonl")).isdisjoint(users(written / "eval.jsonl"))


def test_held_out_wording_and_items_never_occur_in_training(written):
    train_text = "\n".join(users(written / "train.jsonl"))
    held_text = "\n".join(users(written / "eval.jsonl"))
    for item in demo.HELD_OUT["items"]:
        assert item not in train_text, item
    for item in demo.TRAIN["items"]:
        assert item not in held_text, item
    for topics in demo.HELD_OUT["topics"].values():
        for topic in topics:
            assert topic not in train_text, topic
    for frame in demo.HELD_OUT["frames"]:
        for fixed in frame.replace("{item}", "{topic}").split("{topic}"):
            if len(fixed.strip(" ,.:?()")) > 3:
                assert fixed not in train_text, (frame, fixed)
    for words in ("openers", "closers"):
        for word in demo.HELD_OUT[words]:
            assert word not in train_text, word
    # the held-out set covers what it tests: every label, mostly distinct tickets
    labels = [json.loads(line)["messages"][-1]["content"] for line in (written / "eval.jsonl").read_text().splitlines()]
    assert set(labels) == set(demo.LABELS)
    assert len(set(users(written / "eval.jsonl"))) >= 30


def test_frames_do_not_give_the_label_away():
    """Every frame, item, opener and closer is used with every label: only the topic decides it."""
    for space in (demo.TRAIN, demo.HELD_OUT):
        rows = demo.tickets(400, 1, space)
        for frame in space["frames"]:
            head = frame.split("{")[0]
            if head.strip():
                labels = {r["messages"][-1]["content"] for r in rows if head in r["messages"][1]["content"]}
                assert labels == set(demo.LABELS), frame


def test_preference_demo_held_out_pairs_share_no_prompt_with_training():
    """`recipe demo preference` draws its held-out pairs from the held-out half of the ticket space too."""
    from recipe_ft.runtime import preference_demo

    train = preference_demo.pairs(160, 7, demo.TRAIN)
    held = preference_demo.pairs(48, 8, demo.HELD_OUT)
    prompts = lambda rows: {r["prompt"][-1]["content"] for r in rows}  # noqa: E731
    assert prompts(train).isdisjoint(prompts(held))
    items = list(demo.TRAIN["items"])
    assert not any(item in text for text in prompts(held) for item in items)
