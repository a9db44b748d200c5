"""bench_report.json / bench_report.md, a latency histogram and a throughput-over-time plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..schemas.money import usd


def _fmt(x, unit: str = "", digits: int = 1) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}{unit}"


def table_rows(report: dict) -> list[tuple[str, ...]]:
    """The side-by-side table: one row per figure, one column per endpoint."""
    eps = report["endpoints"]
    q = eps[0]["quality"]["metric"]
    rows = [("", *[f"{e['name']} ({e['model']})" for e in eps]),
            (f"quality ({q})", *[_fmt(e["quality"]["score"], digits=3) + f" on {e['quality']['examples_scored']}"
                                 for e in eps]),
            ("latency p50 / p95 / p99 ms", *[" / ".join(_fmt(e["stats"]["latency_ms"][k], digits=0)
                                                       for k in ("p50", "p95", "p99")) for e in eps]),
            ("TTFT p50 / p95 ms", *[" / ".join(_fmt(e["stats"]["ttft_ms"][k], digits=0) for k in ("p50", "p95"))
                                    for e in eps]),
            ("output tokens/s", *[_fmt(e["stats"]["output_tokens_per_s"]) for e in eps]),
            ("requests/s", *[_fmt(e["stats"]["requests_per_s"], digits=2) for e in eps]),
            ("errors / timeouts / sent", *[f"{e['stats']['errors']} / {e['stats']['timeouts']} / "
                                           f"{e['stats']['requests_sent']}" for e in eps]),
            ("$/M tokens", *[usd(e["cost"]["usd_per_mtok"]) for e in eps])]
    if any(e["sla"]["lines"] for e in eps):
        rows.append(("SLA", *["-" if e["sla"]["pass"] is None else "pass" if e["sla"]["pass"] else "FAIL"
                              for e in eps]))
    return rows


def sla_text(line: dict) -> str:
    return (f"{'pass' if line['pass'] else 'FAIL'}  {line['target']}: measured {_fmt(line['measured'], digits=2)}, "
            f"limit {line['limit']:g} ({line['rule']})")


def render_markdown(report: dict, images: dict) -> str:
    load = report["load"]
    how = f"{load['rate']:.3g} requests/s" if load["rate"] else f"{load['concurrency']} concurrent"
    lines = [f"# Bench: {report['recipe']}", "",
             f"{report['created']}; load {how} ({load['source']}), at most {load['duration_s']:g} s or "
             f"{load['max_requests']} requests, timeout {load['timeout_s']:g} s, max_tokens {load['max_tokens']}, "
             f"{load['held_out_examples']} held-out examples.", ""]
    if report.get("serve"):
        s = report["serve"]
        lines += [f"Served with {s['engine']} on {s['url']} (stopped at the end).", ""]
    rows = table_rows(report)
    lines += ["| " + " | ".join(rows[0]) + " |", "|---" + "|---:" * (len(rows[0]) - 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += ["", f"**Verdict: {report['verdict']['text']}**", ""]
    for e in report["endpoints"]:
        lines += [f"## {e['name']}: {e['url']}", ""]
        if e["sla"]["lines"]:
            lines += ["SLA (serving.sla):", ""] + [f"- {sla_text(line)}" for line in e["sla"]["lines"]] + [""]
        st = e["stats"]
        lines += [f"- tokens counted from {st['tokens_counted_from']}; {st['dropped']} not sent (too many open)",
                  f"- cost: {e['cost']['source']}"]
        if st["error_examples"]:
            lines += ["- errors: " + "; ".join(st["error_examples"])]
        for kind, path in images.get(e["name"], {}).items():
            lines += ["", f"![{kind}]({path})"]
        lines.append("")
    return "\n".join(lines)


def plot(endpoints: list, out_dir: Path) -> dict:
    """{endpoint name: {"latency histogram": file, "throughput over time": file}} (matplotlib, Agg)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return {}
    images: dict = {}
    for e in endpoints:
        st, mine = e["stats"], {}
        hist = st["latency_histogram_ms"]
        if hist["counts"]:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            edges = hist["edges"]
            widths = [b - a for a, b in zip(edges, edges[1:])] or [1.0]
            ax.bar(edges[:-1], hist["counts"], width=widths, align="edge", edgecolor="black")
            for q, style in (("p50", "--"), ("p95", "-"), ("p99", ":")):
                if st["latency_ms"][q] is not None:
                    ax.axvline(st["latency_ms"][q], color="red", linestyle=style, label=q)
            ax.set_xlabel("latency (ms)")
            ax.set_ylabel("requests")
            ax.set_title(f"{e['name']}: latency of successful requests")
            ax.legend()
            name = f"latency_{e['name']}.png"
            fig.tight_layout()
            fig.savefig(out_dir / name, dpi=100)
            plt.close(fig)
            mine["latency histogram"] = name
        if st["over_time"]:
            fig, ax = plt.subplots(figsize=(6, 3.5))
            rows = st["over_time"]
            ts = [r["t"] for r in rows]
            ax.plot(ts, [r["tokens_per_s"] for r in rows], marker="o", label="output tokens/s")
            ax.set_xlabel("time since start (s)")
            ax.set_ylabel("output tokens/s")
            ax.set_ylim(bottom=0)
            ax2 = ax.twinx()
            done = [r["completed"] for r in rows]
            ax2.bar(ts, done, width=0.5, color="grey", alpha=0.35, label="requests completed")
            if any(r["failed"] for r in rows):
                ax2.bar(ts, [r["failed"] for r in rows], bottom=done, width=0.5, color="red", alpha=0.5,
                        label="requests failed")
            ax2.set_ylabel("requests per second")
            ax2.set_ylim(bottom=0)
            ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_zorder(ax2.get_zorder() + 1)  # the line over the bars
            ax.patch.set_visible(False)
            handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
            ax.legend(handles, [h.get_label() for h in handles], loc="best", fontsize="small")
            ax.set_title(f"{e['name']}: throughput over time")
            fig.tight_layout()
            name = f"throughput_{e['name']}.png"
            fig.savefig(out_dir / name, dpi=100)
            plt.close(fig)
            mine["throughput over time"] = name
        images[e["name"]] = mine
    return images


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write(out_dir: Path, report: dict) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plot(report["endpoints"], out_dir)
    report["images"] = images
    json_path, md_path = out_dir / "bench_report.json", out_dir / "bench_report.md"
    _atomic(md_path, render_markdown(report, images))
    _atomic(json_path, json.dumps(report, indent=2) + "\n")
    return json_path, md_path


def print_summary(report: dict, log=print) -> None:
    rows = table_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        log("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for line in report["endpoints"][0]["sla"]["lines"]:
        log(sla_text(line))
    log(f"verdict: {report['verdict']['text']}")
