"""Metrics on known inputs, against values computed by hand."""

import pytest

from recipe_ft.runtime import metrics


def test_exact_match_normalises_case_space_and_punctuation():
    r = metrics.exact_match(["Billing.", "  bug ", "account", "ship ping"], ["billing", "Bug", "shipping", "shipping"])
    assert r == {"score": 0.5, "correct": 2, "total": 4}


def test_classification_table_and_confusion():
    refs = ["a", "a", "a", "b", "b", "c"]
    preds = ["a", "a", "b", "b", "x", "c"]
    r = metrics.classification(preds, refs)
    # a: tp 2, predicted 2, actual 3 -> P 1, R 2/3, F1 0.8
    # b: tp 1, predicted 2, actual 2 -> P 0.5, R 0.5, F1 0.5
    # c: tp 1, predicted 1, actual 1 -> F1 1
    assert r["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert r["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["confusion"]["b"] == {"a": 0, "b": 1, "c": 0, "(other)": 1}
    assert r["confusion"]["a"]["b"] == 1


def test_score_dispatch_for_the_gate():
    assert metrics.compute_metric("accuracy", ["a", "b"], ["a", "a"])["score"] == 0.5
    assert metrics.compute_metric("macro_f1", ["a", "b"], ["a", "b"])["score"] == 1.0


def test_token_f1():
    # "the cat sat" vs "the cat sat down": common 3, P 3/3, R 3/4 -> F1 6/7
    r = metrics.token_f1(["the cat sat", "dog"], ["The cat sat down.", "cat"])
    assert r["score"] == pytest.approx((6 / 7 + 0) / 2)


def test_json_fields():
    refs = ['{"vendor": "Acme", "total": 10, "lines": [{"sku": "A"}]}', '{"vendor": "B", "total": 2}']
    preds = ['{"vendor": "Acme", "total": 11, "lines": [{"sku": "A"}], "extra": 1}', "not json"]
    r = metrics.json_fields(preds, refs)
    # ref fields 3 + 2 = 5; predicted fields 4 (only the valid one); right: vendor, lines[0].sku = 2
    assert r["valid_json_rate"] == 0.5
    assert r["precision"] == pytest.approx(2 / 4) and r["recall"] == pytest.approx(2 / 5)
    assert r["f1"] == pytest.approx(2 * 0.5 * 0.4 / 0.9) and r["score"] == r["f1"]


def test_json_schema_conformance():
    pytest.importorskip("jsonschema")
    schema = {"type": "object", "required": ["vendor"], "properties": {"total": {"type": "number"}}}
    r = metrics.json_fields(['{"vendor": "a", "total": 1}', '{"total": "x"}', "nope"], ["{}", "{}", "{}"], schema)
    assert r["schema_conformance"] == pytest.approx(1 / 3)
