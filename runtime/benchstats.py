"""Figures of a load run: percentiles, throughput, errors, the SLA check. Pure Python.

- Latency is from a request's start to its last byte; time to first token (TTFT) from its start to the
  first streamed content. Both over the requests that succeeded (failed and timed-out requests are
  counted apart, in the error rate).
- Percentiles interpolate linearly between the sorted values (numpy's default, "linear").
- Output tokens/s sustained = output tokens of all successful requests / wall time of the run (the
  first start to the last end); requests/s sustained = successful requests / the same wall time.
- Error rate = (errors + timeouts) / requests sent.
- Throughput over time: per second of the run, the content chunks streamed (one token each from vLLM
  and runtime/openai_server.py), requests completed and failed.
"""

from __future__ import annotations

import math
from typing import Optional

QUANTILES = (50, 95, 99)


def percentile(values: list, q: float) -> Optional[float]:
    """The q-th percentile (0-100), linear interpolation; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _ms(x: Optional[float]) -> Optional[float]:
    return None if x is None else round(x * 1000, 2)


def distribution_ms(seconds: list) -> dict:
    out = {f"p{q}": _ms(percentile(seconds, q)) for q in QUANTILES}
    out["mean"] = _ms(sum(seconds) / len(seconds)) if seconds else None
    out["max"] = _ms(max(seconds)) if seconds else None
    return out


def histogram(values: list, bins: int = 20) -> dict:
    """Equal-width bins over [min, max]: {"edges": [bins + 1], "counts": [bins]}."""
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    if hi == lo:
        return {"edges": [lo, hi], "counts": [len(values)]}
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


def over_time(outcomes: list, wall_end: float, step: float = 1.0) -> list[dict]:
    """Per `step` seconds of the run: output chunks streamed, requests completed and failed."""
    if not outcomes:
        return []
    n = max(1, math.ceil(wall_end / step))
    rows = [{"t": round(i * step, 3), "tokens_per_s": 0.0, "completed": 0, "failed": 0} for i in range(n)]
    for o in outcomes:
        for t in o.token_times:
            rows[min(n - 1, int(t / step))]["tokens_per_s"] += 1 / step
        rows[min(n - 1, int(o.end / step))]["completed" if o.ok else "failed"] += 1
    for r in rows:
        r["tokens_per_s"] = round(r["tokens_per_s"], 2)
    return rows


def summarize(result) -> dict:
    """The figures of a loadgen.LoadResult."""
    outcomes = result.outcomes
    ok = [o for o in outcomes if o.ok]
    errors = [o for o in outcomes if o.error is not None]
    timeouts = [o for o in outcomes if o.timed_out]
    wall = result.wall_seconds
    out_tokens = sum(o.tokens for o in ok)
    in_tokens = [o.prompt_tokens for o in ok if o.prompt_tokens is not None]
    from_usage = sum(1 for o in ok if o.output_tokens is not None)
    sent = len(outcomes)
    kinds: dict[str, int] = {}
    for o in errors:
        kind = o.error.split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    latencies = [o.latency for o in ok]
    return {
        "requests_sent": sent,
        "requests_ok": len(ok),
        "errors": len(errors),
        "timeouts": len(timeouts),
        "dropped": result.dropped,
        "error_rate": round((len(errors) + len(timeouts)) / sent, 4) if sent else None,
        "error_kinds": kinds,
        "error_examples": sorted({o.error for o in errors})[:5],
        "wall_seconds": round(wall, 3),
        "requests_per_s": round(len(ok) / wall, 3) if wall > 0 else None,
        "output_tokens": out_tokens,
        "output_tokens_per_s": round(out_tokens / wall, 2) if wall > 0 else None,
        "mean_output_tokens": round(out_tokens / len(ok), 2) if ok else None,
        "mean_input_tokens": round(sum(in_tokens) / len(in_tokens), 2) if in_tokens else None,
        "tokens_counted_from": ("server usage" if ok and from_usage == len(ok) else
                                "streamed chunks" if not from_usage else "server usage where sent, else chunks"),
        "latency_ms": distribution_ms(latencies),
        "ttft_ms": distribution_ms([o.first_token for o in ok if o.first_token is not None]),
        "latency_histogram_ms": {k: [round(x * 1000, 2) for x in v] if k == "edges" else v
                                 for k, v in histogram(latencies).items()},
        "over_time": over_time(outcomes, max((o.end for o in outcomes), default=0.0)),
    }


def sla_lines(stats: dict, sla) -> list[dict]:
    """One line per target in serving.sla: limit, measured, pass."""
    if sla is None:
        return []
    lines = []
    if sla.p95_latency_ms is not None:
        measured = stats["latency_ms"]["p95"]
        lines.append({"target": "p95_latency_ms", "limit": sla.p95_latency_ms, "measured": measured,
                      "pass": measured is not None and measured <= sla.p95_latency_ms,
                      "rule": "p95 latency <= limit"})
    if sla.min_tokens_per_s is not None:
        measured = stats["output_tokens_per_s"]
        lines.append({"target": "min_tokens_per_s", "limit": sla.min_tokens_per_s, "measured": measured,
                      "pass": measured is not None and measured >= sla.min_tokens_per_s,
                      "rule": "output tokens/s sustained >= limit"})
    if sla.max_error_rate is not None:
        measured = stats["error_rate"]
        lines.append({"target": "max_error_rate", "limit": sla.max_error_rate, "measured": measured,
                      "pass": measured is not None and measured <= sla.max_error_rate,
                      "rule": "(errors + timeouts) / requests sent <= limit"})
    return lines
