"""Plans on several GPUs: generated accelerate / DeepSpeed / torchrun / SkyPilot files (parsed and
checked), and a real two-process run on CPU (gloo) whose ranks end with identical adapters."""

import json
import shutil

import pytest
from ruamel.yaml import YAML

from recipe_ft.compiler.pipeline import compile_file
from recipe_ft.runtime import launch

yaml = YAML(typ="safe")
RECIPE = """\
task: chat
model:
  base: {model}
data:
  train: train.jsonl
  examples: 20000
  tokens_per_example: 600
method:
  name: lora
training:
  max_seq_len: 2048
  batch_size: 32
  gradient_checkpointing: true
budget:
  gpu: H100-80GB
  gpu_count: {count}
  max_gpus: 16
  nodes: 2
distributed:
  strategy: {strategy}
  zero_stage: {stage}
"""


def plan_for(tmp_path, strategy="fsdp", count=8, stage=3, model="meta-llama/Llama-3.1-70B-Instruct"):
    (tmp_path / "train.jsonl").write_text('{"messages": []}\n')
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(strategy=strategy, count=count, stage=stage, model=model))
    return compile_file(str(path)).plan


def test_fsdp_accelerate_config(tmp_path):
    plan = plan_for(tmp_path, "fsdp", 8)
    assert plan.distributed.strategy == "fsdp" and plan.distributed.processes == 8 and plan.distributed.nodes == 1
    files = launch.write_artifacts(plan, tmp_path / "plan.json", tmp_path / "launch", "accelerate")
    cfg = yaml.load((tmp_path / "launch" / "accelerate.yaml").read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["num_processes"] == 8 and cfg["num_machines"] == 1
    assert cfg["mixed_precision"] == "bf16"
    fsdp = cfg["fsdp_config"]
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and fsdp["fsdp_activation_checkpointing"] is True
    script = (tmp_path / "launch" / "launch.sh").read_text()
    assert "accelerate launch --config_file" in script and "-m recipe_ft run" in script and "--worker" in script
    assert len(files) == 2


def test_deepspeed_zero3_with_offload(tmp_path):
    plan = plan_for(tmp_path, "deepspeed", 8, 3)
    plan = plan.model_copy(update={"distributed": plan.distributed.model_copy(update={"cpu_offload": True})})
    launch.write_artifacts(plan, tmp_path / "plan.json", tmp_path / "launch", "accelerate")
    cfg = yaml.load((tmp_path / "launch" / "accelerate.yaml").read_text())
    assert cfg["distributed_type"] == "DEEPSPEED"
    ds_file = cfg["deepspeed_config"]["deepspeed_config_file"]
    assert cfg["deepspeed_config"]["zero3_init_flag"] is True
    ds = json.loads(open(ds_file).read())
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3 and zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert ds["bf16"]["enabled"] is True and ds["train_micro_batch_size_per_gpu"] == "auto"


def test_zero2_has_no_parameter_offload(tmp_path):
    plan = plan_for(tmp_path, "deepspeed", 4, 2)
    ds = launch.deepspeed_config(plan)
    assert ds["zero_optimization"]["stage"] == 2 and "offload_param" not in ds["zero_optimization"]
    assert "stage3_prefetch_bucket_size" not in ds["zero_optimization"]


def test_multi_node_torchrun_and_skypilot(tmp_path):
    plan = plan_for(tmp_path, "fsdp", 16)
    d = plan.distributed
    assert d.processes == 16 and d.nodes == 2 and d.gpus_per_node == 8
    cmd = launch.torchrun_command(plan, tmp_path / "plan.json")
    assert "--nproc_per_node=8" in cmd and "--nnodes=2" in cmd and "--node_rank=${NODE_RANK}" in cmd
    launch.write_artifacts(plan, tmp_path / "plan.json", tmp_path / "sky", "skypilot")
    task = yaml.load((tmp_path / "sky" / "skypilot.yaml").read_text())
    assert task["resources"]["accelerators"] == "H100:8" and task["num_nodes"] == 2
    # the workdir is the recipe's folder, not an installable project: the setup installs the package itself
    # (its spec in an env var that `sky launch --env RECIPE_FT_INSTALL=...` replaces)
    assert 'pip install "$RECIPE_FT_INSTALL"' in task["setup"] and ".[train]" not in task["setup"]
    assert task["envs"] == {"RECIPE_FT_INSTALL": f"recipe-ft[train]=={plan.tool_version}"}
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "recipe-ft"\n')  # a checkout: installed from it
    assert launch.skypilot_task(plan, tmp_path / "plan.json")["envs"] == {"RECIPE_FT_INSTALL": ".[train]"}
    assert "--num_machines 2" in task["run"] and "--machine_rank $NODE_RANK" in task["run"]
    assert "recipe_ft run" in task["run"]
    acc = yaml.load((tmp_path / "sky" / "accelerate.yaml").read_text())
    assert acc["num_machines"] == 2 and acc["num_processes"] == 16


def test_launch_command_writes_files(tmp_path, cli):
    (tmp_path / "train.jsonl").write_text('{"messages": []}\n')
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE.format(strategy="ddp", count=2, stage=3, model="meta-llama/Llama-3.1-8B-Instruct"))
    code, out, err = cli("launch", path, "--target", "torchrun", "-o", tmp_path / "out")
    assert code == 0, out + err
    assert (tmp_path / "out" / "plan.json").is_file() and (tmp_path / "out" / "torchrun.sh").is_file()
    assert cli("launch", path, "--target", "slurm")[0] == 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("trl")
    from recipe_ft.runtime import demo

    return demo.make(tmp_path_factory.mktemp("ddp") / "qs", train_examples=64, eval_examples=8, epochs=1)


def test_two_processes_on_cpu_train_identical_adapters(tiny, tmp_path):
    import subprocess
    import sys

    project = tmp_path / "qs"
    shutil.copytree(tiny.parent, project)
    cmd = [sys.executable, "-m", "recipe_ft", "run", str(project / "recipe.yaml")]
    for s in ["budget.gpu_count=2", "budget.max_gpus=2", "training.max_steps=3", "training.batch_size=16"]:
        cmd += ["--set", s]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "launching 2 processes (ddp)" in done.stdout
    ranks = [json.loads(p.read_text()) for p in sorted((project / "runs" / "quickstart" / "ranks").glob("rank-*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 and r["wrapper"] == "DistributedDataParallel" for r in ranks)
    assert ranks[0]["trainable_sha256"] == ranks[1]["trainable_sha256"]
    assert (project / "runs" / "quickstart" / "adapter" / "adapter_model.safetensors").is_file()
    assert (project / "runs" / "quickstart" / "launch" / "torchrun.sh").is_file()
