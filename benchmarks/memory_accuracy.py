"""Compare the memory estimate (compiler/memory.py) with published peak-GPU-memory figures.

    python benchmarks/memory_accuracy.py             # tables (single- and multi-GPU rows), medians, OOM verdicts;
                                                     # exit 1 if an OOM is claimed to fit
    python benchmarks/memory_accuracy.py --components  # also each estimate's components

The figures are in benchmarks/data/published_memory.csv: the rows of the project's shared
reference table (../shared/reference/published_memory.csv, each with its source), copied with the
columns this benchmark adds:

- `comparable` / `why_not`: whether the figure was measured on a runtime like ours (transformers +
  peft on one GPU, no FSDP / DeepSpeed / offload), for a catalog model, with a known configuration.
  Rows that are not comparable are still estimated where the configuration can be expressed, and
  shown in a separate section.
- `model_name`: the catalog hub id (or, for a few models not in the catalog, a stand-in built here
  from the shared model_arch.csv figures, marked as such).
- `measure`: what the figure means, which decides what it is compared with:
  allocated (torch max_memory_allocated / active)  <->  est.allocated_peak_bytes
  reserved  (torch max_memory_reserved)            <->  allocated x (1 + ALLOCATOR_OVERHEAD)
  nvidia_smi (process memory, context included)    <->  est.required_bytes
  oom / bound: a run that did not fit / a length that just fitted on a card of known size;
  estimate: someone else's rule of thumb, never compared.
- `figure_unit`: GB (1e9 bytes) or GiB (2^30) - the unit the figure is read in.
- `outcome` (fits | oom) and `outcome_transfers` (both | oom | fit): whether an outcome seen on that
  runtime says anything about ours. An OOM on a runtime that needs less memory than ours (Unsloth's
  offloaded checkpointing and fused loss) is an OOM here too; a fit on a runtime that needs more (one
  that builds full fp32 logits) is a fit here too. Only those are checked.
- `est_*`: the configuration as StepShape fields; assumptions are stated in the row's `notes`.

Multi-GPU rows (num_gpus > 1) are estimated per GPU and reported in a section of their own, with a
summary line of their own (the line before the last):

- the StepShape gets processes = num_gpus and the strategy, ZeRO stage and CPU offload read from
  `parallelism_offload` (`parallelism`): FSDP full shard -> fsdp, FSDP NO_SHARD -> ddp (a replica per
  GPU), DeepSpeed ZeRO-n -> deepspeed stage n; "offload" unless "no offload" / "offload disabled";
- the figure is per GPU unless `what_memory_means` (or the figure as printed) says it is the sum over
  the GPUs (Qwen's table): then it is divided by num_gpus (`figure_gpus`);
- `comparable` there means: measured on a runtime like ours with FSDP / DeepSpeed (transformers +
  peft, accelerate or torch FSDP wrapped per decoder layer, DeepSpeed ZeRO through the HF Trainer),
  for a catalog model, with a known configuration;
- a row with a known card (`gpu_name`) is also a fit check (est.required_bytes per GPU against the
  card), and `oom_seq_len` an OOM check, counted as for single-GPU rows by `outcome_transfers`.

Pure Python: imports the compiler, never torch.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_FILE = Path(__file__).resolve().parent / "data" / "published_memory.csv"

try:
    from recipe_ft.compiler import memory
except ImportError:  # run from a checkout without the editable install
    sys.path.insert(0, str(ROOT))
    from recipe_ft.compiler import memory  # noqa: E402
from recipe_ft.compiler.architecture import Architecture, from_config  # noqa: E402
from recipe_ft.compiler.catalogs import find_gpu  # noqa: E402
from recipe_ft.compiler.models import catalog_entry, resolve_model  # noqa: E402

GB = 10**9
GIB = 2**30
AIM = 0.10  # the aim: median |error| <= 10% on comparable rows

UNIT_BYTES = {"GB": GB, "GiB": GIB}
NUMERIC_MEASURES = ("allocated", "reserved", "nvidia_smi")
MEANING = {"allocated": "alloc", "reserved": "reserved", "nvidia_smi": "smi"}

# Models of the table that are not in the catalog, as Llama-shaped configs built from the figures of
# ../shared/reference/model_arch.csv (Qwen-1: fused c_attn with bias, SwiGLU with the intermediate
# size per branch; LLaMA-65B: the v1 architecture; Yi-34B). Same parameter shapes, not the same code.
STAND_INS = {
    "Qwen/Qwen-1_8B": dict(hidden_size=2048, num_hidden_layers=24, intermediate_size=5504,
                           vocab_size=151936, num_attention_heads=16, num_key_value_heads=16,
                           attention_bias=True),
    "Qwen/Qwen-7B": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=11008,
                         vocab_size=151936, num_attention_heads=32, num_key_value_heads=32,
                         attention_bias=True),
    "Qwen/Qwen-14B": dict(hidden_size=5120, num_hidden_layers=40, intermediate_size=13696,
                          vocab_size=152064, num_attention_heads=40, num_key_value_heads=40,
                          attention_bias=True),
    "Qwen/Qwen-72B": dict(hidden_size=8192, num_hidden_layers=80, intermediate_size=24576,
                          vocab_size=152064, num_attention_heads=64, num_key_value_heads=64,
                          attention_bias=True),
    "huggyllama/llama-65b": dict(hidden_size=8192, num_hidden_layers=80, intermediate_size=22016,
                                 vocab_size=32000, num_attention_heads=64, num_key_value_heads=64),
    # Yi-34B: LlamaForCausalLM with GQA (model_arch.csv), so the stand-in has the same code, too
    "01-ai/Yi-34B": dict(hidden_size=7168, num_hidden_layers=60, intermediate_size=20480,
                         vocab_size=64000, num_attention_heads=56, num_key_value_heads=8),
}


# --- reading the table ----------------------------------------------------------------------------

def load_rows(path: Path = DATA_FILE) -> list[dict]:
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def to_bytes(value: float, unit: str) -> int:
    """A figure in GB (1e9 bytes) or GiB (2^30 bytes) as bytes."""
    if unit not in UNIT_BYTES:
        raise ValueError(f"unknown unit {unit!r}; expected one of {', '.join(UNIT_BYTES)}")
    return round(float(value) * UNIT_BYTES[unit])


def figure_bytes(row: dict) -> int | None:
    """The row's published figure (peak_mem_value read in figure_unit) in bytes; None if not numeric."""
    try:
        value = float(row["peak_mem_value"])
    except (KeyError, TypeError, ValueError):
        return None
    return to_bytes(value, row["figure_unit"])


def gib(n: float) -> float:
    return n / GIB


def num_gpus(row: dict) -> int:
    """The GPUs of the run (1 where not stated)."""
    text = (row.get("num_gpus") or "").strip()
    return int(text) if text else 1


def parallelism(row: dict) -> tuple[str, int, bool] | None:
    """(strategy, ZeRO stage, CPU offload) of the run, read from `parallelism_offload`: ("single", 3,
    False) on one GPU; None for a multi-GPU layout the estimator does not model (or not stated)."""
    if num_gpus(row) <= 1:
        return "single", 3, False
    text = (row.get("parallelism_offload") or "").lower()
    offload = "offload" in text and not re.search(r"no (cpu )?offload|offload disabled", text)
    if "no_shard" in text or "no shard" in text:  # FSDP NO_SHARD: a full replica per GPU, as DDP
        return "ddp", 3, False
    if "fsdp" in text:
        if re.search(r"shard_grad_op|hybrid", text):
            return None
        return "fsdp", 3, offload
    stage = re.search(r"zero-?(\d)", text)
    if "deepspeed" in text and stage:
        return ("deepspeed", int(stage.group(1)), offload) if stage.group(1) in ("2", "3") else None
    if "ddp" in text:
        return "ddp", 3, False
    return None


def figure_gpus(row: dict) -> int | None:
    """How many GPUs the published figure is summed over: num_gpus where `what_memory_means` (or the
    figure as printed) says it is the sum over the GPUs, else 1 where the row says it is per GPU
    (per-GPU, rank 0); None for a multi-GPU row that says neither."""
    n = num_gpus(row)
    if n <= 1:
        return 1
    stated = " ".join((row.get(k) or "") for k in ("what_memory_means", "peak_mem_GB")).lower()
    if re.search(r"\bsum over (\d+ )?gpus", stated):
        return n
    context = stated + " " + " ".join((row.get(k) or "") for k in ("notes", "source")).lower()
    if re.search(r"per[- ]gpu|\brank 0\b", context):
        return 1
    return None


def architecture(row: dict) -> tuple[Architecture, bool] | None:
    """(architecture, is_stand_in) for the row's model, or None when neither catalog nor stand-in."""
    name = row.get("model_name", "")
    if not name:
        return None
    if catalog_entry(name) is not None:
        return resolve_model(name, ROOT).architecture, False
    if name in STAND_INS:
        cfg = dict(model_type="llama", tie_word_embeddings=False, max_position_embeddings=32768,
                   hidden_act="silu", **STAND_INS[name])
        return from_config(cfg, where=f"stand-in for {name} (benchmarks/memory_accuracy.py)"), True
    return None


def _targets(text: str):
    text = text.strip()
    return "all-linear" if text in ("", "all-linear") else tuple(t.strip() for t in text.split(","))


def step_shape(row: dict, arch: Architecture, seq_len: int | None = None) -> memory.StepShape | None:
    """The row's configuration as a StepShape (seq_len overrides est_seq_len); None if not stated."""
    if not row.get("est_method"):
        return None
    method = row["est_method"]
    layout = parallelism(row)
    if layout is None:
        return None
    strategy, zero_stage, cpu_offload = layout
    return memory.StepShape(
        method=method,
        rank=int(row["est_rank"] or 0) if method != "full" else 0,
        dropout=float(row["est_dropout"] or 0.0),
        targets=_targets(row["est_targets"]) if method != "full" else ("all-linear",),
        micro_batch_size=int(row["est_micro_batch"]),
        seq_len=int(seq_len if seq_len is not None else row["est_seq_len"]),
        gradient_checkpointing=row["est_grad_ckpt"] == "yes",
        gradient_accumulation_steps=1,
        optimizer=row["est_optimizer"] or "adamw",
        precision=row["est_precision"] or "bf16",
        attention=memory.attention_for(arch, "auto"),
        quant_bits=int(row["est_quant_bits"] or 4),
        double_quant=row["est_double_quant"] != "no",
        processes=num_gpus(row),
        strategy=strategy,
        zero_stage=zero_stage,
        cpu_offload=cpu_offload,
    )


def matching_estimate(est: memory.MemoryEstimate, measure: str) -> int:
    """The part of the estimate a figure of this meaning measures."""
    if measure == "allocated":
        return est.allocated_peak_bytes
    if measure == "reserved":  # what the caching allocator holds: allocated + its overhead
        return est.allocated_peak_bytes + est.components["allocator_overhead"]
    if measure == "nvidia_smi":  # the process: + CUDA context + paged optimizer states
        return est.required_bytes
    raise ValueError(f"no estimate matches a figure of meaning {measure!r}")


# --- comparisons ----------------------------------------------------------------------------------

@dataclass
class Comparison:
    row: dict
    arch: Architecture
    stand_in: bool
    shape: memory.StepShape
    estimate: memory.MemoryEstimate
    published_bytes: int  # per GPU: the figure, divided by num_gpus where it is a sum over the GPUs
    estimate_bytes: int
    summed_over: int = 1  # GPUs the published figure is the sum over (1: a per-GPU figure)

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def multi_gpu(self) -> bool:
        return self.shape.processes > 1

    @property
    def comparable(self) -> bool:
        return self.row["comparable"] == "yes"

    @property
    def measure(self) -> str:
        return self.row["measure"]

    @property
    def full_logits_bytes(self) -> int:
        """One fp32 copy of the full (tokens, vocab) logits: what a runtime without a fused LM head
        builds several times over (ours never does)."""
        return self.shape.tokens * self.arch.vocab_size * 4

    @property
    def error(self) -> float:
        """Signed relative error of the estimate: (estimate - published) / published."""
        return (self.estimate_bytes - self.published_bytes) / self.published_bytes


@dataclass
class OutcomeCheck:
    """A card of known size and a configuration that did (outcome 'fits') or did not fit on it."""

    row: dict
    kind: str  # "oom" | "fits"
    seq_len: int
    capacity_bytes: int
    estimate: memory.MemoryEstimate
    counted: bool  # the outcome transfers to our runtime

    @property
    def id(self) -> str:
        return self.row["id"]

    shape: memory.StepShape | None = None

    @property
    def claims_fit(self) -> bool:
        return self.estimate.fits(self.capacity_bytes)

    @property
    def wrong(self) -> bool:
        return self.claims_fit if self.kind == "oom" else not self.claims_fit


@dataclass
class Report:
    """The single-GPU rows; `multi` holds the multi-GPU rows (num_gpus > 1) as a Report of their own."""

    comparisons: list[Comparison]
    checks: list[OutcomeCheck]
    skipped: list[tuple[dict, str]]  # rows with a figure but no estimate, and why
    multi: Report | None = field(default=None)

    @property
    def comparable(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.comparable]

    @property
    def oom_checks(self) -> list[OutcomeCheck]:
        return [c for c in self.checks if c.kind == "oom"]

    @property
    def fit_checks(self) -> list[OutcomeCheck]:
        return [c for c in self.checks if c.kind == "fits"]

    @property
    def oom_claimed_fit(self) -> list[OutcomeCheck]:
        return [c for c in self.oom_checks if c.counted and c.wrong]

    @property
    def fit_claimed_oom(self) -> list[OutcomeCheck]:
        return [c for c in self.fit_checks if c.counted and c.wrong]


def median_abs(comparisons: list[Comparison]) -> float | None:
    return statistics.median(abs(c.error) for c in comparisons) if comparisons else None


def max_abs(comparisons: list[Comparison]) -> float | None:
    return max(abs(c.error) for c in comparisons) if comparisons else None


def capacity_bytes(row: dict) -> int:
    """The card of an OOM / bound row: a catalog GPU if named, else the stated budget."""
    if row.get("gpu_name"):
        return find_gpu(row["gpu_name"]).memory_bytes
    return figure_bytes(row)


def _not_estimated(row: dict) -> str:
    if row.get("est_method") and parallelism(row) is None:
        return f"multi-GPU layout not modelled: {row['parallelism_offload'] or 'not stated'}"
    return row["why_not"] or "configuration not stated"


def compare_rows(rows: list[dict]) -> Report:
    single = [r for r in rows if num_gpus(r) <= 1]
    multi = [r for r in rows if num_gpus(r) > 1]
    report = _compare_rows(single)
    report.multi = _compare_rows(multi)
    return report


def _compare_rows(rows: list[dict]) -> Report:
    comparisons, checks, skipped = [], [], []
    for row in rows:
        measure = row["measure"]
        resolved = architecture(row)
        shape = step_shape(row, resolved[0]) if resolved else None
        if measure in NUMERIC_MEASURES:
            published = figure_bytes(row)
            summed = figure_gpus(row)
            if published is None:
                skipped.append((row, "figure is not a number"))
            elif shape is None:
                skipped.append((row, _not_estimated(row)))
            elif summed is None:
                skipped.append((row, "figure: per GPU or sum over the GPUs not stated"))
            else:
                arch, stand_in = resolved
                est = memory.estimate(arch, shape)
                comparisons.append(Comparison(row, arch, stand_in, shape, est, round(published / summed),
                                              matching_estimate(est, measure), summed))
                if row.get("gpu_name"):  # it ran on a card of known size: it fitted there
                    transfers = row["outcome_transfers"]
                    cap = capacity_bytes(row)
                    checks.append(OutcomeCheck(row, "fits", shape.seq_len, cap, est,
                                               transfers in ("both", "fit"), shape))
                    if row.get("oom_seq_len"):  # the next size up did not fit
                        n = int(row["oom_seq_len"])
                        longer = step_shape(row, arch, n)
                        checks.append(OutcomeCheck(row, "oom", n, cap, memory.estimate(arch, longer),
                                                   transfers in ("both", "oom"), longer))
        elif measure in ("oom", "bound"):
            if shape is None:
                skipped.append((row, _not_estimated(row)))
                continue
            arch, _ = resolved
            transfers = row["outcome_transfers"]
            cap = capacity_bytes(row)
            if row["outcome"] == "oom":
                checks.append(OutcomeCheck(row, "oom", shape.seq_len, cap, memory.estimate(arch, shape),
                                           transfers in ("both", "oom"), shape))
                continue
            checks.append(OutcomeCheck(row, "fits", shape.seq_len, cap, memory.estimate(arch, shape),
                                       transfers in ("both", "fit"), shape))
            if row.get("oom_seq_len"):  # the next size up did not fit
                n = int(row["oom_seq_len"])
                longer = step_shape(row, arch, n)
                checks.append(OutcomeCheck(row, "oom", n, cap, memory.estimate(arch, longer),
                                           transfers in ("both", "oom"), longer))
    return Report(comparisons, checks, skipped)


# --- printing -------------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _model(row: dict, stand_in: bool = False) -> str:
    name = row.get("model_name") or row["model"]
    return name.split("/")[-1] + ("*" if stand_in else "")


def _comparison_table(comparisons: list[Comparison], components: bool) -> list[str]:
    head = (f"{'id':<7} {'model':<26} {'method':<6} {'seq x mbs':>10} {'ckpt':<4} "
            f"{'published GiB, meaning':>22} {'estimate GiB':>12} {'error':>7} {'logits':>7}")
    lines = [head, "-" * len(head)]
    for c in comparisons:
        s = c.shape
        lines.append(
            f"{c.id:<7} {_model(c.row, c.stand_in):<26} {s.method:<6} {f'{s.seq_len}x{s.micro_batch_size}':>10} "
            f"{'on' if s.gradient_checkpointing else 'off':<4} "
            f"{gib(c.published_bytes):>12.2f} {MEANING[c.measure]:<9} {gib(c.estimate_bytes):>12.2f} "
            f"{100 * c.error:>+6.1f}% {gib(c.full_logits_bytes):>7.2f}")
        if components:
            parts = ", ".join(f"{k} {gib(v):.2f}" for k, v in c.estimate.components.items() if v)
            lines.append(f"{'':<9}{parts}")
    return lines


def _check_line(c: OutcomeCheck) -> str:
    verdict = "fits" if c.claims_fit else "OOM"
    if c.counted:
        status = "WRONG" if c.wrong else "ok"
    else:
        status = "not counted"
    layout = f" {_layout(c.shape):<13}" if c.shape is not None and c.shape.processes > 1 else ""
    return (f"{c.id:<13} {_model(c.row):<24} {c.row['est_method']:<6}{layout} "
            f"{c.seq_len:>7} tok  card {gib(c.capacity_bytes):6.1f} GiB  published {c.kind:<4}  "
            f"estimate {gib(c.estimate.required_bytes):6.1f} GiB -> {verdict:<4}  {status}")


def _layout(s: memory.StepShape) -> str:
    """The multi-GPU layout in a few characters: fsdp x2 +off, zero3 x8, ddp x2."""
    name = f"zero{s.zero_stage}" if s.strategy == "deepspeed" else s.strategy
    return f"{name} x{s.processes}" + (" +off" if s.cpu_offload else "")


def _multi_table(comparisons: list[Comparison], components: bool) -> list[str]:
    """Per GPU: the published figure (/n: a sum over n GPUs, divided), the estimate, and the parts of
    the estimate sharding changes (weights incl. quantization constants and adapters or trainable
    weights, gradients + optimizer states, communication buffers, activations + LM head)."""
    head = (f"{'id':<6} {'model':<22} {'method':<6} {'layout':<13} {'seq x mbs':>10} "
            f"{'published GiB/GPU, meaning':>27} {'estimate':>8} {'error':>7}  "
            f"{'weights':>7} {'grad+opt':>8} {'comm':>5} {'act':>5} {'logits':>6}")
    lines = [head, "-" * len(head)]
    for c in comparisons:
        s, k = c.shape, c.estimate.components
        weights = (k["weights"] + k["quantization_constants"]
                   + k.get("adapter_weights", 0) + k.get("trainable_weights", 0))
        states = k["gradients"] + k["optimizer_states"] + k["optimizer_states_paged"]
        act = k["activations"] + k["logits_and_loss"]
        summed = f"/{c.summed_over}" if c.summed_over > 1 else ""
        lines.append(
            f"{c.id:<6} {_model(c.row, c.stand_in):<22} {s.method:<6} {_layout(s):<13} "
            f"{f'{s.seq_len}x{s.micro_batch_size}':>10} "
            f"{gib(c.published_bytes):>12.2f}{summed:<3} {MEANING[c.measure]:<11} {gib(c.estimate_bytes):>8.2f} "
            f"{100 * c.error:>+6.1f}%  {gib(weights):>7.2f} {gib(states):>8.2f} "
            f"{gib(k['communication_buffers']):>5.2f} {gib(act):>5.2f} {gib(c.full_logits_bytes):>6.2f}")
        if components:
            parts = ", ".join(f"{n} {gib(v):.2f}" for n, v in k.items() if v)
            lines.append(f"{'':<8}{parts}")
    return lines


def _bias_lines(comparisons: list[Comparison]) -> list[str]:
    """Signed median error by meaning of the figure and by source group (and, for multi-GPU rows, by
    strategy and by CPU offload)."""
    lines = []
    groups: dict[str, list[Comparison]] = {}
    for c in comparisons:
        groups.setdefault(f"measure={c.measure}", []).append(c)
        groups.setdefault(f"source={c.id.rstrip('0123456789')}", []).append(c)
        groups.setdefault(f"method={c.shape.method}", []).append(c)
        if c.multi_gpu:
            s = c.shape
            groups.setdefault(f"strategy={f'zero{s.zero_stage}' if s.strategy == 'deepspeed' else s.strategy}",
                              []).append(c)
            groups.setdefault(f"cpu_offload={'yes' if s.cpu_offload else 'no'}", []).append(c)
    for key in sorted(groups):
        cs = groups[key]
        signed = statistics.median(c.error for c in cs)
        lines.append(f"  {key:<22} n={len(cs):<3} median error {100 * signed:+6.1f}%  "
                     f"median |error| {_pct(median_abs(cs))}")
    return lines


OURS_BUT_LOGITS = "transformers + peft, full logits (no fused LM head)"


def difference(c: Comparison) -> str:
    """What differs between the runtime that measured the row and ours (trl's SFTTrainer with its
    fused LM head), grouped from the row's why_not: comparable rows differ only in building the full
    logits."""
    why = c.row["why_not"].lower()
    if c.comparable:
        return OURS_BUT_LOGITS
    if why.startswith("runtime: torchtune"):
        return "torchtune: pure-bf16 adapters and Adam states, own code"
    if "qwen-1" in why:
        return "Qwen-1 remote code, full fp32 logits; stand-in shapes"
    if "fp32" in why:
        return "fp32 base weights (FSDP shards)"
    return why.split(";")[0]


def difference_lines(comparisons: list[Comparison]) -> list[str]:
    """Every estimated row, grouped by what differs from our runtime and by what the figure measures
    (reserved figures are compared with allocated x (1 + ALLOCATOR_OVERHEAD), nvidia-smi ones with
    the required bytes); the comparable rows first, then every row together."""
    groups: dict[tuple[str, str], list[Comparison]] = {}
    for c in comparisons:
        groups.setdefault((difference(c), c.measure), []).append(c)
    lines = [f"  {'differs from our runtime':<56} {'figure':<10} {'n':>3}  {'median |err|':>12} {'max |err|':>9} "
             f"{'median err':>10}"]

    def line(label, measure, cs):
        return (f"  {label:<56} {measure:<10} {len(cs):>3}  {_pct(median_abs(cs)):>12} {_pct(max_abs(cs)):>9} "
                f"{100 * statistics.median(c.error for c in cs):+9.1f}%")

    for (diff, measure), cs in sorted(groups.items(), key=lambda kv: (kv[0][0] != OURS_BUT_LOGITS, kv[0])):
        lines.append(line(diff, measure, cs))
    if comparisons:
        lines.append(line("every estimated row", "", comparisons))
    return lines


def summary_line(report: Report) -> str:
    comp, every = report.comparable, report.comparisons
    return (f"comparable rows: {len(comp)}, median |error| {_pct(median_abs(comp))}, max {_pct(max_abs(comp))}; "
            f"all estimated rows: {len(every)}, median |error| {_pct(median_abs(every))}, max {_pct(max_abs(every))}; "
            f"OOM rows claimed to fit: {len(report.oom_claimed_fit)}")


def multi_summary_line(report: Report) -> str:
    """The summary of the multi-GPU rows (report.multi): per-GPU errors, OOM and fit checks."""
    m = report.multi or Report([], [], [])
    comp = m.comparable
    return (f"multi-GPU comparable rows: {len(comp)}, median |error| {_pct(median_abs(comp))}, "
            f"max {_pct(max_abs(comp))}; all estimated multi-GPU rows: {len(m.comparisons)}, "
            f"median |error| {_pct(median_abs(m.comparisons))}, max {_pct(max_abs(m.comparisons))}; "
            f"multi-GPU OOM rows claimed to fit: {len(m.oom_claimed_fit)}; "
            f"fit rows claimed to OOM: {len(m.fit_claimed_oom)}")


def _checks_summary(report: Report) -> list[str]:
    counted_oom = [c for c in report.oom_checks if c.counted]
    uncounted_fit = [c for c in report.oom_checks if not c.counted and c.claims_fit]
    counted_fit = [c for c in report.fit_checks if c.counted]
    return [f"  OOM rows claimed to fit: {len(report.oom_claimed_fit)} (of {len(counted_oom)} OOM configurations "
            f"that transfer; {len(uncounted_fit)} more from runtimes that need more memory than ours "
            "are estimated to fit here, not counted)",
            f"  fit rows claimed to OOM: {len(report.fit_claimed_oom)} (of {len(counted_fit)} that transfer)"]


def _skipped_lines(skipped: list[tuple[dict, str]]) -> list[str]:
    out = []
    by_reason: dict[str, list[dict]] = {}
    for row, why in skipped:
        by_reason.setdefault(why, []).append(row)
    for why, rows in by_reason.items():
        figs = ", ".join(f"{r['id']} {r['peak_mem_value']} {r['figure_unit']} {r['measure']}" for r in rows[:6])
        more = f", ... ({len(rows)} rows)" if len(rows) > 6 else ""
        out.append(f"  {why}")
        out.append(f"      {figs}{more}")
    return out


def _logits_shortfall(comparisons: list[Comparison], what: str) -> list[str]:
    """How many fp32 copies of the full logits the estimate falls short by, on the adapter rows (no
    chunked loss) where one copy is >= 5% of the (per-GPU) figure: a runtime whose loss builds them."""
    big = [c for c in comparisons if c.full_logits_bytes >= 0.05 * c.published_bytes
           and c.shape.method != "full" and "chunked" not in c.row["notes"].lower()]
    if not big:
        return []
    copies = [(c.published_bytes - c.estimate_bytes) / c.full_logits_bytes for c in big]
    return [f" shortfall in fp32 full-logits copies, (published - estimate) / logits, on the {len(big)} "
            f"{what} (no chunked loss) where one copy is >= 5% of the figure: median {statistics.median(copies):.1f} "
            f"(range {min(copies):.1f} to {max(copies):.1f})"]


def render_multi(report: Report, components: bool = False) -> list[str]:
    """The multi-GPU section: per-GPU comparisons, fit / OOM checks on the card, error by group."""
    m = report.multi or Report([], [], [])
    out = ["== Multi-GPU rows (num_gpus > 1), per GPU: StepShape(processes = num_gpus, strategy / ZeRO stage / "
           "CPU offload from parallelism_offload)",
           "   layout: fsdp = FSDP full shard, zeroN = DeepSpeed ZeRO-N, ddp = a replica per GPU (DDP, FSDP NO_SHARD), "
           "+off = CPU offload",
           "   published /n: the figure is the sum over n GPUs (what_memory_means), divided by n",
           "   weights (incl. quantization constants, adapters), grad+opt, comm (communication_buffers), act "
           "(activations + LM head): the estimate's parts per GPU, GiB"]
    comp = m.comparable
    out.append(f" comparable (our runtime with FSDP / DeepSpeed: transformers + peft, accelerate or torch FSDP, "
               f"DeepSpeed via the HF Trainer; catalog model): {len(comp)}")
    out += _multi_table(comp, components)
    others = [c for c in m.comparisons if not c.comparable]
    out.append(f" not comparable, estimated for reference: {len(others)}   (* = stand-in architecture)")
    out += _multi_table(others, components)
    reasons: dict[str, list[str]] = {}
    for c in others:
        reasons.setdefault(c.row["why_not"], []).append(c.id)
    for why, ids in reasons.items():
        out.append(f"  {_ids(ids)}: {why}")
    out.append(f" not estimated (figure shown as published): {len(m.skipped)}")
    out += _skipped_lines(m.skipped)
    out.append(" fit and OOM checks (est.required_bytes per GPU against the card; counted as outcome_transfers says)")
    for c in m.checks:
        out.append("  " + _check_line(c))
    out += _checks_summary(m)
    out.append(" error by group (signed: + = estimate above published)")
    out.append("  comparable multi-GPU rows:")
    out += ["  " + line for line in _bias_lines(comp)]
    out.append("  all estimated multi-GPU rows:")
    out += ["  " + line for line in _bias_lines(m.comparisons)]
    out += _logits_shortfall(comp, "comparable multi-GPU adapter rows")
    out.append(" every estimated multi-GPU row, by what differs from our runtime:")
    out += difference_lines(m.comparisons)
    worst = sorted(m.comparisons, key=lambda c: -abs(c.error))[:5]
    out.append(" worst multi-GPU rows: " + ", ".join(f"{c.id} {100 * c.error:+.1f}%" for c in worst))
    return out


def render(report: Report, components: bool = False) -> str:
    out = []
    out.append("Memory estimate vs published peak GPU memory (benchmarks/data/published_memory.csv)")
    out.append(f"  allocated figures  <-> est.allocated_peak_bytes (torch.cuda.max_memory_allocated)")
    out.append(f"  reserved figures   <-> allocated x (1 + ALLOCATOR_OVERHEAD = {memory.ALLOCATOR_OVERHEAD:.2f})")
    out.append(f"  nvidia-smi figures <-> est.required_bytes (+ CUDA context "
               f"{gib(memory.CUDA_CONTEXT_BYTES):.2f} GiB + paged optimizer states)")
    out.append("  all figures in GiB (GB figures converted: x 1e9 / 2^30); error = (estimate - published) / published")
    out.append("  logits: one fp32 copy of the full (tokens x vocab) logits, which runtimes without a fused LM head")
    out.append("  build several times over and ours (trl's fused head) never does")
    out.append("")

    comp = report.comparable
    out.append(f"== Comparable rows (our runtime: transformers + peft, one GPU, catalog model): {len(comp)}")
    out += _comparison_table(comp, components)
    out.append("")
    others = [c for c in report.comparisons if not c.comparable]
    out.append(f"== Not comparable, estimated for reference: {len(others)}   (* = stand-in architecture, "
               "model not in the catalog)")
    out += _comparison_table(others, components)
    reasons: dict[str, list[str]] = {}
    for c in others:
        reasons.setdefault(c.row["why_not"], []).append(c.id)
    for why, ids in reasons.items():
        out.append(f"  {_ids(ids)}: {why}")
    out.append("")

    out.append(f"== Not estimated (figure shown as published): {len(report.skipped)}")
    out += _skipped_lines(report.skipped)
    out.append("")

    out.append("== OOM and fit checks (est.required_bytes against the card)")
    out.append("   counted only where the published outcome transfers to our runtime (column outcome_transfers)")
    for c in report.checks:
        out.append("  " + _check_line(c))
    out += _checks_summary(report)
    out.append("")

    out.append("== Error by group (signed: + = estimate above published)")
    out.append(" comparable rows:")
    out += _bias_lines(comp)
    out.append(" all estimated rows:")
    out += _bias_lines(report.comparisons)
    out.append("")

    out += _logits_shortfall(report.comparisons, "adapter rows")
    out.append("")

    out.append("== Every estimated row, by what differs from our runtime (and what the figure measures)")
    out += difference_lines(report.comparisons)
    out.append("")

    out += render_multi(report, components)
    out.append("")

    worst = sorted(report.comparisons, key=lambda c: -abs(c.error))[:5]
    out.append("worst rows: " + ", ".join(f"{c.id} {100 * c.error:+.1f}%" for c in worst))
    out.append(f"aim: median |error| <= {_pct(AIM)} on comparable rows: "
               f"{'met' if comp and median_abs(comp) <= AIM else 'NOT met'}")
    out.append(multi_summary_line(report))
    out.append(summary_line(report))  # the last line: single-GPU rows
    return "\n".join(out)


def _ids(ids: list[str]) -> str:
    return ", ".join(ids) if len(ids) <= 6 else f"{', '.join(ids[:3])}, ... {ids[-1]} ({len(ids)} rows)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_FILE, help="the table (default: %(default)s)")
    parser.add_argument("--components", action="store_true", help="print each estimate's components")
    args = parser.parse_args(argv)
    report = compare_rows(load_rows(args.data))
    print(render(report, components=args.components))
    return 1 if report.oom_claimed_fit or (report.multi and report.multi.oom_claimed_fit) else 0


if __name__ == "__main__":
    sys.exit(main())
