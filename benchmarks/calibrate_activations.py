"""Fit the activation model of compiler/memory.py to the tracer, and write data/activation_model.json.

    python benchmarks/calibrate_activations.py            # trace the grid, fit, write the model
    python benchmarks/calibrate_activations.py --check    # fit and print, write nothing

For each configuration of the calibration grid (families, methods, targets, rank, dropout,
attention, checkpointing) the tracer measures one training step at 2 and at 3 decoder layers; the
difference is what one layer keeps per token, the rest is the step's transient working set. A
least-squares fit over the layer features of `compiler.memory.layer_features` gives the per-layer
coefficients. Needs the [train] extra; takes a few minutes on two cores.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests" / "data" / "configs"


def base_configs() -> dict[str, dict]:
    """Real shapes per family (the catalog's, or a test fixture scaled to hidden 2048); the layer
    count is set per trace. Fake tensors cost nothing, so shapes are full size."""
    from recipe_ft.compiler.models import catalog_entry

    out = {}
    for name in ("meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-0.5B", "google/gemma-2-2b",
                 "microsoft/Phi-3-mini-4k-instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"):
        out[name.split("/")[-1]] = dict(catalog_entry(name)["config"])
    for name in ("phi", "gpt_neox", "falcon-new", "stablelm"):
        cfg = json.loads((CONFIGS / name / "config.json").read_text())
        scale = 2048 // cfg["hidden_size"]
        for key in ("hidden_size", "intermediate_size", "ffn_hidden_size", "head_dim"):
            if cfg.get(key):
                cfg[key] *= scale
        cfg["vocab_size"] = 50304
        for key in ("max_position_embeddings", "sliding_window"):
            if cfg.get(key):
                cfg[key] = max(cfg[key], 8192)
        out[name] = cfg
    return out


def grid():
    fams = base_configs()
    methods = [("lora", 0.05), ("lora", 0.0), ("qlora", 0.05), ("qlora", 0.0), ("dora", 0.05),
               ("qdora", 0.0), ("full", 0.0)]
    for fam, (method, dropout), gc in itertools.product(fams, methods, (False, True)):
        yield fam, fams[fam], dict(method=method, dropout=dropout, gradient_checkpointing=gc)
    few = ["Llama-3.2-1B", "Phi-3-mini-4k-instruct", "gemma-2-2b", "Qwen2.5-0.5B"]
    for fam in few:
        for extra in (dict(rank=64), dict(targets="qv"), dict(attention="eager"),
                      dict(micro_batch_size=2, seq_len=512), dict(seq_len=4096)):
            yield fam, fams[fam], dict(method="lora", dropout=0.05, gradient_checkpointing=False, **extra)
        for method in ("lora", "qlora", "full"):
            yield fam, fams[fam], dict(method=method, dropout=0.05 if method != "full" else 0.0,
                                       gradient_checkpointing=True, seq_len=4096)


def qv_targets(arch):
    from recipe_ft.compiler.architecture import linear_modules

    names = [m.name for m in linear_modules(arch)]
    return [n for n in names if n in ("q_proj", "v_proj")] or names[:1]


def measure(cfg: dict, opts: dict) -> dict:
    from recipe_ft.compiler import memory
    from recipe_ft.compiler.architecture import from_config
    from recipe_ft.runtime.trace import TraceSpec, trace

    opts = dict(opts)
    seq = opts.pop("seq_len", 1024)
    mbs = opts.pop("micro_batch_size", 1)
    rows = {}
    for layers in (2, 3):
        c = dict(cfg, num_hidden_layers=layers)
        arch = from_config(c, "calibration")
        targets = opts.get("targets", "all-linear")
        if targets == "qv":
            targets = qv_targets(arch)
        spec_opts = {k: v for k, v in opts.items() if k != "targets"}
        spec_opts["attention"] = memory.attention_for(arch, opts.get("attention", "auto"))
        # two micro batches per step: the first one's gradients are live through the second
        result = trace(TraceSpec(config=c, targets=targets, seq_len=seq, micro_batch_size=mbs,
                                 gradient_accumulation_steps=2, **spec_opts))
        shape = memory.StepShape(method=opts["method"], dropout=opts["dropout"], seq_len=seq,
                                 micro_batch_size=mbs, targets=tuple(targets) if isinstance(targets, list)
                                 else targets, rank=opts.get("rank", 16),
                                 gradient_checkpointing=opts["gradient_checkpointing"],
                                 attention=spec_opts["attention"], gradient_accumulation_steps=2)
        static = result.weights_bytes + result.trainable_bytes * 2 + result.optimizer_bytes
        # DoRA's forward temporaries are modelled apart (memory.dora_excess_bytes), not fitted
        rows[layers] = dict(arch=arch, shape=shape, result=result,
                            rest=result.peak_bytes - static - memory.head_bytes(arch, shape)
                            - memory.dora_excess_bytes(arch, shape))
    t = seq * mbs
    arch, shape = rows[2]["arch"], rows[2]["shape"]
    return dict(
        features=memory.layer_features(arch, shape),
        transient_features=memory.transient_features(arch, shape),
        tokens=t,
        kept_when_checkpointing=memory.checkpoint_bytes_per_token(arch, shape),
        checkpointing=shape.gradient_checkpointing,
        per_layer=(rows[3]["rest"] - rows[2]["rest"]) / t,
        tied_full=shape.method == "full" and arch.tied_embeddings,
        vocab_hidden=arch.vocab_size * arch.hidden_size,
        rest=rows[2]["rest"],
        peak=rows[2]["result"].peak_bytes,
    )


def nnls(a, b, iterations: int = 1000):
    """Non-negative least squares (Lawson and Hanson's active set method)."""
    import numpy as np

    n = a.shape[1]
    active = np.zeros(n, bool)
    x = np.zeros(n)
    w = a.T @ (b - a @ x)
    for _ in range(iterations):
        if active.all() or w[~active].max() <= 1e-10:
            break
        active[np.argmax(np.where(~active, w, -np.inf))] = True
        while True:
            z = np.zeros(n)
            z[active] = np.linalg.lstsq(a[:, active], b, rcond=None)[0]
            if (z[active] > 0).all():
                x = z
                break
            bad = active & (z <= 0)
            step = np.min(x[bad] / (x[bad] - z[bad]))
            x = x + step * (z - x)
            active &= x > 1e-12
        w = a.T @ (b - a @ x)
    return x


def fit(samples: list[dict]) -> dict:
    """Per-layer coefficients on the layer features (relative error weighted, non-negative), then
    the transient coefficients on what the step holds beyond the kept layers and the LM head."""
    import numpy as np

    # tied full fine-tuning peaks in its own phase (the embedding's gradient, activations freed):
    # no per-layer information there; it is fitted as a phase below
    tied_full = [s for s in samples if s.get("tied_full")]
    samples = [s for s in samples if not s.get("tied_full")]
    plain = [s for s in samples if not s["checkpointing"] and s["per_layer"] > 0]
    keys = sorted({k for s in plain for k, v in s["features"].items() if v})
    x = np.array([[s["features"].get(k, 0.0) for k in keys] for s in plain])
    y = np.array([s["per_layer"] for s in plain])
    coef = nnls(x / y[:, None], np.ones(len(y)))
    layer = dict(zip(keys, coef))

    def per_layer(s):
        return sum(layer.get(k, 0.0) * v for k, v in s["features"].items())

    tkeys = sorted({k for s in samples for k in s["transient_features"]})
    rows, rest = [], []
    for s in samples:
        kept = s["kept_when_checkpointing"] if s["checkpointing"] else per_layer(s)
        feats = dict(s["transient_features"])
        if s["checkpointing"]:
            feats["recomputed_layer"] = per_layer(s) * s["tokens"]
        rows.append([feats.get(k, 0.0) for k in tkeys + ["recomputed_layer"]])
        rest.append(max(0.0, s["rest"] - 2 * kept * s["tokens"]))
    tcoef = nnls(np.array(rows), np.array(rest))
    transient = dict(zip(tkeys + ["recomputed_layer"], tcoef))

    errors = []
    for s, row in zip(samples, rows):
        kept = s["kept_when_checkpointing"] if s["checkpointing"] else per_layer(s)
        predicted = 2 * kept * s["tokens"] + float(np.dot(row, tcoef))
        errors.append(abs(predicted - s["rest"]) / s["peak"])
    phase = max((s["rest"] / s["vocab_hidden"] for s in tied_full), default=12.0)
    return {
        "layer": {k: round(float(v), 4) for k, v in layer.items() if v > 0},
        "transient": {k: round(float(v), 4) for k, v in transient.items() if v > 0},
        "phases": {"full_tied_vocab": round(float(phase), 4)},
        "calibration": {"configurations": len(samples),
                        "max_peak_error_at_2_layers": round(max(errors), 4),
                        "mean_peak_error_at_2_layers": round(sum(errors) / len(errors), 4)},
    }


def main(argv=None) -> int:
    warnings.filterwarnings("ignore")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print the fit, write nothing")
    parser.add_argument("--samples", type=Path, default=Path("/tmp/recipe-activation-samples.json"))
    parser.add_argument("--reuse", action="store_true", help="fit the samples already traced")
    args = parser.parse_args(argv)
    if args.reuse and args.samples.exists():
        samples = json.loads(args.samples.read_text())
        print(f"fitting {len(samples)} traced configurations from {args.samples}")
    else:
        samples = []
        start = time.time()
        for fam, cfg, opts in grid():
            s = measure(cfg, opts)
            s["label"] = f"{fam} {opts}"
            samples.append(s)
            print(f"{s['label']:90s} layer/T={s['per_layer']:9.1f} rest={s['rest'] / 2**20:9.1f} MiB",
                  flush=True)
        print(f"{len(samples)} configurations traced in {time.time() - start:.0f} s")
        args.samples.write_text(json.dumps(samples))
    model = fit(samples)
    # terms measured apart (their own traces, see "measured_apart") are kept, not refitted
    out = ROOT / "compiler" / "data" / "activation_model.json"
    kept = json.loads(out.read_text()) if out.exists() else {}
    for key in kept.get("measured_apart", {}):
        for part in ("layer", "transient"):
            if key in kept.get(part, {}):
                model[part][key] = kept[part][key]
    if kept.get("measured_apart"):
        model["measured_apart"] = kept["measured_apart"]
    model["source"] = ("fitted by benchmarks/calibrate_activations.py to runtime/trace.py "
                       "(transformers + peft + trl fused head, fake tensors) on its calibration grid")
    print(json.dumps(model, indent=2))
    if not args.check:
        out.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
