"""Hardware, price and API-price catalogs, loaded from the CSV files in ``data/``.

Every figure lives in a data file next to this module, one row per fact with its
``source`` and date; nothing here reads outside the package. The files were copied
from the project's shared reference tables (see each row's ``source``).

Conventions
-----------
* GPU names are canonical short names (``A100-80GB``, ``H100-80GB``, ``L4`` ...).
  ``find_gpu`` accepts any alias, case-insensitively, ignoring spaces, dashes,
  underscores, dots, slashes and parentheses; a leading vendor word (``NVIDIA``,
  ``Tesla``, ``GeForce``, ``AMD``) may be dropped. A bare ``A100`` means the 80 GB
  SXM part and a bare ``H100`` the 80 GB SXM part.
* ``GPU.memory_bytes`` is the conservative *visible* memory (what a cloud catalog
  or nvidia-smi reports), not the marketed capacity: L4/A10G/A10 = 22888 MiB,
  T4 = 15 GiB, L40S = 45776 MiB, B200 = 183359 MiB. ``torch`` reports a little
  less again (the CUDA context), so callers should keep their own headroom.
* ``bf16_tflops`` is ``None`` where the GPU has no BF16 (T4); ``training_tflops``
  gives the dense tensor rate of the mixed-precision dtype the GPU would train in.
* Prices are USD per GPU-hour; a row with ``gpus_per_instance`` above 1 is an
  instance rented whole (see ``compiler.rental``). Rows flagged ``gpu_only`` (GCP T4 and L4) price the
  accelerator alone, without the host VM that must be added, so
  ``cheapest_price`` skips them unless a GPU has no other row; ``prices_for``
  lists them, flagged. Rows without the requested kind of price (on-demand or
  spot) are left out of both.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"

GPUS_FILE = "gpus.csv"
PRICES_FILE = "gpu_prices.csv"
API_PRICES_FILE = "api_prices.csv"
SERVING_FILE = "serving.csv"

__all__ = [
    "ApiPrice",
    "CatalogError",
    "GPU",
    "Price",
    "ServingRow",
    "api_prices",
    "catalog_versions",
    "cheapest_price",
    "find_api_model",
    "find_gpu",
    "gpu_names",
    "gpus",
    "prices",
    "prices_for",
    "rentable_prices",
    "serving_rows",
]


class CatalogError(ValueError):
    """A data file next to this module is missing or malformed (a packaging bug)."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class GPU:
    name: str
    aliases: tuple[str, ...]
    memory_bytes: int
    bf16_supported: bool
    bf16_tflops: float | None  # dense tensor TFLOPS; None when BF16 is unsupported
    fp16_tflops: float  # dense tensor TFLOPS (FP32 accumulate on GeForce cards)
    bandwidth_gbs: float
    nvlink: bool  # full NVLink / NVSwitch between all GPUs of a node (not a 2-way bridge)
    arch: str
    source: str
    fp8_tflops: float | None = None
    marketed_memory_gb: float | None = None
    interconnect: str = ""  # "yes" | "bridge" | "no" as in the file, plus detail
    memory_note: str = ""
    as_of: str = ""

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30

    @property
    def training_dtype(self) -> str:
        """The mixed-precision dtype a run on this GPU uses: ``bf16`` or ``fp16``."""
        return "bf16" if self.bf16_supported else "fp16"

    @property
    def training_tflops(self) -> float:
        """Dense tensor TFLOPS in ``training_dtype``."""
        if self.bf16_supported and self.bf16_tflops is not None:
            return self.bf16_tflops
        return self.fp16_tflops


@dataclass(frozen=True)
class Price:
    gpu: str
    provider: str
    instance: str
    usd_per_gpu_hour: float | None
    spot_usd_per_gpu_hour: float | None
    region: str
    source: str
    as_of: str
    gpus_per_instance: int = 1
    gpu_only: bool = False  # price covers the accelerator only; a host VM must be added

    def hourly(self, spot: bool = False) -> float | None:
        """USD per GPU-hour, on-demand or spot; ``None`` when the row has no such price."""
        return self.spot_usd_per_gpu_hour if spot else self.usd_per_gpu_hour


@dataclass(frozen=True)
class ApiPrice:
    model: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    source: str
    as_of: str
    retired: bool = False
    aliases: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class ServingRow:
    """A published serving-throughput figure (tokens/s for one replica)."""

    model: str
    params_b: float
    gpu: str  # canonical GPU name
    num_gpus: int
    engine: str
    engine_version: str
    precision: str
    workload: str
    concurrency: str  # as published: "1", "32", "256", "default (max batch)", "n/a" ...
    output_tok_s: float
    input_tok_s: float | None
    kind: str  # measured | derived | secondary | vendor_upper_bound | aggregator
    source: str
    date: str
    notes: str
    gpu_as_published: str = ""

    @property
    def concurrency_int(self) -> int | None:
        return int(self.concurrency) if self.concurrency.isdigit() else None


# --------------------------------------------------------------------------- reading


def _read(filename: str) -> list[tuple[int, dict[str, str]]]:
    path = DATA_DIR / filename
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return [(i, {k: (v or "").strip() for k, v in row.items()}) for i, row in enumerate(reader, 2)]
    except FileNotFoundError as exc:
        raise CatalogError(f"catalog file missing: {path}") from exc


def _num(row: dict[str, str], key: str, where: str, *, required: bool = True) -> float | None:
    text = row.get(key, "")
    if text == "":
        if required:
            raise CatalogError(f"{where}: column {key!r} is empty")
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise CatalogError(f"{where}: column {key!r} is not a number: {text!r}") from exc
    if value < 0:
        raise CatalogError(f"{where}: column {key!r} is negative: {text!r}")
    return value


def _flag(row: dict[str, str], key: str, where: str) -> bool:
    text = row.get(key, "").lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0", ""):
        return False
    raise CatalogError(f"{where}: column {key!r} must be yes/no, got {text!r}")


def _aliases(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(";") if a.strip())


# --------------------------------------------------------------------------- GPUs

_GPU_NOISE = re.compile(r"[\s\-_./()]+")
_VENDOR_PREFIXES = ("nvidia", "tesla", "geforce", "amdinstinct", "amd", "instinct")


def _gpu_key(name: str) -> str:
    return _GPU_NOISE.sub("", name).lower()


@functools.lru_cache(maxsize=None)
def _gpu_table() -> tuple[tuple[GPU, ...], dict[str, str]]:
    table: list[GPU] = []
    index: dict[str, str] = {}
    for line, row in _read(GPUS_FILE):
        where = f"{GPUS_FILE}:{line}"
        name = row["name"]
        if not name:
            raise CatalogError(f"{where}: empty GPU name")
        bf16 = _flag(row, "bf16_supported", where)
        nvlink_text = row.get("nvlink", "").lower()
        if nvlink_text not in ("yes", "no", "bridge"):
            raise CatalogError(f"{where}: nvlink must be yes/no/bridge, got {nvlink_text!r}")
        gib = _num(row, "memory_gib", where)
        gpu = GPU(
            name=name,
            aliases=_aliases(row.get("aliases", "")),
            memory_bytes=int(round(gib * 2**30)),
            bf16_supported=bf16,
            bf16_tflops=_num(row, "bf16_tflops_dense", where, required=bf16),
            fp16_tflops=_num(row, "fp16_tflops_dense", where),
            bandwidth_gbs=_num(row, "bandwidth_gbs", where),
            nvlink=nvlink_text == "yes",
            arch=row.get("arch", ""),
            source=row.get("source", ""),
            fp8_tflops=_num(row, "fp8_tflops_dense", where, required=False),
            marketed_memory_gb=_num(row, "marketed_memory_gb", where, required=False),
            interconnect=f"{nvlink_text}: {row.get('interconnect', '')}".rstrip(": "),
            memory_note=row.get("memory_note", ""),
            as_of=row.get("as_of", ""),
        )
        if not bf16 and gpu.bf16_tflops:
            raise CatalogError(f"{where}: bf16 TFLOPS given for a GPU without BF16")
        for alias in (name, *gpu.aliases):
            key = _gpu_key(alias)
            owner = index.get(key)
            if owner is not None and owner != name:
                raise CatalogError(f"{where}: alias {alias!r} already names {owner}")
            index[key] = name
        table.append(gpu)
    return tuple(table), index


def gpus() -> dict[str, GPU]:
    """Canonical name -> GPU, in file order (a fresh dict; the records are frozen)."""
    return {g.name: g for g in _gpu_table()[0]}


def gpu_names() -> list[str]:
    """Canonical GPU names in file order."""
    return [g.name for g in _gpu_table()[0]]


def find_gpu(name: str) -> GPU | None:
    """The GPU a user-written name or alias refers to, or ``None``."""
    if not name:
        return None
    table, index = _gpu_table()
    key = _gpu_key(name)
    canonical = index.get(key)
    if canonical is None:
        for prefix in _VENDOR_PREFIXES:
            if key.startswith(prefix) and key[len(prefix):] in index:
                canonical = index[key[len(prefix):]]
                break
    if canonical is None:
        return None
    return next(g for g in table if g.name == canonical)


# --------------------------------------------------------------------------- prices


@functools.lru_cache(maxsize=None)
def _price_table() -> tuple[Price, ...]:
    known = set(gpu_names())
    rows: list[Price] = []
    for line, row in _read(PRICES_FILE):
        where = f"{PRICES_FILE}:{line}"
        if row["gpu"] not in known:
            raise CatalogError(f"{where}: GPU {row['gpu']!r} is not in {GPUS_FILE}")
        per_instance = _num(row, "gpus_per_instance", where, required=False)
        rows.append(
            Price(
                gpu=row["gpu"],
                provider=row["provider"],
                instance=row["instance"],
                usd_per_gpu_hour=_num(row, "usd_per_gpu_hour", where, required=False),
                spot_usd_per_gpu_hour=_num(row, "spot_usd_per_gpu_hour", where, required=False),
                region=row.get("region", ""),
                source=row.get("source", ""),
                as_of=row.get("as_of", ""),
                gpus_per_instance=int(per_instance) if per_instance else 1,
                gpu_only=_flag(row, "gpu_only", where),
            )
        )
    return tuple(rows)


def prices() -> list[Price]:
    """Every price row, in file order."""
    return list(_price_table())


def prices_for(gpu_name: str, provider: str | None = None, spot: bool = False) -> list[Price]:
    """Price rows for a GPU (any alias), cheapest first by the requested kind of price.

    Rows that lack that kind of price are left out; GPU-only rows are kept (see
    ``Price.gpu_only``). Ties sort by provider, then instance, for a stable order.
    """
    gpu = find_gpu(gpu_name)
    if gpu is None:
        return []
    wanted = provider.lower() if provider else None
    rows = [
        p
        for p in _price_table()
        if p.gpu == gpu.name and p.hourly(spot) is not None and (wanted is None or p.provider.lower() == wanted)
    ]
    return sorted(rows, key=lambda p: (p.hourly(spot), p.provider, p.instance))


def rentable_prices(gpu_name: str, provider: str | None = None, spot: bool = False) -> list[Price]:
    """The rows a plan may rent a GPU from, cheapest per GPU-hour first.

    GPU-only rows (no host VM in the price) are left out when any complete row
    exists; they are kept only when nothing else does.
    """
    rows = prices_for(gpu_name, provider=provider, spot=spot)
    return [p for p in rows if not p.gpu_only] or rows


def cheapest_price(gpu_name: str, provider: str | None = None, spot: bool = False) -> Price | None:
    """The cheapest complete price per GPU-hour for a GPU, or ``None`` when there is none.

    GPU-only rows (no host VM in the price) lose to any complete row even when
    they are cheaper; they are returned only when nothing else exists. The row
    may be an instance of several GPUs rented whole: a plan prices N GPUs with
    ``compiler.rental.cheapest`` over ``rentable_prices``, not with this.
    """
    rows = rentable_prices(gpu_name, provider=provider, spot=spot)
    return rows[0] if rows else None


# --------------------------------------------------------------------------- API prices

_DATE_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


def _api_key(name: str) -> str:
    return name.strip().lower().replace(".", "-").replace("_", "-").replace(" ", "")


@functools.lru_cache(maxsize=None)
def _api_table() -> tuple[tuple[ApiPrice, ...], dict[str, str]]:
    rows: list[ApiPrice] = []
    index: dict[str, str] = {}
    for line, row in _read(API_PRICES_FILE):
        where = f"{API_PRICES_FILE}:{line}"
        price = ApiPrice(
            model=row["model"],
            input_usd_per_mtok=_num(row, "input_usd_per_mtok", where),
            output_usd_per_mtok=_num(row, "output_usd_per_mtok", where),
            source=row.get("source", ""),
            as_of=row.get("as_of", ""),
            retired=_flag(row, "retired", where),
            aliases=_aliases(row.get("aliases", "")),
            notes=row.get("notes", ""),
        )
        for alias in (price.model, *price.aliases):
            key = _api_key(alias)
            owner = index.get(key)
            if owner is not None and owner != price.model:
                raise CatalogError(f"{where}: model name {alias!r} already names {owner}")
            index[key] = price.model
        rows.append(price)
    return tuple(rows), index


def api_prices() -> dict[str, ApiPrice]:
    """Model id -> API price (a fresh dict; the records are frozen)."""
    return {p.model: p for p in _api_table()[0]}


def find_api_model(name: str) -> ApiPrice | None:
    """The API price for a model id, or ``None``.

    Case-insensitive; dots and dashes are interchangeable; a provider prefix
    (``openai/``, ``anthropic/`` ...) is dropped; a fine-tuned id
    ``ft:BASE:org::id`` resolves to ``ft:BASE``; a trailing release date
    (``-20251001``, ``-2024-11-20``) is dropped when the dated id itself is not
    listed (so ``gpt-4o-2024-05-13`` keeps its own, older price).
    """
    if not name:
        return None
    table, index = _api_table()
    text = name.strip()
    if text.lower().startswith("ft:"):
        text = ":".join(text.split(":")[:2])
    else:
        text = text.rsplit("/", 1)[-1]
    key = _api_key(text)
    model = index.get(key)
    if model is None:
        undated = _DATE_SUFFIX.sub("", key)
        if undated != key:
            model = index.get(undated)
    if model is None:
        return None
    return next(p for p in table if p.model == model)


# --------------------------------------------------------------------------- serving


@functools.lru_cache(maxsize=None)
def _serving_table() -> tuple[ServingRow, ...]:
    known = set(gpu_names())
    rows: list[ServingRow] = []
    for line, row in _read(SERVING_FILE):
        where = f"{SERVING_FILE}:{line}"
        if row["gpu"] not in known:
            raise CatalogError(f"{where}: GPU {row['gpu']!r} is not in {GPUS_FILE}")
        rows.append(
            ServingRow(
                model=row["model"],
                params_b=_num(row, "params_b", where),
                gpu=row["gpu"],
                num_gpus=int(_num(row, "num_gpus", where)),
                engine=row.get("engine", ""),
                engine_version=row.get("engine_version", ""),
                precision=row.get("precision", ""),
                workload=row.get("workload", ""),
                concurrency=row.get("concurrency", ""),
                output_tok_s=_num(row, "output_tok_s", where),
                input_tok_s=_num(row, "input_tok_s", where, required=False),
                kind=row.get("kind", ""),
                source=row.get("source", ""),
                date=row.get("date", ""),
                notes=row.get("notes", ""),
                gpu_as_published=row.get("gpu_as_published", ""),
            )
        )
    return tuple(rows)


def serving_rows() -> list[ServingRow]:
    """Published serving-throughput rows, in file order."""
    return list(_serving_table())


# --------------------------------------------------------------------------- versions, suggestions


@functools.lru_cache(maxsize=None)
def _versions() -> tuple[tuple[str, str], ...]:
    return tuple(
        (path.name, hashlib.sha256(path.read_bytes()).hexdigest()[:12])
        for path in sorted(DATA_DIR.iterdir())
        if path.is_file() and not path.name.startswith(".")
    )


def catalog_versions() -> dict[str, str]:
    """File name -> first 12 hex digits of the sha256 of its bytes, for every data file."""
    return dict(_versions())
