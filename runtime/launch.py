"""Launch artifacts for plans on several GPUs: accelerate config (DDP, FSDP, DeepSpeed), torchrun and
SkyPilot. `recipe run` uses them to launch itself; `recipe launch` writes them for a person to run.

Pure Python: writing a config imports no training library.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from ..schemas.plan import Plan

DECODER_LAYERS = {
    "llama": "LlamaDecoderLayer", "mistral": "MistralDecoderLayer", "mixtral": "MixtralDecoderLayer",
    "qwen2": "Qwen2DecoderLayer", "gemma": "GemmaDecoderLayer", "gemma2": "Gemma2DecoderLayer",
    "phi": "PhiDecoderLayer", "phi3": "Phi3DecoderLayer", "falcon": "FalconDecoderLayer",
    "gpt_neox": "GPTNeoXLayer", "stablelm": "StableLmDecoderLayer",
}
# SkyPilot's accelerator names for the catalog's GPUs
SKYPILOT_GPUS = {"T4": "T4", "L4": "L4", "A10G": "A10G", "A10": "A10", "L40S": "L40S", "RTX-4090": "RTX4090",
                 "RTX-3090": "RTX3090", "RTX-A6000": "RTXA6000", "A100-40GB": "A100", "A100-80GB": "A100-80GB",
                 "A100-80GB-PCIE": "A100-80GB", "H100-80GB": "H100", "H100-80GB-PCIE": "H100", "H200": "H200",
                 "B200": "B200", "MI300X": "MI300X"}
PORT = 29500
WORKER_FLAG = "--worker"


def deepspeed_config(plan: Plan) -> dict:
    d = plan.distributed
    stage = d.zero_stage or 3
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                  "reduce_bucket_size": "auto"}
    if stage == 3:
        zero.update({"stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
                     "stage3_gather_16bit_weights_on_model_save": True})
    if d.cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    precision = plan.training.precision
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": precision in ("bf16", "bf16-pure")},
        "fp16": {"enabled": precision == "fp16"},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }


def accelerate_config(plan: Plan, deepspeed_file: Path | None = None, cpu: bool = False) -> dict:
    d = plan.distributed
    cfg: dict = {
        "compute_environment": "LOCAL_MACHINE",
        "num_processes": d.processes,
        "num_machines": d.nodes,
        "machine_rank": 0,
        "main_process_port": PORT,
        "mixed_precision": {"bf16": "bf16", "bf16-pure": "bf16", "fp16": "fp16"}.get(plan.training.precision, "no"),
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": cpu,
        "downcast_bf16": "no",
    }
    if d.strategy == "fsdp":
        cfg["distributed_type"] = "FSDP"
        cfg["fsdp_config"] = {
            "fsdp_version": 2,
            "fsdp_reshard_after_forward": True,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": DECODER_LAYERS.get(plan.model.family, "DecoderLayer"),
            "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_offload_params": d.cpu_offload,
            "fsdp_activation_checkpointing": plan.training.gradient_checkpointing,
        }
    elif d.strategy == "deepspeed":
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {"deepspeed_config_file": str(deepspeed_file) if deepspeed_file else "deepspeed.json",
                                   "zero3_init_flag": (d.zero_stage or 3) == 3}
    else:
        cfg["distributed_type"] = "MULTI_CPU" if cpu else "MULTI_GPU"
    return cfg


def _yaml(data: dict) -> str:
    import io

    from ruamel.yaml import YAML

    out = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(data, out)
    return out.getvalue()


def worker_args(plan_file: Path) -> list[str]:
    return ["-m", "recipe_ft", "run", str(plan_file), WORKER_FLAG]


def accelerate_command(config_file: Path, plan_file: Path, multi_node: bool) -> list[str]:
    cmd = ["accelerate", "launch", "--config_file", str(config_file)]
    if multi_node:
        cmd += ["--machine_rank", "${NODE_RANK}", "--main_process_ip", "${MAIN_ADDR}"]
    return cmd + worker_args(plan_file)


def torchrun_command(plan: Plan, plan_file: Path, python: str = "python") -> list[str]:
    d = plan.distributed
    per_node = d.processes // max(1, d.nodes)
    cmd = [python, "-m", "torch.distributed.run", f"--nproc_per_node={per_node}", f"--nnodes={d.nodes}"]
    if d.nodes > 1:
        cmd += ["--node_rank=${NODE_RANK}", "--master_addr=${MAIN_ADDR}", f"--master_port={PORT}"]
    else:
        cmd += ["--standalone"]
    return cmd + worker_args(plan_file)


def workdir_of(plan: Plan) -> Path:
    """SkyPilot's workdir: the recipe's folder (its data and local model paths are relative to it)."""
    return Path(plan.lock.recipe_path).resolve().parent


def remote_path(path: Path, workdir: Path) -> str:
    """`path` as the remote machine sees it: relative to the synced workdir (~/sky_workdir)."""
    rel = os.path.relpath(Path(path).resolve(), workdir.resolve())
    if rel.startswith(".."):
        raise ValueError(f"{path} is outside the SkyPilot workdir {workdir}")
    return Path(rel).as_posix()


INSTALL_ENV = "RECIPE_FT_INSTALL"


def install_spec(plan: Plan, workdir: Path) -> str:
    """What the SkyPilot setup installs (`pip install "$RECIPE_FT_INSTALL"`): this project from the synced
    workdir when the workdir is a checkout of it, else the package at the version that wrote the plan (a
    recipe's folder, e.g. recipes/, is not installable). `sky launch --env RECIPE_FT_INSTALL=...` replaces it
    (a wheel, a git URL, an index the package is on)."""
    project = workdir / "pyproject.toml"
    if project.is_file() and 'name = "recipe-ft"' in project.read_text(errors="replace"):
        return ".[train]"
    return f"recipe-ft[train]=={plan.tool_version}"


def skypilot_task(plan: Plan, plan_file: Path, workdir: Path | None = None) -> dict:
    """A SkyPilot task run from the recipe's folder (`workdir: .`): every path in it is relative to it."""
    d = plan.distributed
    per_node = d.processes // max(1, d.nodes)
    gpu = SKYPILOT_GPUS.get(plan.hardware.gpu, plan.hardware.gpu)
    workdir = workdir or workdir_of(plan)
    remote_plan = remote_path(plan_file, workdir)
    run = ["set -e", "cd ~/sky_workdir",
           'export NODE_RANK=${SKYPILOT_NODE_RANK} MAIN_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)']
    if d.processes > 1:
        config = remote_path(Path(plan_file).parent / "accelerate.yaml", workdir)
        run.append(f"accelerate launch --config_file {config} --num_processes "
                   f"{d.processes} --num_machines {d.nodes} --machine_rank $NODE_RANK --main_process_ip $MAIN_ADDR "
                   f"--main_process_port {PORT} " + " ".join(worker_args(Path(remote_plan))))
    else:
        run.append(f"recipe run {remote_plan}")
    return {
        "name": plan.name,
        "resources": {"accelerators": f"{gpu}:{per_node}", "disk_size": 256},
        "num_nodes": d.nodes,
        "workdir": ".",
        "envs": {INSTALL_ENV: install_spec(plan, workdir)},
        "setup": f"set -e\npip install 'torch>=2.4'\npip install \"${INSTALL_ENV}\"\n",
        "run": "\n".join(run) + "\n",
    }


def file_names(plan: Plan, target: str) -> list[str]:
    """The files write_artifacts writes for `target` (and plan.json, which `recipe launch` writes)."""
    names = ["plan.json"] + (["deepspeed.json"] if plan.distributed.strategy == "deepspeed" else [])
    names += ["accelerate.yaml"] if target in ("accelerate", "skypilot") else []
    return names + [{"accelerate": "launch.sh", "torchrun": "torchrun.sh", "skypilot": "skypilot.yaml"}[target]]


def check_out_dir(out_dir: Path, names: list[str]) -> None:
    """Refuse to overwrite files of these names that `recipe launch` did not write there."""
    from ..compiler.discover import LAUNCH_MARKER
    from ..schemas.errors import RecipeError

    try:
        ours = set(json.loads((out_dir / LAUNCH_MARKER).read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        ours = set()
    theirs = [n for n in names if (out_dir / n).exists() and n not in ours]
    if theirs:
        raise RecipeError(f"{out_dir} already holds {', '.join(theirs)}, not written by `recipe launch`: "
                          f"nothing is overwritten; give -o another directory")


def write_artifacts(plan: Plan, plan_file: Path, out_dir: Path, target: str, cpu: bool = False) -> list[Path]:
    """Write the launch files for `target` (accelerate | torchrun | skypilot); returns their paths.
    Files of the same names that this tool did not write are not overwritten (RecipeError)."""
    check_out_dir(out_dir, [n for n in file_names(plan, target) if n != "plan.json"])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    ds_file = None
    if plan.distributed.strategy == "deepspeed":
        ds_file = out_dir / "deepspeed.json"
        ds_file.write_text(json.dumps(deepspeed_config(plan), indent=2) + "\n")
        written.append(ds_file)
    if target in ("accelerate", "skypilot"):
        acc = out_dir / "accelerate.yaml"
        acc.write_text(_yaml(accelerate_config(plan, ds_file, cpu)))
        written.append(acc)
    if target == "accelerate":
        script = out_dir / "launch.sh"
        multi = plan.distributed.nodes > 1
        lines = ["#!/bin/sh", f"# {plan.name}: {plan.distributed.processes} processes, {plan.distributed.strategy}"
                 + (", on every node: NODE_RANK=0..N-1 MAIN_ADDR=<node 0's address>" if multi else ""),
                 "exec " + " ".join(accelerate_command(acc, plan_file, multi)) + "\n"]
        script.write_text("\n".join(lines))
        script.chmod(0o755)
        written.append(script)
    elif target == "torchrun":
        script = out_dir / "torchrun.sh"
        script.write_text("#!/bin/sh\nexec " + " ".join(torchrun_command(plan, plan_file)) + "\n")
        script.chmod(0o755)
        written.append(script)
    elif target == "skypilot":
        task = out_dir / "skypilot.yaml"
        workdir = workdir_of(plan)
        try:
            spec = skypilot_task(plan, plan_file, workdir)
        except ValueError:  # launch files written outside the recipe's folder: sync their common folder
            workdir = Path(os.path.commonpath([workdir, Path(plan_file).resolve().parent]))
            spec = skypilot_task(plan, plan_file, workdir)
        task.write_text(f"# from the recipe's folder (the workdir, synced to ~/sky_workdir):\n"
                        f"#   cd {shlex.quote(str(workdir))} && sky launch -c {plan.name} "
                        f"{remote_path(task, workdir)}\n" + _yaml(spec))
        written.append(task)
    _mark(out_dir, written)
    return written


def _mark(out_dir: Path, written: list[Path]) -> None:
    """List the generated files, so that `recipe validate DIR` does not read them as recipes."""
    from ..compiler.discover import LAUNCH_MARKER

    marker = out_dir / LAUNCH_MARKER
    try:
        listed = set(json.loads(marker.read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        listed = set()
    listed |= {p.name for p in written} | {"plan.json"}
    from .outdir import atomic_write

    atomic_write(marker, json.dumps({"tool": "recipe", "kind": "launch", "files": sorted(listed)}) + "\n")


def is_worker() -> bool:
    """Started by a launcher (accelerate, torchrun): one of the processes, not the one that launches."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def relaunch(plan: Plan, plan_file: Path, run_dir: Path, cpu: bool) -> list[str]:
    """The command that runs the plan's processes on this machine."""
    launch_dir = run_dir / "launch"
    if cpu:  # accelerate's --cpu runs one process whatever num_processes says; torchrun runs them all (gloo)
        write_artifacts(plan, plan_file, launch_dir, "torchrun", cpu=True)
        return torchrun_command(plan, plan_file, python=sys.executable)
    write_artifacts(plan, plan_file, launch_dir, "accelerate")
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(launch_dir / "accelerate.yaml")] + worker_args(plan_file)


def quote(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)
