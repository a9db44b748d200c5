"""Render a plan for people: a compact terminal report (rich) or markdown for a pull request."""

from __future__ import annotations

from typing import Optional

from ..schemas.money import usd
from ..schemas.plan import Plan

GIB = 2**30
ALTERNATIVES_SHOWN = 12


def gib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / GIB:.1f} GiB"


def hours(h: Optional[float]) -> str:
    if h is None:
        return "-"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def count(n: int) -> str:
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:,.{2 if suffix == 'B' else 1}f}{suffix}"
    return str(n)


def _distributed(plan: Plan) -> str:
    d = plan.distributed
    if d.processes == 1:
        return ""
    name = {"ddp": "DDP", "fsdp": "FSDP full shard",
            "deepspeed": f"DeepSpeed ZeRO-{d.zero_stage}"}.get(d.strategy, d.strategy)
    where = f" on {d.nodes} machines" if d.nodes > 1 else ""
    return f", {name}{' + CPU offload' if d.cpu_offload else ''}{where}"


def fit_label(a) -> str:
    return "yes" if a.fits and a.within_budget else ("over budget" if a.fits else "no")


def _chosen_row(plan: Plan):
    """The chosen option's row among the alternatives: whether it fits, and its note ("$9.34 > max_cost_usd 2",
    "bitsandbytes 4-bit ... not known to work on MI300X")."""
    hw = plan.hardware
    return next((a for a in plan.alternatives if (a.gpu, a.count, a.method, a.strategy)
                 == (hw.gpu, hw.count, plan.method, plan.distributed.strategy)), None)


def _idle(hw) -> bool:
    """The price is for more GPUs than the plan uses (a whole instance)."""
    return hw.gpus_rented is not None and hw.gpus_rented > hw.count


def _rented(hw) -> str:
    return (f" ({hw.gpus_rented} GPUs rented as whole instances, x {usd(hw.usd_per_gpu_hour)}/GPU-hour)"
            if _idle(hw) else "")


def summary_rows(plan: Plan) -> list[tuple[str, str]]:
    m, t, hw = plan.memory, plan.training, plan.hardware
    adapter = ""
    if plan.adapter:
        a = plan.adapter
        adapter = f" r={a.rank} alpha={a.alpha:g} on {len(a.targets)} module types"
        if a.quantization:
            q = a.quantization
            if q["bits"] == 8:
                adapter += ", 8-bit LLM.int8 base"
            else:
                adapter += f", {q['bits']}-bit {q['type']}{' double quant' if q['double_quant'] else ''}"
    memory_fits = m.required_bytes <= m.capacity_bytes
    row = None if plan.fits else _chosen_row(plan)
    note = f"; {row.note}" if row is not None and row.note and memory_fits else ""
    if plan.time.tokens_per_second > 0:
        time_row = (f"{hours(plan.time.hours)} at {plan.time.tokens_per_second:,.0f} tokens/s "
                    f"({plan.time.utilization:.0%} matmul utilization" +
                    (f", x {plan.time.calibration_factor:.2f} from this repository's runs)" if plan.time.calibration
                     else ")"))
        cost_row = f"{usd(plan.cost.usd)} at {usd(plan.cost.usd_per_hour)}/h" + _rented(hw)
    else:  # no step runs, so no time and no cost: say what is missing instead
        missing = ("not estimated: " + row.note if note else
                   f"not estimated: the step needs {gib(m.required_bytes - m.capacity_bytes)} more than the card holds")
        time_row, cost_row = missing, f"not estimated (the GPU costs {usd(plan.cost.usd_per_hour)}/h)"
    return [
        ("model", f"{plan.model.name} ({count(plan.model.parameters)} params, "
                  f"{count(plan.model.trainable_parameters)} trainable)"),
        ("method", plan.method.upper() + adapter),
        ("hardware", f"{hw.count} x {hw.gpu} ({gib(hw.memory_bytes)})" + _distributed(plan)
                     + (f"; rents {hw.gpus_rented}, uses {hw.count}" if _idle(hw) else "")),
        ("fits", ("yes" if plan.fits else "over budget" if row is not None and row.fits else "NO")
                 + f": needs {gib(m.required_bytes)} of {gib(m.capacity_bytes)}"
                 f" (peak allocated {gib(m.allocated_peak_bytes)}, headroom {gib(m.headroom_bytes)})" + note),
        ("batch", f"micro batch {t.micro_batch_size} x accumulation {t.gradient_accumulation_steps} x "
                  f"{hw.count} GPU = {t.effective_batch_size}; checkpointing "
                  f"{'on' if t.gradient_checkpointing else 'off'}; {t.attention} attention"),
        ("data", f"{plan.data.examples:,} examples x {plan.data.tokens_per_example:,.0f} tokens "
                 f"({plan.data.counted_with}); {t.epochs:g} epochs, {t.steps:,} steps"),
        ("time", time_row),
        ("cost", cost_row),
    ] + ([("preference", plan.preference.note)] if plan.preference else [])


def render_text(plan: Plan, suggestions: list[str], trace: Optional[dict] = None) -> None:
    from rich.console import Console
    from rich.table import Table

    import sys

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    title = f"[bold]{plan.name}[/] · {plan.task} · plan v{plan.schema_version}"
    console.print(title)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for key, value in summary_rows(plan):
        summary.add_row(key, value if key != "fits" else (f"[green]{value}[/]" if plan.fits else f"[red]{value}[/]"))
    console.print(summary)

    mem = Table(title="memory per GPU", title_justify="left", show_edge=False, pad_edge=False)
    mem.add_column("component")
    mem.add_column("size", justify="right")
    mem.add_column("")
    total = plan.memory.required_bytes or 1
    for name, size in plan.memory.components.items():
        if size:
            mem.add_row(name.replace("_", " "), gib(size), "█" * max(1, round(30 * size / total)))
    mem.add_row("[bold]required[/]", f"[bold]{gib(plan.memory.required_bytes)}[/]",
                f"of {gib(plan.memory.capacity_bytes)}")
    console.print(mem)

    dec = Table(title="decisions", title_justify="left", show_edge=False, pad_edge=False)
    dec.add_column("what")
    dec.add_column("choice")
    dec.add_column("reason", overflow="fold")
    for d in plan.decisions:
        dec.add_row(d.what, d.choice, d.reason)
    console.print(dec)

    alt = Table(title="alternatives", title_justify="left", show_edge=False, pad_edge=False)
    for col in ("gpu", "n", "strategy", "method", "fits", "needs", "hours", "cost", "note"):
        alt.add_column(col, justify="right" if col in ("n", "needs", "hours", "cost") else "left")
    for a in plan.alternatives[:ALTERNATIVES_SHOWN]:
        fits = fit_label(a)
        alt.add_row(a.gpu, str(a.count), a.strategy, a.method, fits, gib(a.required_bytes), hours(a.hours),
                    usd(a.usd), a.note)
    console.print(alt)
    if len(plan.alternatives) > ALTERNATIVES_SHOWN:
        console.print(f"  ... {len(plan.alternatives) - ALTERNATIVES_SHOWN} more in --format json")
    _economics_text(console, plan)
    for w in plan.warnings:
        console.print(f"[yellow]warning:[/] {w}")
    if trace:
        console.print(f"traced: peak allocated {gib(trace['peak_bytes'])} measured on fake tensors vs "
                      f"{gib(plan.memory.allocated_peak_bytes)} estimated ({trace['error']:+.1%})")
    if not plan.fits:
        console.print("[red bold]nothing fits the budget.[/] What would:")
        for s in suggestions:
            console.print(f"  - {s}")


def render_markdown(plan: Plan, suggestions: list[str], trace: Optional[dict] = None) -> str:
    lines = [f"### Plan: `{plan.name}` ({plan.task})", ""]
    lines += ["| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary_rows(plan)]
    lines += ["", "<details><summary>Memory per GPU</summary>", "", "| component | size |", "|---|---:|"]
    lines += [f"| {n.replace('_', ' ')} | {gib(s)} |" for n, s in plan.memory.components.items() if s]
    lines += [f"| **required** | **{gib(plan.memory.required_bytes)}** of {gib(plan.memory.capacity_bytes)} |",
              "", "</details>", "", "**Decisions**", "", "| what | choice | reason |", "|---|---|---|"]
    lines += [f"| {d.what} | {d.choice} | {d.reason} |" for d in plan.decisions]
    lines += ["", "**Alternatives**", "", "| GPU | n | strategy | method | fits | needs | time | cost | note |",
              "|---|---:|---|---|---|---:|---:|---:|---|"]
    for a in plan.alternatives[:ALTERNATIVES_SHOWN]:
        fits = fit_label(a)
        lines.append(f"| {a.gpu} | {a.count} | {a.strategy} | {a.method} | {fits} | {gib(a.required_bytes)} "
                     f"| {hours(a.hours)} | {usd(a.usd)} | {a.note} |")
    lines += _economics_markdown(plan)
    lines += ["", *[f"> warning: {w}" for w in plan.warnings]]
    if trace:
        lines.append(f"Traced peak allocated: {gib(trace['peak_bytes'])} ({trace['error']:+.1%} vs estimate)")
    if not plan.fits:
        lines += ["", "**Nothing fits the budget.** What would:", *[f"- {s}" for s in suggestions]]
    return "\n".join(lines).rstrip() + "\n"


def economics_rows(plan: Plan) -> list[tuple[str, str]]:
    """The economics section as (label, text) rows; empty without `economics:` in the recipe."""
    e = plan.economics
    if e is None:
        return []
    a, s, o = e.api, e.serving, e.one_time
    rows = [("volume", f"{e.requests_per_day:,} requests/day x ({e.input_tokens_per_request:,} in + "
                       f"{e.output_tokens_per_request:,} out) tokens = {count(e.tokens_per_month)} tokens/month"),
            ("api", f"{usd(e.api_monthly_usd)}/month with {a.model} ({usd(a.input_usd_per_mtok)} in / "
                    f"{usd(a.output_usd_per_mtok)} out per M tokens; {usd(a.usd_per_mtok)} per M blended)")]
    if s is None:
        rows.append(("self-hosted", "-"))
    else:
        gpus = f"{s.gpus_per_replica} x {s.gpu}" if s.gpus_per_replica > 1 else s.gpu
        mode = "scaled to zero" if s.scale_to_zero else "always on"
        used = s.gpus_per_replica * (1 if s.scale_to_zero else s.replicas)
        if s.gpus_rented is not None and s.gpus_rented > used:
            mode += (f" (each busy replica rents {s.gpus_rented} GPUs, whole instances, for its {used})"
                     if s.scale_to_zero else f" ({s.gpus_rented} GPUs rented, whole instances, for {used})")
        weights = "bf16" if s.quantization == "none" else s.quantization
        rows.append(("self-hosted", f"{usd(e.self_hosted_monthly_usd)}/month: {s.replicas} replica"
                                    f"{'s' * (s.replicas != 1)} of {gpus} {mode} at "
                                    f"{usd(s.usd_per_gpu_hour)}/GPU-hour, {weights} weights {gib(s.weights_bytes)}; "
                                    f"{usd(s.usd_per_mtok)} per M tokens at this volume, "
                                    f"{usd(s.usd_per_mtok_at_capacity)} at full load"))
        rows.append(("throughput", f"{s.requests_per_second:,.2f} requests/s per replica (prefill "
                                   f"{s.prefill_tokens_per_second:,.0f} + decode {s.decode_tokens_per_second:,.0f} "
                                   f"tokens/s), peak need {s.peak_requests_per_second:,.2f}/s"))
    parts = [f"training {usd(o.training_usd)}", f"eval {usd(o.eval_usd)}", f"engineering {usd(o.engineering_usd)}"]
    rows.append(("one-time", f"{usd(e.one_time_usd)}: " + " + ".join(parts)))
    if e.monthly_saving_usd is not None:
        saving = e.monthly_saving_usd
        rows.append(("saving", f"{usd(saving)}/month; break-even "
                               + ("never" if e.break_even_days is None else f"{e.break_even_days:,.2f} days")))
    rows.append(("verdict", e.verdict))
    return rows


def _economics_text(console, plan: Plan) -> None:
    from rich.table import Table

    rows = economics_rows(plan)
    if not rows:
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(key, f"[bold]{value}[/]" if key == "verdict" else value)
    for i, c in enumerate(plan.economics.caveats):
        grid.add_row("caveats" if i == 0 else "", f"[yellow]- {c}[/]")
    grid.add_row("assumes", "peak 3x average; weights at most 80% of GPU memory; decode scaled from a published vLLM "
                            "figure by model size and memory bandwidth; eval 10% of training; GPU rent only "
                            "(all of them: --format json, economics.assumptions)")
    console.print(f"economics vs {plan.economics.api.model}")
    console.print(grid)


def _economics_markdown(plan: Plan) -> list[str]:
    rows = economics_rows(plan)
    if not rows:
        return []
    lines = ["", f"**Economics vs {plan.economics.api.model}**", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {'**' + v + '**' if k == 'verdict' else v} |" for k, v in rows]
    lines += [""] + [f"- {c}" for c in plan.economics.caveats]
    lines += ["", "<details><summary>Economics assumptions</summary>", ""]
    lines += [f"- {a}" for a in plan.economics.assumptions] + ["", "</details>"]
    return lines
