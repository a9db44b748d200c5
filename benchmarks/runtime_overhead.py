"""Training throughput of `recipe run` side by side with a hand-written trl SFTTrainer script, and
what packing gains on variable-length data.

    python benchmarks/runtime_overhead.py                 # 3 alternated pairs, 100k records, 300 steps
    python benchmarks/runtime_overhead.py --repeats 5 --steps 600
    python benchmarks/runtime_overhead.py --threads 0     # torch's default threads (quiet machine only)
    python benchmarks/runtime_overhead.py --strict        # exit 1 when a target is missed

What is measured for each arm, each run a fresh subprocess: the time from the process's start to the
end of its first optimizer step (wall, and the process's CPU time by then; the parent notes
time.time() just before it starts the process, the probe notes it at torch's optimizer-step post
hook), the whole process (wall, and CPU from its rusage), and trainer.train() (tokens/s, and tokens
per CPU-second). Everything before the first step is what a user waits for: imports, reading and
checking 100,000 short chat records (`--train-examples`), tokenizing them (trl's own tokenization in
both arms; `recipe run` reads its truncation counts from it), building the model and the trainer.
Ratios are paired: the median over repeats of recipe-run / plain-trl, repeat i of each run next to
each other in alternating order. Targets: first step within 1.15x (wall), steady-state tokens/s at
least 0.98 by CPU time (the probe notes every optimizer step; the steady state is the same steps in
both arms, after the first tenth and up to the last, so the final checkpoint that `recipe run` saves
inside trainer.train() is left out of it, and reported in the trainer.train() ratio). The plain script gets a fresh datasets cache each run, so no repeat reuses an earlier
repeat's tokenization (`recipe run` keeps its data in memory and never caches it either).

Everything runs on the CPU in a temporary directory made by `recipe demo` (a tiny Llama-architecture
model with random weights, its byte-level BPE tokenizer and synthetic support-ticket chat data), with
HF_HUB_OFFLINE=1: nothing is downloaded.

Overhead: two arms, each a fresh subprocess, alternated A B, B A, A B, ... (the order flips every
repeat, so a drift in machine speed does not favour either arm):

* A, `recipe run`: `python -m recipe_ft run recipe.yaml --set training.max_steps=N --set data.eval=null`
  (no held-out evaluation, so that only training is timed; run under the probe described below);
  tokens/s and seconds are read from
  runs/quickstart/run_report.json (measured.tokens_per_second, measured.wall_seconds: the
  non-padding input tokens the Trainer saw, over the wall time of `trainer.train()`).
* B, plain trl: PLAIN_SCRIPT below, written to the temporary directory. It loads the same model
  directory and the same train.jsonl (`datasets.load_dataset("json")`), and builds SFTTrainer with
  the settings of the compiled plan passed explicitly: the same LoraConfig (rank, alpha, dropout,
  target modules), max_length, micro batch size, gradient accumulation, learning rate, scheduler and
  warm-up, weight decay, gradient clipping, optimizer (adamw_torch), seed and data_seed, fp32 on the
  CPU, sdpa attention, no activation checkpointing (trl's SFTConfig defaults it on, so it is set off
  as the plan has it), assistant_only_loss, logging_steps, no evaluation. It counts tokens the
  same way (`include_num_input_tokens_seen="non_padding"`, `trainer.train()` timed with
  time.perf_counter). What it leaves at trl's defaults is what a hand-written script would: trl's tqdm
  bar and log printing; it saves no checkpoint during training (save_strategy="no") and saves the
  adapter after the timed part, so any checkpoint `recipe run` writes inside `trainer.train()` (it
  saves one at each epoch end, and at the end of a max_steps run) counts against `recipe run`.

Both arms run under a small probe (PROBE_SCRIPT: `python probe.py OUT -m recipe_ft run ...` and
`python probe.py OUT plain_trl_sft.py ...`) that wraps Trainer.train() to record its CPU seconds
(time.process_time) next to its wall seconds, and otherwise runs the module or script unchanged as
__main__. Tokens per CPU-second is the second ratio shown: on a machine where other work comes and
goes it moves far less than wall-clock tokens/s, so it tells noise from a real per-step cost.

Both arms see the same examples in the same order (same seed and data_seed), so their token counts
must be equal and their final training losses nearly so; both are shown as a check that the arms
really train the same thing. The verdict takes the paired ratios of the time to the first step (target
<= 1.15) and of the tokens per CPU-second of trainer.train() (target >= 0.98).

Packing: a second training file in the same workspace, data/variable.jsonl, whose chat examples
range from about 10 to about 200 tokens (log-uniformly: many short, few long), trained for one
epoch with `recipe run` at training.max_seq_len=256 (nothing truncated), with training.packing=false
and then true. Both see every example once, so the useful (non-padding) tokens per epoch are the
same; the gain is the ratio of tokens/s, equal to the ratio of training seconds per epoch. Without
packing each batch is padded to its longest example; with it (trl's "bfd", padding-free) no padding
is computed. Packing's own preprocessing happens before `trainer.train()`, so it shows in the
process column, not in the gain.

Packing is measured only where it is correct: `recipe run` packs only with flash_attention_2 (trl's
padding-free rows, varlen kernels keep packed examples apart) on a CUDA GPU with flash-attn. Under
sdpa or eager, as on a CPU, a packed example attends to the examples before it in its row (the
demo's tiny Llama: logits differ from the same example alone by about 1.0, with or without
position_ids), so `recipe run` refuses packing there and this comparison is skipped with that
reason. (The 1.09x once measured here on a CPU was of that leaky path, and is withdrawn.)

Threads: every training process runs with OMP_NUM_THREADS=1 (`--threads`, the same for both arms).
With torch's default (one OpenMP thread per core) a training process slows down about tenfold as
soon as anything else holds one of the cores (on a 2-core machine shared with a test suite: 688 to
1,029 tokens/s with 2 threads against 6,849 to 9,318 with 1, the same 200 steps), which drowns any
difference between the arms. One thread per process keeps the comparison meaningful on a shared
machine; on a quiet one `--threads 0` measures the default.

The timing targets belong here, not in the tests: tests/test_runtime_overhead_script.py only checks
that a tiny version runs and produces the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import paired  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
DEFAULT_THREADS = 1  # torch (OpenMP) threads per training process; 0: torch's default (one per core)
DEMO_BATCH = 8  # the demo recipe's training.batch_size (micro batch 8, no accumulation)
RUN_DIR = Path("runs") / "quickstart"  # the demo recipe's output.dir
VARIABLE_DATA = "data/variable.jsonl"
VARIABLE_MAX_SEQ_LEN = 256  # the demo model's max_position_embeddings; the longest variable example is shorter

# The hand-written baseline: plain transformers + peft + trl, settings passed in as JSON.
PLAIN_SCRIPT = '''\
"""A plain trl SFT script: LoRA on a local model and a chat-format jsonl file, tokens/s measured."""
import json
import sys
import time
from pathlib import Path

cfg = json.loads(Path(sys.argv[1]).read_text())
import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

set_seed(cfg["seed"])
tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token
model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32,
                                             attn_implementation=cfg["attention"])
dataset = load_dataset("json", data_files=cfg["train"], split="train", cache_dir=cfg["cache_dir"])
peft_config = LoraConfig(r=cfg["rank"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"],
                         target_modules=cfg["target_modules"], task_type="CAUSAL_LM")
args = SFTConfig(
    output_dir=cfg["output_dir"],
    per_device_train_batch_size=cfg["micro_batch_size"],
    gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
    activation_checkpointing=False,
    bf16=False, fp16=False, use_cpu=True,
    learning_rate=cfg["learning_rate"], lr_scheduler_type=cfg["lr_scheduler"], warmup_steps=cfg["warmup"],
    weight_decay=cfg["weight_decay"], max_grad_norm=cfg["max_grad_norm"], optim="adamw_torch",
    num_train_epochs=cfg["epochs"], max_steps=cfg["max_steps"],
    max_length=cfg["max_length"], packing=cfg["packing"], assistant_only_loss=True,
    seed=cfg["seed"], data_seed=cfg["seed"],
    logging_steps=cfg["logging_steps"], logging_first_step=True, report_to="none",
    eval_strategy="no", save_strategy="no",
    include_num_input_tokens_seen="non_padding",
)
trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                     peft_config=peft_config)
start = time.perf_counter()
output = trainer.train()
seconds = time.perf_counter() - start
tokens = int(trainer.state.num_input_tokens_seen or 0)
trainer.save_model(str(Path(cfg["output_dir"]) / "adapter"))
Path(cfg["result"]).write_text(json.dumps({
    "wall_seconds": seconds, "tokens": tokens, "tokens_per_second": tokens / max(seconds, 1e-9),
    "steps": trainer.state.global_step, "train_loss": output.training_loss,
    "settings": {"activation_checkpointing": args.activation_checkpointing, "optim": str(args.optim),
                 "max_length": args.max_length, "packing": args.packing,
                 "train_examples": len(trainer.train_dataset)},
}))
'''


# Both arms run under this probe: it times every Trainer.train() call in CPU seconds as well as wall
# seconds (the same way for both), then runs the arm's module or script as __main__, unchanged.
PROBE_SCRIPT = '''\
"""python probe.py OUT.json (-m MODULE | SCRIPT) ARGS...: run it; record CPU and wall time of Trainer.train()
and the time from the process's start to its first optimizer step."""
import json
import runpy
import sys
import time

import os

out, target = sys.argv[1], sys.argv[2:]
started = float(os.environ["BENCH_T0"])  # time.time() in the parent just before it started this process
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers import Trainer

first = {}
steps = []  # (wall, cpu) after each optimizer step


def first_step(optimizer, args, kwargs):
    """After every optimizer step (torch's global hook): the first one's time since the process started,
    and every step's, for the steady state (after the first tenth of the steps, before any final save)."""
    now = (time.time() - started, time.process_time())
    if not first:
        first.update(first_step_wall=now[0], first_step_cpu=now[1])
    steps.append(now)


register_optimizer_step_post_hook(first_step)
_train = Trainer.train


def train(self, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = _train(self, *args, **kwargs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with open(out, "w") as f:
        k = len(steps) // 10
        json.dump({"wall_seconds": wall, "cpu_seconds": cpu,
                   "tokens": int(self.state.num_input_tokens_seen or 0), **first,
                   "steady_steps": [k + 1, len(steps)],
                   "steady_wall": steps[-1][0] - steps[k][0] if len(steps) > 1 else 0.0,
                   "steady_cpu": steps[-1][1] - steps[k][1] if len(steps) > 1 else 0.0}, f)
    return result


Trainer.train = train
if target[0] == "-m":
    sys.argv = [target[1], *target[2:]]
    runpy.run_module(target[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = target
    runpy.run_path(target[0], run_name="__main__")
'''


@dataclass
class Measurement:
    arm: str
    tokens_per_second: float
    wall_seconds: float  # trainer.train() only
    tokens: int
    steps: int
    train_loss: float
    process_seconds: float  # the whole subprocess
    extra: dict = field(default_factory=dict)
    load: float = 0.0  # 1-minute load average when the run ended (other work on the machine skews timings)
    cpu_seconds: float = 0.0  # CPU time of the process during trainer.train() (the probe's)
    process_cpu_seconds: float = 0.0  # CPU time of the whole process (its rusage)
    first_step_seconds: float = 0.0  # wall time from process start to the end of the first optimizer step
    first_step_cpu_seconds: float = 0.0  # CPU time of the process up to then

    @property
    def tokens_per_cpu_second(self) -> float:
        return self.tokens / max(self.cpu_seconds, 1e-9)


def median(values) -> float:
    return statistics.median(values)


# ---------------------------------------------------------------- workspace and data


def make_workspace(directory: Path, train_examples: int, seed: int = 7) -> Path:
    """The demo (model, tokenizer, data, recipe) in `directory`; returns the recipe's path."""
    from recipe_ft.runtime.demo import make

    return make(directory, train_examples=train_examples, eval_examples=8, epochs=1, seed=seed)


def write_variable_data(workspace: Path, examples: int, seed: int = 11, shortest: int = 10,
                        longest: int = 200) -> dict:
    """data/variable.jsonl: chat examples whose templated length is spread log-uniformly from about
    `shortest` to about `longest` tokens (the demo tokenizer's). Returns length statistics."""
    from transformers import AutoTokenizer

    from recipe_ft.runtime.demo import SYSTEM, TRAIN

    tokenizer = AutoTokenizer.from_pretrained(str(workspace / "tiny-llama"))
    rng = random.Random(seed)
    sentences = {label: [s[0].upper() + s[1:] + "." for s in items] for label, items in TRAIN["topics"].items()}

    def length(messages) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])

    rows, lengths = [], []
    for _ in range(examples):
        target = math.exp(rng.uniform(math.log(shortest), math.log(longest)))
        label = rng.choice(sorted(TRAIN["topics"]))
        head = [{"role": "system", "content": SYSTEM}] if target > 45 and rng.random() < 0.7 else []
        first = rng.choice(sentences[label])
        if target < 16:  # the shortest: a few words of a ticket
            first = " ".join(first.split()[:rng.randint(1, 3)]).rstrip(".") + "?"
        parts = [first]
        while True:
            messages = head + [{"role": "user", "content": " ".join(parts)},
                               {"role": "assistant", "content": label}]
            n = length(messages)
            if n >= target:
                break
            candidate = parts + [rng.choice(sentences[rng.choice(sorted(TRAIN["topics"])) if rng.random() < 0.3
                                                      else label])]
            grown = head + [{"role": "user", "content": " ".join(candidate)},
                            {"role": "assistant", "content": label}]
            if length(grown) > longest + 10:
                break
            parts = candidate
        rows.append({"messages": messages})
        lengths.append(n)
    path = workspace / VARIABLE_DATA
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    ordered = sorted(lengths)
    return {"examples": len(rows), "min": ordered[0], "median": ordered[len(ordered) // 2],
            "mean": sum(lengths) / len(lengths), "max": ordered[-1], "tokens": sum(lengths),
            "padded_fraction": padding_fraction(lengths, DEMO_BATCH, seed)}


def padding_fraction(lengths: list[int], batch: int, seed: int = 0) -> float:
    """Expected share of padding when random batches of `batch` are padded to their longest."""
    order = list(lengths)
    random.Random(seed).shuffle(order)
    real = padded = 0
    for i in range(0, len(order), batch):
        chunk = order[i:i + batch]
        real += sum(chunk)
        padded += max(chunk) * len(chunk)
    return 1 - real / padded


def plan_settings(recipe: Path, overrides: list[str]) -> dict:
    """The training settings of the compiled plan, for the plain trl script."""
    from recipe_ft.compiler.pipeline import compile_file

    plan = compile_file(str(recipe), overrides).plan
    t, r, a = plan.training, plan.recipe.training, plan.adapter
    if plan.method != "lora":
        raise SystemExit(f"the benchmark compares LoRA runs; the plan's method is {plan.method}")
    targets = plan.recipe.method.targets
    return {
        "model": plan.model.path, "attention": t.attention,
        "train": str((recipe.parent / plan.recipe.data.train).resolve()),
        "rank": a.rank, "alpha": a.alpha, "dropout": a.dropout,
        "target_modules": targets if targets == "all-linear" else list(targets),
        "micro_batch_size": t.micro_batch_size, "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "learning_rate": t.learning_rate, "lr_scheduler": r.lr_scheduler, "warmup": r.warmup_ratio,
        "weight_decay": r.weight_decay, "max_grad_norm": r.max_grad_norm, "optimizer": t.optimizer,
        "epochs": t.epochs, "max_steps": r.max_steps or -1, "max_length": t.max_seq_len,
        "packing": t.packing, "seed": r.seed, "logging_steps": r.logging_steps,
        "precision": t.precision, "activation_checkpointing": t.gradient_checkpointing,
    }


# ---------------------------------------------------------------- the two arms


def child_env(threads: int = DEFAULT_THREADS) -> dict:
    """The environment of both arms: offline, and `threads` OpenMP threads (0: leave torch's default)."""
    env = dict(ENV)
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def _run(cmd: list[str], cwd: Path, label: str, threads: int) -> tuple[float, dict]:
    """Run `cmd` (python ...) under the probe; (process wall seconds, the probe's record, with the
    process's CPU seconds added)."""
    probe = cwd / "probe.py"
    if not probe.is_file():
        probe.write_text(PROBE_SCRIPT)
    record = cwd / "probe.json"
    record.unlink(missing_ok=True)
    full = [cmd[0], str(probe), str(record), *cmd[1:]]
    env = {**child_env(threads), "BENCH_T0": repr(time.time())}
    try:
        sample = paired.run_measured(full, env=env, cwd=cwd, timeout=3600)
    except RuntimeError as exc:
        raise RuntimeError(f"{label}: {exc}") from None
    return sample.wall, {**json.loads(record.read_text()), "process_cpu_seconds": sample.cpu}


def recipe_command(recipe: Path, overrides: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "recipe_ft", "run", str(recipe)]
    for o in overrides:
        cmd += ["--set", o]
    return cmd


def run_recipe(recipe: Path, overrides: list[str], arm: str = "recipe run",
               threads: int = DEFAULT_THREADS) -> Measurement:
    """Arm A: `python -m recipe_ft run` as a fresh subprocess; numbers from its run_report.json."""
    workspace = recipe.parent
    shutil.rmtree(workspace / RUN_DIR, ignore_errors=True)
    elapsed, probe = _run(recipe_command(recipe, overrides), workspace, arm, threads)
    report = json.loads((workspace / RUN_DIR / "run_report.json").read_text())
    m = report["measured"]
    if report["status"] != "completed":
        raise RuntimeError(f"{arm}: run status {report['status']}")
    return Measurement(arm, m["tokens_per_second"], m["wall_seconds"], m["tokens"], m["steps"], m["train_loss"],
                       elapsed, {"data": report["data"], "probe": probe}, load1(), probe["cpu_seconds"],
                       probe["process_cpu_seconds"], probe.get("first_step_wall", 0.0), probe.get("first_step_cpu", 0.0))


def write_plain_script(directory: Path) -> Path:
    path = directory / "plain_trl_sft.py"
    path.write_text(PLAIN_SCRIPT)
    return path


def run_plain(script: Path, settings: dict, workdir: Path, tag: str, threads: int = DEFAULT_THREADS) -> Measurement:
    """Arm B: the hand-written trl script as a fresh subprocess."""
    if settings["optimizer"] != "adamw" or settings["precision"] != "fp32" or settings["activation_checkpointing"]:
        raise SystemExit("the plain script mirrors adamw, fp32, no activation checkpointing (the demo's CPU plan)")
    out = workdir / f"plain-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = {**settings, "output_dir": str(out / "run"), "result": str(out / "result.json"),
           "cache_dir": str(out / "hf-datasets-cache")}  # fresh: no repeat reuses an earlier one's tokenization
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    elapsed, probe = _run([sys.executable, str(script), str(out / "config.json")], workdir, "plain trl", threads)
    r = json.loads((out / "result.json").read_text())
    return Measurement("plain trl", r["tokens_per_second"], r["wall_seconds"], r["tokens"], r["steps"],
                       r["train_loss"], elapsed, {"settings": r["settings"], "probe": probe}, load1(),
                       probe["cpu_seconds"], probe["process_cpu_seconds"], probe.get("first_step_wall", 0.0),
                       probe.get("first_step_cpu", 0.0))


def overhead(recipe: Path, steps: int, repeats: int, workdir: Path, log=print,
             threads: int = DEFAULT_THREADS) -> tuple[list, list, dict]:
    """Alternate `recipe run` and plain trl, `repeats` times each; returns (A runs, B runs, settings)."""
    overrides = [f"training.max_steps={steps}", "data.eval=null"]
    settings = plan_settings(recipe, overrides)
    script = write_plain_script(workdir)
    a_runs, b_runs = [], []
    for i in range(repeats):
        order = ("A", "B") if i % 2 == 0 else ("B", "A")
        for arm in order:
            if arm == "A":
                m = run_recipe(recipe, overrides, threads=threads)
                a_runs.append(m)
            else:
                m = run_plain(script, settings, workdir, str(i), threads)
                b_runs.append(m)
            log(f"  repeat {i + 1}/{repeats} {m.arm:<10} {m.tokens_per_second:>10,.0f} tokens/s  "
                f"{m.tokens_per_cpu_second:>8,.0f} tokens/CPU-s  {m.first_step_seconds:>7.2f} s to step 1 "
                f"({m.first_step_cpu_seconds:.2f} CPU)  "
                f"{m.wall_seconds:>7.2f} s train  {m.process_seconds:>7.2f} s process ({m.process_cpu_seconds:.2f} CPU)  "
                f"{m.tokens:>9,} tokens  {m.steps} steps  loss {m.train_loss:.4f}  load {m.load:.1f}")
    return a_runs, b_runs, settings


def packing_gain(recipe: Path, repeats: int, log=print, threads: int = DEFAULT_THREADS) -> tuple[list, list]:
    """`recipe run` for one epoch of data/variable.jsonl, packing off then on, `repeats` times each."""
    base = [f"data.train={VARIABLE_DATA}", "data.eval=null", "training.epochs=1",
            f"training.max_seq_len={VARIABLE_MAX_SEQ_LEN}"]
    off_runs, on_runs = [], []
    for i in range(repeats):
        order = (False, True) if i % 2 == 0 else (True, False)
        for packing in order:
            arm = "packing on" if packing else "packing off"
            m = run_recipe(recipe, base + [f"training.packing={'true' if packing else 'false'}"], arm, threads)
            (on_runs if packing else off_runs).append(m)
            log(f"  repeat {i + 1}/{repeats} {arm:<11} {m.tokens_per_second:>10,.0f} tokens/s  "
                f"{m.tokens_per_cpu_second:>8,.0f} tokens/CPU-s  "
                f"{m.wall_seconds:>7.2f} s/epoch  {m.process_seconds:>7.2f} s process  {m.tokens:>9,} tokens  "
                f"{m.steps} steps  loss {m.train_loss:.4f}  load {m.load:.1f}")
    return off_runs, on_runs


# ---------------------------------------------------------------- report


def row(label: str, runs: list[Measurement]) -> str:
    tps = [m.tokens_per_second for m in runs]
    cps = median([m.tokens_per_cpu_second for m in runs])
    return (f"{label:<24} {median(tps):>9,.0f} {min(tps):>9,.0f} {max(tps):>9,.0f} {cps:>9,.0f} "
            f"{median([m.first_step_seconds for m in runs]):>8.2f} {median([m.first_step_cpu_seconds for m in runs]):>8.2f} "
            f"{median([m.wall_seconds for m in runs]):>8.2f} {median([m.process_seconds for m in runs]):>8.2f} "
            f"{median([m.process_cpu_seconds for m in runs]):>8.2f} "
            f"{runs[0].tokens:>10,} {runs[0].steps:>6} {median([m.train_loss for m in runs]):>8.4f}")


HEADER = (f"{'':<24} {'tokens/s':>9} {'min':>9} {'max':>9} {'tok/CPU-s':>9} {'step1 s':>8} {'step1 CPU':>8} "
          f"{'train s':>8} {'end s':>8} {'end CPU':>8} {'tokens':>10} {'steps':>6} {'loss':>8}   (medians over runs; "
          f"step1: process start to the end of the first optimizer step; end: the whole process)")


def load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


@dataclass
class Results:
    steps: int
    repeats: int
    train_examples: int
    target: float
    recipe: list  # Measurement, arm A
    plain: list  # Measurement, arm B
    settings: dict
    variable: dict | None = None  # length statistics of data/variable.jsonl
    threads: int = DEFAULT_THREADS
    first_step_target: float = 1.15
    packing_off: list | None = None
    packing_on: list | None = None
    packing_skipped: str | None = None  # why packing was not measured

    @property
    def recipe_tps(self) -> float:
        return median([m.tokens_per_second for m in self.recipe])

    @property
    def plain_tps(self) -> float:
        return median([m.tokens_per_second for m in self.plain])

    def paired(self, attr: str) -> float:
        """Median over repeats of recipe run / plain trl, repeat i of one with repeat i of the other (run
        next to each other, in alternating order)."""
        return median([getattr(a, attr) / max(getattr(b, attr), 1e-12) for a, b in zip(self.recipe, self.plain)])

    @property
    def ratio(self) -> float:
        """tokens/s of trainer.train(), recipe run / plain trl (paired median)."""
        return self.paired("tokens_per_second")

    @property
    def cpu_ratio(self) -> float:
        """The same ratio in tokens per CPU-second of trainer.train(): what other work on the machine
        does to wall-clock time (a descheduled process waits) it mostly does not do to CPU time."""
        return self.paired("tokens_per_cpu_second")

    def steady(self, key: str) -> float:
        """Steady-state speed, recipe run / plain trl: the same optimizer steps (after the first tenth, up
        to the last; the same examples in both arms, so the same tokens) in less time is faster. Paired
        median of plain seconds / recipe seconds; excludes start-up and any checkpoint saved at the end."""
        return median([b.extra["probe"][key] / max(a.extra["probe"][key], 1e-12)
                       for a, b in zip(self.recipe, self.plain)])

    @property
    def steady_ratio(self) -> float:
        return self.steady("steady_wall")

    @property
    def steady_cpu_ratio(self) -> float:
        return self.steady("steady_cpu")

    @property
    def first_step_ratio(self) -> float:
        """Process start to the first optimizer step, recipe run / plain trl (wall; paired median)."""
        return self.paired("first_step_seconds")

    @property
    def first_step_cpu_ratio(self) -> float:
        return self.paired("first_step_cpu_seconds")

    @property
    def process_ratio(self) -> float:
        """Process start to its end, recipe run / plain trl (wall; paired median)."""
        return self.paired("process_seconds")

    @property
    def process_cpu_ratio(self) -> float:
        return self.paired("process_cpu_seconds")

    @property
    def same_tokens(self) -> bool:
        return len({m.tokens for m in self.recipe + self.plain}) == 1

    @property
    def packing_gain(self) -> float | None:
        if not self.packing_on:
            return None
        return median([m.tokens_per_second for m in self.packing_on]) / median(
            [m.tokens_per_second for m in self.packing_off])

    @property
    def packing_epoch_speedup(self) -> float | None:
        if not self.packing_on:
            return None
        return median([m.wall_seconds for m in self.packing_off]) / median([m.wall_seconds for m in self.packing_on])


def packing_unavailable() -> str | None:
    """Why packing cannot be measured correctly here, or None: it needs flash_attention_2 on CUDA."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return ("recipe run refuses packing on a CPU: sdpa and eager attend across the packed row (packed "
                "examples would see each other); only flash_attention_2 on a CUDA GPU keeps them apart")
    if importlib.util.find_spec("flash_attn") is None:
        return "packing needs flash_attention_2 and flash-attn is not installed (pip install flash-attn)"
    return None


def benchmark(workdir: Path, steps: int = 300, repeats: int = 3, train_examples: int | None = 100_000,
              variable_examples: int = 3000, packing_repeats: int = 1, packing: bool = True,
              target: float = 0.98, threads: int = DEFAULT_THREADS, log=print,
              first_step_target: float = 1.15) -> Results:
    """Make the workspace in `workdir`, run both comparisons; progress lines go to `log`."""
    train_examples = max(train_examples, steps * DEMO_BATCH) if train_examples else \
        steps * DEMO_BATCH + 10 * DEMO_BATCH  # max_steps ends inside epoch 1
    recipe = make_workspace(workdir / "demo", train_examples)
    log(f"workspace: {recipe.parent} (demo: {train_examples} training examples)")
    overrides = [f"training.max_steps={steps}", "data.eval=null"]
    log(f"arm A: {' '.join(recipe_command(Path('recipe.yaml'), overrides))}  (fresh subprocess, cwd the "
        f"workspace; tokens/s from {RUN_DIR}/run_report.json)")
    log("arm B: python plain_trl_sft.py config.json  (fresh subprocess; hand-written trl SFTTrainer)")
    log("both under: python probe.py OUT ... (records CPU and wall seconds of Trainer.train())")
    log(f"\noverhead: {repeats} x {steps} steps per arm, alternated")
    log(f"threads per training process: {threads or 'torch default'} (OMP_NUM_THREADS, both arms)")
    a_runs, b_runs, settings = overhead(recipe, steps, repeats, workdir, log, threads)
    results = Results(steps, repeats, train_examples, target, a_runs, b_runs, settings, threads=threads,
                      first_step_target=first_step_target)
    shown = {k: settings[k] for k in ("rank", "alpha", "dropout", "target_modules", "micro_batch_size",
                                      "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "warmup",
                                      "max_length", "seed", "attention", "logging_steps")}
    log(f"settings (both arms): {json.dumps(shown)}")
    log(f"plain trl resolved: {json.dumps(b_runs[0].extra['settings'])}")
    skip = packing_unavailable() if packing else None
    if skip:
        results.packing_skipped = skip
        log(f"\npacking: not measured: {skip}")
    if packing and not skip:
        v = results.variable = write_variable_data(recipe.parent, variable_examples)
        log(f"\npacking: {VARIABLE_DATA}: {v['examples']} chat examples of {v['min']}-{v['max']} tokens "
            f"(median {v['median']}, mean {v['mean']:.0f}; {v['tokens']:,} tokens); random batches of "
            f"{DEMO_BATCH} padded to their longest would be {v['padded_fraction']:.0%} padding; "
            f"one epoch at max_seq_len {VARIABLE_MAX_SEQ_LEN}, {packing_repeats} run(s) each")
        results.packing_off, results.packing_on = packing_gain(recipe, packing_repeats, log, threads)
    return results


def report(r: Results) -> list[str]:
    """The table, the checks, the verdict and the one-line summary."""
    lines = [HEADER, row("recipe run", r.recipe), row("plain trl", r.plain)]
    if r.packing_on:
        lines += [row("recipe run, packing off", r.packing_off), row("recipe run, packing on", r.packing_on)]
    lines.append("")
    a_loss, b_loss = median([m.train_loss for m in r.recipe]), median([m.train_loss for m in r.plain])
    lines.append(f"same tokens in both arms: {'yes' if r.same_tokens else 'NO'} "
                 f"({sorted({m.tokens for m in r.recipe})} vs {sorted({m.tokens for m in r.plain})}); "
                 f"train loss {a_loss:.4f} vs {b_loss:.4f}")
    lines.append(f"paired medians over {r.repeats} alternated pair(s), recipe run / plain trl "
                 f"(threads per process: {r.threads or 'torch default'}):")
    lines.append(f"  process start to first optimizer step: {r.first_step_ratio:.3f} wall, "
                 f"{r.first_step_cpu_ratio:.3f} CPU time (target <= {r.first_step_target})")
    lines.append(f"  whole process, start to end:           {r.process_ratio:.3f} wall, {r.process_cpu_ratio:.3f} CPU time")
    window = r.recipe[0].extra["probe"].get("steady_steps", [0, 0])
    lines.append(f"  trainer.train() tokens/s:              {r.ratio:.3f} wall, {r.cpu_ratio:.3f} by CPU time "
                 f"(start-up of the loop and the final checkpoint included)")
    lines.append(f"  steady state, steps {window[0]}-{window[1]}:          {r.steady_ratio:.3f} wall, "
                 f"{r.steady_cpu_ratio:.3f} by CPU time (target >= {r.target} by CPU time, which other work on "
                 f"the machine disturbs less)")
    passed = r.first_step_ratio <= r.first_step_target and r.steady_cpu_ratio >= r.target
    lines.append(f"verdict: {'PASS' if passed else 'BELOW TARGET'}")
    summary = (f"recipe run / plain trl: {r.ratio:.2f} tokens/s ({r.steady_cpu_ratio:.2f} steady by CPU time), "
               f"{r.first_step_ratio:.2f} time to first step, {r.process_ratio:.2f} whole process "
               f"(paired medians of {r.repeats})")
    if r.packing_on:
        on, off = r.packing_on, r.packing_off
        lines.append(f"packing: {median([m.tokens_per_second for m in on]):,.0f} vs "
                     f"{median([m.tokens_per_second for m in off]):,.0f} useful tokens/s = {r.packing_gain:.2f}x; "
                     f"{median([m.wall_seconds for m in on]):.1f} vs {median([m.wall_seconds for m in off]):.1f} "
                     f"s per epoch = {r.packing_epoch_speedup:.2f}x; useful tokens per epoch {on[0].tokens:,} vs "
                     f"{off[0].tokens:,}; steps per epoch {on[0].steps} vs {off[0].steps}")
        summary += f"; packing gain on variable-length data: {r.packing_gain:.1f}x"
    elif r.packing_skipped:
        lines.append(f"packing: not measured: {r.packing_skipped}")
    lines.append(summary)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm, alternated (default: 3)")
    parser.add_argument("--steps", type=int, default=300,
                        help="training.max_steps of each overhead run (default: 300)")
    parser.add_argument("--train-examples", type=int, default=100_000,
                        help="demo training examples, all read and tokenized before the first step "
                             "(default: 100000 short chat records; at least enough for --steps)")
    parser.add_argument("--variable-examples", type=int, default=3000,
                        help="examples in the variable-length file for the packing runs (default: 3000)")
    parser.add_argument("--packing-repeats", type=int, default=1, help="runs per packing arm (default: 1)")
    parser.add_argument("--no-packing", action="store_true", help="skip the packing comparison")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="torch threads per training process, both arms (default: 1; 0: one per core)")
    parser.add_argument("--target", type=float, default=0.98,
                        help="the tokens/s ratio by CPU time to reach (default: 0.98)")
    parser.add_argument("--first-step-target", type=float, default=1.15,
                        help="the most time to the first optimizer step, as a ratio (default: 1.15)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args(argv)

    import torch

    print(f"python {sys.version.split()[0]}; torch {torch.__version__} (default {torch.get_num_threads()} threads); "
          f"{os.cpu_count()} CPUs; load average before: {load()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="runtime-overhead-"))
    try:
        results = benchmark(tmp, args.steps, args.repeats, args.train_examples, args.variable_examples,
                            args.packing_repeats, not args.no_packing, args.target, args.threads,
                            log=lambda line: print(line, flush=True), first_step_target=args.first_step_target)
        print(f"\nload average after: {load()}\n")
        print("\n".join(report(results)))
        missed = results.steady_cpu_ratio < args.target or results.first_step_ratio > args.first_step_target
        return 1 if args.strict and missed else 0
    finally:
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
