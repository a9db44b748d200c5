"""The run report's figure (loss.png), drawn with matplotlib: training and held-out loss against the
optimizer step, the learning rate, and the planned against the measured peak memory."""

from __future__ import annotations

from pathlib import Path

GIB = 2**30


def draw(report: dict, path: Path) -> None:
    """Write the figure for a run report (the dict of run_report.json) as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only, never a window
    import matplotlib.pyplot as plt

    curve = report.get("loss_curve") or []
    evals = (report.get("measured") or {}).get("eval_curve") or []
    baseline = (report.get("evaluation") or {}).get("baseline_eval_loss")
    fig, (loss_ax, lr_ax, mem_ax) = plt.subplots(
        1, 3, figsize=(13, 4), dpi=100, gridspec_kw={"width_ratios": [2.2, 1.4, 1]})
    try:
        _loss(loss_ax, curve, evals, baseline)
        _learning_rate(lr_ax, curve)
        _memory(mem_ax, report["planned_vs_measured"]["peak_memory"])
        model = report["model"].rstrip("/").rsplit("/", 1)[-1] if report["model"].startswith(("/", ".")) else report["model"]
        fig.suptitle(f"{report['name']}: {report['method']} on {model} ({report['status']})")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _loss(ax, curve: list, evals: list, baseline) -> None:
    if curve:
        ax.plot([p["step"] for p in curve], [p["loss"] for p in curve], marker=".", label="training loss")
    points = ([(0, baseline)] if baseline is not None else []) + [(p["step"], p["eval_loss"]) for p in evals]
    if points:
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", linestyle="--",
                label="held-out loss" + (" (step 0: base model)" if baseline is not None else ""))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (cross-entropy, nats/token)")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    if curve or points:
        ax.legend()


def _learning_rate(ax, curve: list) -> None:
    points = [(p["step"], p["learning_rate"]) for p in curve if p.get("learning_rate") is not None]
    if points:
        ax.plot([s for s, _ in points], [v for _, v in points], color="tab:green")
    else:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(alpha=0.3)


def _memory(ax, mem: dict) -> None:
    planned = (mem.get("planned_allocated_bytes") or 0) / GIB
    measured = (mem.get("measured_bytes") or 0) / GIB
    bars = ax.bar(["planned\n(per GPU, allocated)", "measured"], [planned, measured],
                  color=["tab:blue", "tab:orange"])
    for bar, value in zip(bars, (planned, measured)):
        ax.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom")
    ax.set_ylabel("peak memory (GiB)")
    kind = (mem.get("measured_kind") or "not measured").split(" (")[0]
    ax.set_title("peak memory")
    ax.set_xlabel(f"measured: {kind}" + ("\n(a CPU run: not comparable\nwith the plan's per-GPU figure)"
                                         if mem.get("note") else ""), fontsize=8)
    ax.margins(y=0.15)
