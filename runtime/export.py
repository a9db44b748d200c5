"""`recipe export RUN_DIR --merge` and `recipe eval`: merge an adapter for serving, score a model again.

A QLoRA adapter is merged into the full-precision base (in the compute dtype), never into the 4-bit
one: merging into quantized weights is lossy. The merged model's logits are checked against the
base with the adapter applied unmerged, on a few held-out prompts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError
from ..schemas.plan import MULTIMODAL_NOTE, Plan
from . import outdir
from .preflight import torch_dtype

TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 5e-3}  # max |difference| / max |logit|


def read_run(run_dir: Path) -> Plan:
    path = run_dir / "plan.json"
    if not path.is_file():
        raise RecipeError(f"{run_dir}: not a run directory (no plan.json); point at the output.dir of a `recipe run`")
    from ..schemas.plan import Plan as PlanModel

    return PlanModel.model_validate_json(path.read_text())


def _precision(plan: Plan) -> str:
    import torch

    if plan.training.precision == "fp16" and not torch.cuda.is_available():
        return "fp32"
    return "bf16" if plan.training.precision == "bf16-pure" else plan.training.precision


def load_for_eval(plan: Plan, model_path: Optional[Path]):
    """The model to score: the base, the base with an adapter, or a merged model directory."""
    import torch
    from transformers import AutoTokenizer

    from . import text_model

    if model_path is not None and not (model_path / "adapter_config.json").is_file() and \
            not (model_path / "config.json").is_file():  # refused before anything is loaded
        inside = [str(model_path / sub) for sub in ("adapter", "merged", "model") if (model_path / sub).is_dir()]
        raise RecipeError(f"{model_path}: neither a PEFT adapter (adapter_config.json) nor a model (config.json)"
                          + (f"; a run directory? pass {' or '.join(inside)}" if inside else ""))
    base_dir = plan.model.path or plan.model.name
    trust = plan.recipe.model.trust_remote_code
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch_dtype(_precision(plan))
    if model_path is not None and (model_path / "config.json").is_file() and not (model_path / "adapter_config.json").is_file():
        model = text_model.load(str(model_path), dtype=dtype, trust_remote_code=trust).to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust)
    else:
        kwargs = {}
        if plan.method in ("qlora", "qdora"):  # score as trained: on the quantized base
            from transformers import BitsAndBytesConfig

            q = plan.adapter.quantization
            kwargs["quantization_config"] = (BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q["type"],
                                                                bnb_4bit_use_double_quant=q["double_quant"],
                                                                bnb_4bit_compute_dtype=dtype)
                                             if q["bits"] == 4 else BitsAndBytesConfig(load_in_8bit=True))
            kwargs["device_map"] = {"": device}
        model = text_model.load(base_dir, dtype=dtype, trust_remote_code=trust, **kwargs)
        if "device_map" not in kwargs:
            model = model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(str(model_path or base_dir), trust_remote_code=trust)
        if model_path is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(model_path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def evaluate_saved(plan: Plan, plan_dir: Path, model_path: Optional[Path]) -> dict:
    """Score a model on the recipe's held-out data; returns the evaluation and the gate."""
    from .evaluate import evaluate, gate, load_schema
    from .train import load_data

    model, tokenizer = load_for_eval(plan, model_path)
    _, eval_rows, _, _ = load_data(plan, plan_dir, tokenizer)
    if not eval_rows:
        raise RecipeError("the recipe has no held-out data: set data.eval or data.eval_fraction")
    result = evaluate(plan, model, tokenizer, eval_rows, load_schema(plan, plan_dir))
    return {"evaluation": result, "gate": gate(plan, result)}


def _write(path: Path, text: str, executable: bool = False) -> None:
    outdir.atomic_write(path, text, mode=0o755 if executable else 0o644)


def serving_files(plan: Plan, run_dir: Path, merged: Optional[Path]) -> list[Path]:
    """vLLM commands (merged, or the base with the adapter) and Ollama Modelfiles."""
    serve = run_dir / "serve"
    outdir.check_serve_files(serve)
    name = plan.name
    base = plan.model.path or plan.model.name
    adapter = run_dir / "adapter"
    max_len = plan.training.max_seq_len
    dtype = {"bf16": "bfloat16", "bf16-pure": "bfloat16", "fp16": "float16", "fp32": "float32"}[plan.training.precision]
    written = []
    if merged is not None:
        arch = _architecture(merged)
        _write(serve / "vllm_merged.sh", f"#!/bin/sh\n# Serve the merged model with vLLM (OpenAI-compatible API on :8000).\n"
                                         f"{arch}exec vllm serve {merged} --served-model-name {name} --dtype {dtype} "
                                         f"--max-model-len {max_len} \"$@\"\n", executable=True)
        _write(serve / "Modelfile", f"# ollama create {name} -f {serve / 'Modelfile'} && ollama run {name}\n"
                                    f"FROM {merged}\nPARAMETER temperature 0\n{arch}")
        written += [serve / "vllm_merged.sh", serve / "Modelfile"]
    if adapter.is_dir() and plan.adapter is not None:
        rank = plan.adapter.rank
        text_only = _text_model_note(plan)
        _write(serve / "vllm_lora.sh", f"#!/bin/sh\n# Serve the base with the adapter unmerged; ask for model \"{name}\".\n"
                                       f"{text_only}exec vllm serve {base} --enable-lora --lora-modules {name}={adapter} "
                                       f"--max-lora-rank {max(8, rank)} --dtype {dtype} --max-model-len {max_len} \"$@\"\n",
               executable=True)
        _write(serve / "Modelfile.adapter", f"# ollama create {name} -f {serve / 'Modelfile.adapter'} && ollama run {name}\n"
                                            f"FROM {base}\nADAPTER {adapter}\nPARAMETER temperature 0\n{text_only}")
        written += [serve / "vllm_lora.sh", serve / "Modelfile.adapter"]
    if written:
        outdir.mark_serve(serve)
    return written


def _architecture(merged: Path) -> str:
    """A comment naming the merged model's architecture, from its config.json (what vLLM and Ollama build)."""
    try:
        cfg = json.loads((merged / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    names = ", ".join(cfg.get("architectures") or ()) or "?"
    return f"# architecture: {names} (model_type '{cfg.get('model_type')}', from {merged / 'config.json'})\n"


def _text_model_note(plan: Plan) -> str:
    """For a multimodal base trained as its text model: a comment saying what the adapter's modules are."""
    if not any(MULTIMODAL_NOTE in w for w in plan.warnings):
        return ""
    return ("# the base is a multimodal checkpoint and the adapter was trained on its text model (see the plan's\n"
            "# warning): its module names are the text model's; if the server serves the vision-language model and\n"
            "# does not map them, serve the merged text model instead (recipe export --merge, vllm_merged.sh)\n")


def merge(run_dir: Path, output: Optional[Path] = None, log=print) -> dict:
    """Merge the run's adapter into the full-precision base, save safetensors, check the logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    from . import text_model

    plan = read_run(run_dir)
    if plan.method == "full":
        raise RecipeError("a full fine-tuning run has no adapter to merge: its model is in the run's model/ folder")
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise RecipeError(f"{adapter}: no adapter (was the run interrupted? resume it with `recipe run --resume`)")
    out = (Path(output) if output is not None else run_dir / "merged").resolve()
    check_output(out, run_dir)
    precision = _precision(plan)
    dtype = torch_dtype(precision)
    base_dir = plan.model.path or plan.model.name
    trust = plan.recipe.model.trust_remote_code
    tokenizer = AutoTokenizer.from_pretrained(str(adapter), trust_remote_code=trust)
    log(f"merging {adapter} into {base_dir} in {precision}"
        + (" (the full-precision base, not the 4-bit one)" if plan.method in ("qlora", "qdora") else ""))
    base = text_model.load(base_dir, dtype=dtype, trust_remote_code=trust)
    model = PeftModel.from_pretrained(base, str(adapter))
    model.eval()
    probe = _probe(run_dir, tokenizer)
    with torch.no_grad():
        reference = model(**probe).logits.float()
    merged = model.merge_and_unload()
    with torch.no_grad():
        logits = merged(**probe).logits.float()
    scale = max(1.0, reference.abs().max().item())
    diff = (logits - reference).abs().max().item() / scale
    tolerance = TOLERANCE[precision]
    if diff > tolerance:
        raise RecipeError(f"merged logits differ from base + adapter by {diff:.2e} (relative), above {tolerance:g}: "
                          f"not saving the merged model")
    check = {"max_relative_logit_difference": diff, "tolerance": tolerance, "dtype": precision,
             "probe_tokens": int(probe["input_ids"].numel())}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))  # this tool's own, removed on failure
    try:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        outdir.atomic_write(tmp / "merge_check.json", json.dumps(check, indent=2) + "\n")
        outdir.publish_export(tmp, out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if outdir.disk_full(exc):
            raise RecipeError(f"the disk is full: the merged model could not be saved in {out.parent} "
                              f"({exc.strerror}); nothing was replaced. Free some space and export again") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = serving_files(plan, run_dir, out)
    return {"merged": out, "check": check, "serving": files}


def check_output(out: Path, run_dir: Path) -> None:
    """Before anything is loaded: the merged model goes to a new directory or an earlier export's."""
    here = Path.cwd().resolve()
    if out == here or out in here.parents:
        raise RecipeError(f"refusing to export into {out}: it is the current directory (or holds it). "
                          f"Give -o a new directory (it is created)")
    inside = out.relative_to(run_dir).parts[:1] if run_dir in out.parents else ()
    if out == run_dir or out in run_dir.parents or inside in (("adapter",), ("checkpoints",), ("model",),
                                                             ("serve",), ("launch",), ("ranks",)):
        raise RecipeError(f"refusing to export into {out}: it is (or holds, or is inside) the run's own files. "
                          f"Give -o a new directory (it is created)")
    outdir.check_export_dir(out)


def _probe(run_dir: Path, tokenizer) -> dict:
    """A few tokenized held-out prompts (or a fixed sentence) to compare logits on."""
    texts = []
    report = run_dir / "run_report.json"
    if report.is_file():
        data = json.loads(report.read_text())
        for e in ((data.get("evaluation") or {}).get("tuned") or {}).get("examples", [])[:4]:
            texts.append(e["input"] + " " + e["reference"])
    texts = texts or ["The quick brown fox jumps over the lazy dog.", "Classify this support ticket."]
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        return dict(tokenizer(texts, return_tensors="pt", padding=True))
    finally:
        tokenizer.padding_side = side
