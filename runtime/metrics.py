"""Scores of generated outputs against references. Pure Python.

- exact_match: the share of predictions equal to their reference after normalisation (case,
  surrounding whitespace and punctuation, inner whitespace collapsed).
- accuracy and macro_f1 (classification): labels are the normalised references; a per-class table
  (precision, recall, F1, support) and a confusion matrix (reference x prediction; predictions that
  are no label count as "(other)").
- token_f1: SQuAD-style bag-of-tokens F1, averaged over examples.
- json_fields: the valid-JSON rate and field-level precision, recall and F1 over flattened key paths
  (a field counts as right when its path and value both match); with a JSON Schema, the share of
  outputs that satisfy it.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Any, Optional

OTHER = "(other)"
_PUNCT = string.punctuation + "“”‘’"


def normalise(text: str) -> str:
    return " ".join(text.strip().strip(_PUNCT + " \n\t").lower().split())


def exact_match(predictions: list[str], references: list[str]) -> dict:
    hits = [normalise(p) == normalise(r) for p, r in zip(predictions, references)]
    return {"score": sum(hits) / len(hits) if hits else 0.0, "correct": sum(hits), "total": len(hits)}


def classification(predictions: list[str], references: list[str]) -> dict:
    """Accuracy, macro F1, per-class table and confusion matrix; labels from the references."""
    refs = [normalise(r) for r in references]
    labels = sorted(set(refs))
    preds = [normalise(p) if normalise(p) in labels else OTHER for p in predictions]
    columns = labels + ([OTHER] if OTHER in preds else [])
    confusion = {r: {c: 0 for c in columns} for r in labels}
    for r, p in zip(refs, preds):
        confusion[r][p] += 1
    per_class = {}
    for label in labels:
        tp = confusion[label][label]
        predicted = sum(confusion[r][label] for r in labels)
        actual = sum(confusion[label].values())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    accuracy = sum(r == p for r, p in zip(refs, preds)) / len(refs) if refs else 0.0
    macro = sum(c["f1"] for c in per_class.values()) / len(per_class) if per_class else 0.0
    return {"accuracy": accuracy, "macro_f1": macro, "per_class": per_class, "confusion": confusion,
            "labels": labels}


def _tokens(text: str) -> list[str]:
    return normalise(re.sub(f"[{re.escape(_PUNCT)}]", " ", text)).split()


def token_f1(predictions: list[str], references: list[str]) -> dict:
    scores = []
    for p, r in zip(predictions, references):
        pt, rt = _tokens(p), _tokens(r)
        if not pt and not rt:
            scores.append(1.0)
            continue
        common = sum((Counter(pt) & Counter(rt)).values())
        if common == 0:
            scores.append(0.0)
            continue
        precision, recall = common / len(pt), common / len(rt)
        scores.append(2 * precision * recall / (precision + recall))
    return {"score": sum(scores) / len(scores) if scores else 0.0, "total": len(scores)}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _parse(text: str) -> tuple[bool, Any]:
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`").split("\n", 1)[-1] if "\n" in text else text.strip("`")
    try:
        return True, json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return False, None


def json_fields(predictions: list[str], references: list[str], schema: Optional[dict] = None) -> dict:
    valid = tp = n_pred = n_ref = 0
    conforming = 0
    for p, r in zip(predictions, references):
        ok_ref, ref = _parse(r)
        ref_fields = _flatten(ref) if ok_ref else {}
        n_ref += len(ref_fields)
        ok, pred = _parse(p)
        if not ok:
            continue
        valid += 1
        pred_fields = _flatten(pred)
        n_pred += len(pred_fields)
        tp += sum(1 for k, v in pred_fields.items() if k in ref_fields and ref_fields[k] == v)
        if schema is not None and conforms(pred, schema):
            conforming += 1
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = len(predictions)
    out = {"score": f1, "valid_json_rate": valid / total if total else 0.0, "precision": precision,
           "recall": recall, "f1": f1, "total": total}
    if schema is not None:
        out["schema_conformance"] = conforming / total if total else 0.0
    return out


def conforms(value: Any, schema: dict) -> bool:
    try:
        import jsonschema
    except ImportError:  # the [train] extra brings it; without it only validity is measured
        raise RuntimeError("eval.json_schema needs the jsonschema package: pip install jsonschema") from None
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def compute_metric(metric: str, predictions: list[str], references: list[str], schema: Optional[dict] = None) -> dict:
    """All the figures for a metric; its `score` is the one the quality gate compares with min_score."""
    if metric == "exact_match":
        return exact_match(predictions, references)
    if metric in ("accuracy", "macro_f1"):
        result = classification(predictions, references)
        result["score"] = result[metric]
        return result
    if metric == "token_f1":
        return token_f1(predictions, references)
    if metric == "json_fields":
        return json_fields(predictions, references, schema)
    raise ValueError(metric)
