"""Catalog data files and their loaders (recipe_ft.compiler.catalogs)."""

from __future__ import annotations

import ast
import csv
import sys
from pathlib import Path

import pytest

from recipe_ft.compiler import catalogs

DATA = Path(catalogs.__file__).resolve().parent / "data"

REQUIRED_GPUS = [
    "T4", "L4", "A10G", "A10", "RTX-3090", "RTX-4090", "RTX-5090", "L40S", "RTX-A6000",
    "A100-40GB", "A100-80GB", "A100-80GB-PCIE", "H100-80GB", "H100-80GB-PCIE", "H200", "B200", "MI300X",
]


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------- GPUs


def test_required_gpus_present():
    names = catalogs.gpu_names()
    for name in REQUIRED_GPUS:
        assert name in names
    assert len(names) == len(set(names))
    assert list(catalogs.gpus()) == names


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_every_gpu_parses_with_positive_figures(name):
    gpu = catalogs.gpus()[name]
    assert gpu.memory_bytes > 0
    assert gpu.fp16_tflops > 0
    assert gpu.bandwidth_gbs > 0
    assert gpu.training_tflops > 0
    assert gpu.source and gpu.as_of and gpu.arch
    if gpu.bf16_supported:
        assert gpu.bf16_tflops is not None and gpu.bf16_tflops > 0
    else:
        assert gpu.bf16_tflops is None
    # visible memory never exceeds the marketed capacity (GB = 1e9 bytes)
    assert gpu.memory_bytes <= gpu.marketed_memory_gb * 1e9 * 1.08


def test_t4_has_no_bf16():
    t4 = catalogs.gpus()["T4"]
    assert t4.bf16_supported is False
    assert t4.bf16_tflops is None
    assert t4.training_dtype == "fp16"
    assert t4.training_tflops == t4.fp16_tflops == 65


def test_usable_memory_choices():
    g = catalogs.gpus()
    assert g["A100-80GB"].memory_bytes == 81920 * 2**20
    assert g["H100-80GB"].memory_bytes == 81920 * 2**20
    assert g["A100-40GB"].memory_bytes == 40960 * 2**20
    assert g["L4"].memory_bytes == 22888 * 2**20
    assert g["A10G"].memory_bytes == 22888 * 2**20
    assert g["L40S"].memory_bytes == 45776 * 2**20
    assert g["H200"].memory_bytes == 144384 * 2**20
    assert g["B200"].memory_bytes == 183359 * 2**20
    assert g["T4"].memory_gib == 15


def test_gpu_records_are_frozen_and_dicts_are_copies():
    table = catalogs.gpus()
    table.pop("T4")
    assert "T4" in catalogs.gpus()
    with pytest.raises(Exception):
        catalogs.gpus()["L4"].memory_bytes = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "alias, expected",
    [
        ("a100-80gb", "A100-80GB"),
        ("A100 80GB SXM", "A100-80GB"),
        ("A100-80GB (SXM)", "A100-80GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("a100_40gb", "A100-40GB"),
        ("A100 80GB PCIe", "A100-80GB-PCIE"),
        ("h100", "H100-80GB"),
        ("H100-80GB", "H100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),
        ("h100 pcie", "H100-80GB-PCIE"),
        ("Tesla T4", "T4"),
        ("nvidia-tesla-t4", "T4"),
        ("NVIDIA L4", "L4"),
        ("a10g", "A10G"),
        ("A10", "A10"),
        ("rtx 4090", "RTX-4090"),
        ("NVIDIA GeForce RTX 3090", "RTX-3090"),
        ("rtxa6000", "RTX-A6000"),
        ("l40s", "L40S"),
        ("mi300x", "MI300X"),
        ("AMD Instinct MI300X", "MI300X"),
    ],
)
def test_alias_lookup(alias, expected):
    gpu = catalogs.find_gpu(alias)
    assert gpu is not None, alias
    assert gpu.name == expected


@pytest.mark.parametrize("name", ["", "H100 NVL", "V100", "A200", "TPU-v5e"])
def test_unknown_gpu_is_none(name):
    assert catalogs.find_gpu(name) is None


def test_aliases_do_not_collide():
    seen: dict[str, str] = {}
    for gpu in catalogs.gpus().values():
        for alias in (gpu.name, *gpu.aliases):
            key = catalogs._gpu_key(alias)
            assert seen.setdefault(key, gpu.name) == gpu.name, alias


# --------------------------------------------------------------------------- prices


def test_every_price_row_names_a_catalog_gpu():
    names = set(catalogs.gpu_names())
    rows = _rows("gpu_prices.csv")
    assert rows
    for row in rows:
        assert row["gpu"] in names, row
        assert row["source"] and row["as_of"], row
    assert len(catalogs.prices()) == len(rows)


def test_price_rows_positive():
    for p in catalogs.prices():
        assert p.usd_per_gpu_hour is None or p.usd_per_gpu_hour > 0
        assert p.spot_usd_per_gpu_hour is None or p.spot_usd_per_gpu_hour > 0
        assert p.gpus_per_instance >= 1


def test_gcp_t4_l4_rows_are_gpu_only():
    flagged = {(p.gpu, p.provider) for p in catalogs.prices() if p.gpu_only}
    assert flagged == {("T4", "gcp"), ("L4", "gcp")}


@pytest.mark.parametrize("spot", [False, True])
def test_cheapest_price_is_minimum_complete_row(spot):
    for name in catalogs.gpu_names():
        rows = catalogs.prices_for(name, spot=spot)
        values = [p.hourly(spot) for p in rows]
        assert values == sorted(values)
        assert all(v is not None for v in values)
        best = catalogs.cheapest_price(name, spot=spot)
        if not rows:
            assert best is None
            continue
        complete = [p for p in rows if not p.gpu_only] or rows
        assert best is not None
        assert best.hourly(spot) == min(p.hourly(spot) for p in complete)


def test_cheapest_price_known_values():
    h100 = catalogs.cheapest_price("H100-80GB")
    assert (h100.provider, h100.usd_per_gpu_hour) == ("runpod", 2.99)
    assert catalogs.cheapest_price("h100", provider="aws").usd_per_gpu_hour == 6.88
    # GCP T4 at 0.35 is GPU-only, so it loses to the complete AWS/Azure rows
    t4 = catalogs.cheapest_price("T4")
    assert t4.usd_per_gpu_hour == 0.526 and not t4.gpu_only
    # ... but is used when it is all there is
    assert catalogs.cheapest_price("T4", provider="gcp").gpu_only
    assert catalogs.cheapest_price("T4", spot=True).spot_usd_per_gpu_hour == 0.0627


def test_rows_without_price_are_excluded():
    # RunPod A100-80GB-SXM has no spot price
    assert all(p.provider != "runpod" for p in catalogs.prices_for("A100-80GB", spot=True))
    assert catalogs.prices_for("H200", provider="nobody") == []
    assert catalogs.prices_for("not-a-gpu") == []
    assert catalogs.cheapest_price("not-a-gpu") is None


# --------------------------------------------------------------------------- API prices


def test_api_gpt4o():
    p = catalogs.find_api_model("gpt-4o")
    assert (p.input_usd_per_mtok, p.output_usd_per_mtok) == (2.5, 10)
    assert catalogs.api_prices()["gpt-4o"] == p


def test_api_lookup_variants():
    assert catalogs.find_api_model("GPT-4o-mini").output_usd_per_mtok == 0.6
    assert catalogs.find_api_model("openai/gpt-4.1").input_usd_per_mtok == 2
    assert catalogs.find_api_model("gpt-4o-2024-05-13").input_usd_per_mtok == 5  # own dated price
    assert catalogs.find_api_model("gpt-4o-2024-11-20").model == "gpt-4o"  # date dropped
    assert catalogs.find_api_model("claude-haiku-4-5-20251001").model == "claude-haiku-4-5"
    assert catalogs.find_api_model("claude-sonnet-4-5").model == "claude-sonnet-4-5-20250929"
    assert catalogs.find_api_model("claude-3.5-sonnet").retired
    assert catalogs.find_api_model("ft:gpt-4o-mini-2024-07-18:acme::abc123").output_usd_per_mtok == 1.2
    assert catalogs.find_api_model("claude-opus-4-6").output_usd_per_mtok == 25
    assert catalogs.find_api_model("no-such-model") is None
    assert catalogs.find_api_model("") is None


def test_api_rows_have_source_and_date():
    for p in catalogs.api_prices().values():
        assert p.source and p.as_of
        assert p.input_usd_per_mtok > 0 and p.output_usd_per_mtok > 0


# --------------------------------------------------------------------------- serving


def test_serving_rows():
    rows = catalogs.serving_rows()
    assert rows
    names = set(catalogs.gpu_names())
    kinds = {"measured", "derived", "secondary", "vendor_upper_bound", "aggregator"}
    for r in rows:
        assert r.gpu in names
        assert r.output_tok_s > 0 and r.num_gpus >= 1 and r.params_b > 0
        assert r.kind in kinds
        assert r.source and r.date


# --------------------------------------------------------------------------- versions, purity


def test_catalog_versions_stable():
    v1 = catalogs.catalog_versions()
    v2 = catalogs.catalog_versions()
    assert v1 == v2
    for name in ("gpus.csv", "gpu_prices.csv", "api_prices.csv", "serving.csv"):
        assert len(v1[name]) == 12
        int(v1[name], 16)
    v1["gpus.csv"] = "mutated"
    assert catalogs.catalog_versions()["gpus.csv"] != "mutated"


def test_catalog_versions_is_content_hash():
    import hashlib

    data = (DATA / "gpus.csv").read_bytes()
    assert catalogs.catalog_versions()["gpus.csv"] == hashlib.sha256(data).hexdigest()[:12]


def test_catalogs_imports_only_stdlib():
    tree = ast.parse(Path(catalogs.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: must stay inside the compiler package (checked by running it)
                continue
            tops = [(node.module or "").split(".")[0]]
        else:
            continue
        for top in tops:
            assert top == "__future__" or top in sys.stdlib_module_names, top


def test_catalogs_does_not_read_shared():
    text = Path(catalogs.__file__).read_text(encoding="utf-8")
    assert "shared/reference" not in text and "../shared" not in text
