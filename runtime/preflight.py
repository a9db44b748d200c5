"""Checks before a run loads anything: packages, device versus plan, output directory, disk space.

Each failure is one clear message (RecipeError), raised before any model is loaded.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..schemas.errors import RecipeError
from ..schemas.plan import Plan

CPU_MAX_PARAMETERS = 2_000_000_000  # plans up to this size may run on a CPU (slowly); larger need a GPU
GIB = 2**30


def torch_dtype(precision: str):
    """The torch dtype of a plan's precision name (bf16 | bf16-pure | fp16 | fp32)."""
    import torch

    return {"bf16": torch.bfloat16, "bf16-pure": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


@dataclass(frozen=True)
class Device:
    kind: str  # "cuda" | "cpu"
    name: str
    memory_bytes: int
    precision: str  # the precision the run uses on this device

    @property
    def torch_device(self) -> str:
        return "cuda:0" if self.kind == "cuda" else "cpu"

    def describe(self) -> str:
        if self.kind == "cuda":
            return f"{self.name} ({self.memory_bytes / GIB:.1f} GiB), {self.precision}"
        return f"CPU ({os.cpu_count()} cores), {self.precision}"

    def peak_memory(self) -> dict:
        if self.kind == "cuda":
            import torch

            return {"peak_memory_bytes": torch.cuda.max_memory_allocated(),
                    "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
                    "peak_memory_kind": "torch.cuda.max_memory_allocated"}
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        return {"peak_memory_bytes": rss, "peak_memory_kind": "process peak RSS (CPU run; includes Python and libraries)"}


def _packages(plan: Plan) -> None:
    needed = ["torch", "transformers", "peft", "trl", "accelerate", "datasets", "matplotlib"]  # matplotlib: loss.png
    if plan.method in ("qlora", "qdora") or plan.training.optimizer != "adamw":
        needed.append("bitsandbytes")
    if plan.distributed.strategy == "deepspeed":
        needed.append("deepspeed")
    from ..compiler.sources import parse

    if any(s.location.lower().endswith(".parquet") or s.kind in ("hub", "disk")
           for s in parse(plan.recipe.data.train, plan.recipe.data.format)):
        needed.append("pyarrow")
    trackers = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
    needed += [trackers[t] for t in plan.recipe.training.report_to]
    missing = [p for p in needed if importlib.util.find_spec(p) is None]
    if missing:
        trackers_missing = [p for p in missing if p in trackers]
        if trackers_missing:
            raise RecipeError(f"training.report_to asks for {', '.join(trackers_missing)}, which is not installed: "
                              f"pip install {' '.join(trackers_missing)}, or remove it from training.report_to")
        extra = "train,deepspeed" if "deepspeed" in missing else "train"
        raise RecipeError(f"missing packages for `recipe run`: {', '.join(missing)}. Install the training stack: "
                          f"pip install 'recipe-ft[{extra}]' (on a GPU host, the CUDA build of torch first)")


def _device(plan: Plan) -> Device:
    import torch

    precision = plan.training.precision
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        if precision in ("bf16", "bf16-pure") and not torch.cuda.is_bf16_supported():
            raise RecipeError(f"this GPU ({props.name}) has no bf16; set training.precision: fp16 and plan again")
        if props.total_memory < plan.memory.required_bytes:
            raise RecipeError(
                f"this GPU ({props.name}, {props.total_memory / GIB:.1f} GiB) is smaller than the plan needs "
                f"({plan.memory.required_bytes / GIB:.1f} GiB on {plan.hardware.gpu}); plan for it with "
                f"--set budget.custom_gpus='[{{name: here, memory_gb: {props.total_memory / GIB:.1f}, bf16_tflops: 100}}]' "
                f"--set budget.gpu=here")
        here = torch.cuda.device_count()
        if plan.distributed.processes > 1 and here < plan.distributed.gpus_per_node:
            raise RecipeError(f"the plan runs {plan.distributed.gpus_per_node} processes on each machine, and this one "
                              f"has {here} GPU(s): plan with --set budget.gpu_count={here}")
        return Device("cuda", props.name, props.total_memory, precision)
    if plan.model.parameters > CPU_MAX_PARAMETERS:
        raise RecipeError(f"no GPU here, and a {plan.model.parameters / 1e9:.1f}B-parameter model is too large to "
                          f"train on a CPU; run on a host with a {plan.hardware.gpu}")
    if plan.training.optimizer.startswith("paged_"):
        raise RecipeError("paged optimizers need a GPU; on a CPU use training.optimizer: adamw or adamw_8bit")
    return Device("cpu", "cpu", 0, "fp32" if precision == "fp16" else precision)


def _output(plan: Plan, plan_dir: Path) -> None:
    from .outdir import usable_dir

    run_dir = (plan_dir / plan.output_dir).resolve()
    usable_dir(run_dir, "output.dir")  # not a file, not under one, writable
    probe_dir = run_dir
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    adapter = plan.model.trainable_parameters * 4
    optimizer = plan.memory.components.get("optimizer_states", 0) + plan.memory.components.get(
        "optimizer_states_paged", 0)
    needed = 3 * (adapter + optimizer) + 200 * 2**20  # two checkpoints kept plus the final adapter
    free = shutil.disk_usage(probe_dir).free
    if free < needed:
        raise RecipeError(f"not enough disk space in {probe_dir}: {free / GIB:.1f} GiB free, checkpoints need "
                          f"about {needed / GIB:.1f} GiB")


def _model_files(plan: Plan) -> None:
    if plan.model.source == "local":
        path = Path(plan.model.path)
        if not path.is_dir():
            raise RecipeError(f"the model directory {path} is gone")
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            raise RecipeError(f"{path} holds a config.json but no weights (*.safetensors); `recipe run` needs the "
                              f"weights (plans only need the config)")


def _attention(plan: Plan, device: Device) -> None:
    """Packed rows only where packed examples cannot attend to each other: flash_attention_2."""
    attention = plan.build.attention if plan.build else plan.training.attention
    if plan.training.packing and attention != "flash_attention_2":
        raise RecipeError(f"training.packing: this plan packs examples with {attention} attention, which lets a "
                          f"packed example attend to the ones before it in its row; re-plan (packing now needs "
                          f"training.attention: flash_attention_2) or set training.packing: false")
    if attention != "flash_attention_2":
        return
    why = " (packing needs it: its varlen kernels keep packed examples apart)" if plan.training.packing else ""
    if device.kind != "cuda":
        raise RecipeError(f"training.attention: flash_attention_2{why} runs only on a CUDA GPU, and this run is on "
                          f"a CPU; here set training.packing: false and training.attention: auto (sdpa/eager pack "
                          f"examples into one causal mask, so packing is refused on a CPU)")
    if importlib.util.find_spec("flash_attn") is None:
        raise RecipeError(f"training.attention: flash_attention_2{why} needs the flash-attn package: "
                          f"pip install flash-attn --no-build-isolation")


def _processes(plan: Plan) -> None:
    """This launch starts as many processes as the plan runs: other counts train another batch size
    (per-process micro batches x accumulation x processes) than the plan's, and nothing else would say so."""
    try:
        here = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        here = 1
    planned = plan.distributed.processes
    if here == planned:
        return
    if planned > 1:
        raise RecipeError(
            f"the plan runs {planned} processes ({plan.distributed.strategy}), and this launch has {here}"
            f"{'' if 'WORLD_SIZE' in os.environ else ' (no launcher set WORLD_SIZE)'}: it would train "
            f"{here}/{planned} of the planned batch. Run `recipe run PLAN` without --worker (it starts the plan's "
            f"processes: torchrun on a CPU; `accelerate launch --cpu` starts one whatever --num_processes says), "
            f"or plan for {here} with --set budget.gpu_count={here}")
    raise RecipeError(f"the plan runs 1 process, and this launch has {here} (WORLD_SIZE={here}): each would train "
                      f"the whole planned batch. Run `recipe run PLAN` without a launcher, or plan for {here} "
                      f"processes with --set budget.gpu_count={here}")


def preflight(plan: Plan, plan_dir: Path) -> Device:
    _processes(plan)
    _packages(plan)
    _model_files(plan)
    device = _device(plan)
    _attention(plan, device)
    _output(plan, plan_dir)
    return device
