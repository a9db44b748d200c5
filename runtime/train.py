"""Execute a plan: load the model and data, train with trl's SFTTrainer, checkpoint, report.

Everything heavy is imported inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..schemas.errors import RecipeError
from ..schemas.plan import Plan
from . import data as data_mod
from .conformance import check as check_conformance
from .conformance import enforce as enforce_conformance
from . import outdir, tokenized
from .preflight import Device, preflight, torch_dtype

COMPLETE = "CHECKPOINT_COMPLETE"  # written after a checkpoint is fully saved
OPTIMIZERS = {"adamw": "adamw_torch", "adamw_8bit": "adamw_bnb_8bit", "paged_adamw_8bit": "paged_adamw_8bit",
              "paged_adamw_32bit": "paged_adamw_32bit"}


@dataclass
class RunResult:
    run_dir: Path
    adapter_dir: Optional[Path]
    interrupted: bool
    measured: dict = field(default_factory=dict)
    data_counts: dict = field(default_factory=dict)
    loss_curve: list = field(default_factory=list)
    resumed_from: Optional[str] = None
    evaluation: dict = field(default_factory=dict)  # baseline, tuned, gate
    main_process: bool = True  # rank 0 (the one that writes reports)
    conformance: dict = field(default_factory=dict)  # the live model checked against plan.build
    lock: object = None  # the run directory's lock (outdir.RunLock), released by the caller


class AlreadyTrained(Exception):
    """Resumed from a checkpoint at max_steps: there is no step left to train."""


def _last_complete(checkpoints: Path) -> Optional[Path]:
    done = [d for d in checkpoints.glob("checkpoint-*") if (d / COMPLETE).is_file()] if checkpoints.is_dir() else []
    return max(done, key=lambda d: int(d.name.split("-")[-1]), default=None)


def latest_checkpoint(checkpoints: Path) -> Optional[Path]:
    """The newest checkpoint that finished saving; half-written ones are removed."""
    if not checkpoints.is_dir():
        return None
    done = []
    for d in checkpoints.glob("checkpoint-*"):
        if (d / COMPLETE).is_file():
            done.append(d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    return max(done, key=lambda d: int(d.name.split("-")[-1]), default=None)


def _callbacks(run: dict):
    from transformers import TrainerCallback

    class Checkpoints(TrainerCallback):
        """Mark a checkpoint complete once saved; stop (after saving) on Ctrl-C or SIGTERM."""

        def on_train_begin(self, args, state, control, **kwargs):  # after a checkpoint's state is restored
            run["start_step"], run["start_tokens"] = state.global_step, int(state.num_input_tokens_seen or 0)

        def on_step_begin(self, args, state, control, **kwargs):
            # transformers checks max_steps after a step: resumed from the last one, it would train one more
            if state.max_steps > 0 and state.global_step >= state.max_steps:
                raise AlreadyTrained

        def on_save(self, args, state, control, **kwargs):
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and path.is_dir():
                outdir.atomic_write(path / COMPLETE, str(state.global_step))

        def on_step_end(self, args, state, control, **kwargs):
            if run["stop"]:
                control.should_save = True
                control.should_training_stop = True
            if run["stop"] or state.global_step >= state.max_steps:  # the curve ends at the last step trained
                control.should_log = True
            return control

    class Progress(TrainerCallback):
        """A progress bar with loss, tokens/s and time left."""

        def __init__(self):
            self.bar = None
            self.start = None
            self.tokens0 = 0

        def on_train_begin(self, args, state, control, **kwargs):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", dynamic_ncols=True,
                            disable=not state.is_local_process_zero)
            self.start = time.perf_counter()
            self.tokens0 = state.num_input_tokens_seen or 0

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is None or not logs:
                return
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            tps = ((state.num_input_tokens_seen or 0) - self.tokens0) / elapsed
            post = {"tok/s": f"{tps:,.0f}"}
            if "loss" in logs:
                post["loss"] = f"{logs['loss']:.4f}"
            if "eval_loss" in logs:
                post["eval_loss"] = f"{logs['eval_loss']:.4f}"
            self.bar.set_postfix(post)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return [Checkpoints(), Progress()]


def _model(plan: Plan, model_dir: str, device: Device):
    import torch

    from . import text_model

    dtype = torch_dtype(device.precision)
    attention = plan.build.attention if plan.build else plan.training.attention  # the compiler's decision
    kwargs = dict(trust_remote_code=plan.recipe.model.trust_remote_code, revision=plan.recipe.model.revision,
                  attn_implementation=attention)
    if plan.method in ("qlora", "qdora"):
        from transformers import BitsAndBytesConfig

        q = plan.adapter.quantization
        if q["bits"] == 4:
            sharded = plan.distributed.strategy in ("fsdp", "deepspeed")
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=q["type"], bnb_4bit_use_double_quant=q["double_quant"],
                bnb_4bit_compute_dtype=dtype,
                # FSDP / ZeRO-3 shard the packed weights: store them in a float dtype they can flatten
                bnb_4bit_quant_storage=dtype if sharded else torch.uint8)
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        if plan.distributed.strategy not in ("fsdp", "deepspeed"):
            kwargs["device_map"] = {"": device.torch_device}
    # full fine-tuning keeps fp32 master weights, except bf16-pure (bf16 weights and optimizer states)
    weights_dtype = torch.float32 if plan.method == "full" and device.precision != "bf16-pure" else dtype
    return text_model.load(model_dir, dtype=weights_dtype, **kwargs)


def _peft_config(plan: Plan):
    if plan.method == "full":
        return None
    from peft import LoraConfig

    a = plan.adapter
    targets = plan.recipe.method.targets
    return LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=a.dropout,
                      target_modules=targets if targets == "all-linear" else list(targets),
                      use_dora=a.use_dora, task_type="CAUSAL_LM")


def _sft_config(plan: Plan, run_dir: Path, device: Device, kind: str, has_eval: bool):
    from trl import SFTConfig

    t, r = plan.training, plan.recipe.training
    optim = OPTIMIZERS[t.optimizer]
    if optim == "adamw_torch" and device.kind == "cuda":
        optim = "adamw_torch_fused"
    return SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=t.micro_batch_size,
        per_device_eval_batch_size=t.micro_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        activation_checkpointing=t.gradient_checkpointing,
        bf16=device.precision in ("bf16", "bf16-pure"), fp16=device.precision == "fp16",
        learning_rate=t.learning_rate, lr_scheduler_type=r.lr_scheduler, warmup_steps=r.warmup_ratio,
        weight_decay=r.weight_decay, max_grad_norm=r.max_grad_norm, optim=optim,
        num_train_epochs=t.epochs, max_steps=r.max_steps or -1,
        max_length=t.max_seq_len, packing=t.packing,
        # packed rows as the plan counted them: best-fit decreasing, padding-free (varlen attention)
        packing_strategy="bfd", padding_free=t.packing,
        # conversations come tokenized with their labels (runtime/masks.py); prompt-completion: trl masks the prompt
        assistant_only_loss=False,
        completion_only_loss=(not plan.recipe.data.train_on_inputs) if "prompt_completion" in kind else None,
        dataset_text_field="text",
        seed=r.seed, data_seed=r.seed,
        save_strategy="steps" if r.save_steps else "epoch", save_steps=r.save_steps or 500, save_total_limit=2,
        logging_steps=r.logging_steps, logging_first_step=True, report_to=list(r.report_to) or "none",
        eval_strategy="epoch" if has_eval else "no",
        use_cpu=device.kind == "cpu", dataloader_num_workers=0,
        ddp_backend="gloo" if device.kind == "cpu" and plan.distributed.processes > 1 else None,
        include_num_input_tokens_seen="non_padding", disable_tqdm=True,
    )


def token_count(tokenizer, row: dict) -> int:
    """Tokens a record becomes, as trl tokenizes it (chat template for conversations)."""
    if "chosen" in row or "label" in row:  # preference pairs, KTO examples
        from .preference import token_count as pair_tokens

        return pair_tokens(tokenizer, row)
    if "messages" in row:
        return len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
    if isinstance(row.get("prompt"), list):
        ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)
        return len(ids["input_ids"])
    if "prompt" in row:
        return len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1
    return len(tokenizer(row["text"])["input_ids"]) + 1


def load_data(plan: Plan, plan_dir: Path, tokenizer):
    """Training and held-out records in trl's format, with their counts (and each source's share)."""
    recipe = plan.recipe
    # conversations are tokenized here with masks derived by rendering (runtime/masks.py), whatever the template
    records, sources = data_mod.read_sources(recipe, plan_dir, "train")
    train_rows, eval_rows, eval_records = records.rows, [], None
    if recipe.data.eval:
        eval_records, _ = data_mod.read_sources(recipe, plan_dir, "eval")
        eval_rows = eval_records.rows
    elif recipe.data.eval_fraction:  # split per source, before mixing (runtime/data.read_sources)
        eval_rows = records.held_out
    # SFT: truncations are counted from the tokens the trainer trains on (runtime/tokenized.py), after the
    # trainer is built; preference pairs are counted here (their trainers tokenize each side apart)
    truncated = None if plan.preference is None else \
        sum(1 for row in train_rows if token_count(tokenizer, row) > plan.training.max_seq_len)
    counts = {"train_read": records.read, "train_skipped": records.skipped, "train_examples": len(train_rows),
              "train_truncated": truncated,
              "eval_examples": len(eval_rows), "format": recipe.data.format, "as": records.kind,
              "eval_skipped": eval_records.skipped if eval_records else 0,
              "duplicates_in_eval": data_mod.duplicates(train_rows, eval_rows) if eval_rows else 0,
              "sources": sources, "train_on_inputs": recipe.data.train_on_inputs}
    return train_rows, eval_rows, records.kind, counts


def use_chat_template(plan: Plan, plan_dir: Path, tokenizer, log=print) -> str:
    """Set data.chat_template on the tokenizer; which template conversations are rendered with."""
    from ..compiler import chat_templates, mixture, sources

    recipe = plan.recipe
    text = chat_templates.resolve(recipe.data.chat_template, plan_dir)
    if text is not None:
        tokenizer.chat_template = text
        return recipe.data.chat_template
    if getattr(tokenizer, "chat_template", None):
        return "model"
    formats = {s.format for s in sources.parse(recipe.data.train, recipe.data.format)}
    if formats == {"alpaca"}:
        tokenizer.chat_template = chat_templates.NAMED["alpaca"]
        log("the model has no chat template: alpaca records use the alpaca prompt (### Instruction / ### Response)")
        return "alpaca"
    if any(mixture.kind_of(f) == "conversations" for f in formats):
        raise RecipeError("the model has no chat template to render conversations with: set data.chat_template "
                          f"({', '.join(chat_templates.choices()[1:])} or a Jinja file)")
    return "none"


@dataclass
class Session:
    """A trainer ready to run, and what the run needs besides."""

    trainer: object
    tokenizer: object
    device: Device
    run_dir: Path
    counts: dict
    kind: str
    state: dict  # {"stop": bool}, shared with the callbacks
    eval_rows: list = field(default_factory=list)
    conformance: dict = field(default_factory=dict)


def prepare(plan: Plan, plan_dir: Path, log=print) -> Session:
    """Preflight, tokenizer, data (checked before anything is written), model, trainer."""
    device = preflight(plan, plan_dir)
    from transformers import AutoTokenizer, PrinterCallback, set_seed
    run_dir = (plan_dir / plan.output_dir).resolve()
    model_dir = plan.model.path or plan.model.name
    log(f"device: {device.describe()}")
    if device.precision != plan.training.precision:
        log(f"note: the plan's {plan.training.precision} runs in {device.precision} on this {device.kind.upper()} "
            f"(no {plan.training.precision} training here): the planned memory does not apply")
    set_seed(plan.recipe.training.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=plan.recipe.model.trust_remote_code,
                                              revision=plan.recipe.model.revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    template = use_chat_template(plan, plan_dir, tokenizer, log)
    train_rows, eval_rows, kind, counts = load_data(plan, plan_dir, tokenizer)
    counts["chat_template"] = template
    for s_ in counts["sources"] if len(counts["sources"]) > 1 else []:
        log(f"source {s_['source']}: {s_['drawn']} drawn of {s_['usable']} usable ({s_['skipped']} skipped)")
    log(f"data: {counts['train_examples']} training examples ({counts['train_skipped']} skipped), "
        f"{counts['eval_examples']} held out; trained as {kind}")
    if counts["duplicates_in_eval"]:
        log(f"warning: {counts['duplicates_in_eval']} held-out examples also appear in the training data")
    if plan.preference is not None:  # before the model loads
        from .preference import check_data
        from .preference_eval import check_scorable

        check_data(plan, train_rows)
        check_scorable(plan, eval_rows, log)
    model = _model(plan, model_dir, device)
    run_dir_existed, checkpoints_existed = run_dir.exists(), (run_dir / "checkpoints").exists()
    stacked = plan.recipe.model.adapter is not None and plan.recipe.model.adapter_mode == "stack"
    if plan.recipe.model.adapter is not None:  # start from a trained adapter, merged or stacked
        from . import base_adapter

        model = base_adapter.apply(plan, plan_dir, model, lambda d: _model(plan, d, device), run_dir, log)
    state = {"stop": False}
    peft_config = None if stacked else _peft_config(plan)
    if plan.preference is not None:  # DPO / ORPO / KTO (runtime/preference.py)
        from . import preference

        trainer = preference.build(plan, model, tokenizer, train_rows, eval_rows,
                                   _sft_config(plan, run_dir, device, kind, bool(eval_rows)), peft_config,
                                   _callbacks(state))
    else:
        args = _sft_config(plan, run_dir, device, kind, bool(eval_rows))
        args.dataset_num_proc = tokenized.workers(len(train_rows))
        trainer = tokenized.counting_trainer()(
            model=model, args=args,
            train_dataset=data_mod.trainer_dataset(train_rows, kind, tokenizer, plan.recipe.data.train_on_inputs),
            eval_dataset=data_mod.trainer_dataset(eval_rows, kind, tokenizer, plan.recipe.data.train_on_inputs)
            if eval_rows else None,
            processing_class=tokenizer, peft_config=peft_config, callbacks=_callbacks(state))
        counted = getattr(trainer, "token_counts", {}).get("train")  # from the tokens trl trains on
        counts["train_truncated"] = counted[1] if counted else \
            sum(1 for row in train_rows if token_count(tokenizer, row) > plan.training.max_seq_len)
    trainer.remove_callback(PrinterCallback)  # the progress bar shows loss and tokens/s
    log(f"data: {counts['train_truncated']} training examples longer than {plan.training.max_seq_len} tokens "
        f"(truncated)" + (f" with {tokenized.workers(len(train_rows))} tokenizing processes"
                          if plan.preference is None and tokenized.workers(len(train_rows)) else ""))
    conformance = check_conformance(plan, trainer, device.precision)
    if conformance["problems"]:  # leave nothing behind: remove the empty folders the trainer made, no file
        for made, existed in ((run_dir / "checkpoints", checkpoints_existed), (run_dir, run_dir_existed)):
            if not existed:
                try:
                    made.rmdir()
                except OSError:
                    pass
    enforce_conformance(conformance)  # a model that differs from its plan never trains
    log(f"model matches the plan: {'; '.join(conformance['checked'][-5:])}")
    if not plan.training.packing and plan.preference is None:  # trl drops examples whose trained tokens were all truncated away
        counts["train_dropped"] = len(train_rows) - len(trainer.train_dataset)
        if counts["train_dropped"] and len(trainer.train_dataset):
            log(f"warning: {counts['train_dropped']} of {len(train_rows)} training examples are left out: "
                f"truncation to training.max_seq_len {plan.training.max_seq_len} cut their whole answer (raise "
                f"training.max_seq_len to train on them)")
        if len(trainer.train_dataset) == 0:
            raise RecipeError(f"no training example keeps a token to learn from after truncation to "
                              f"training.max_seq_len {plan.training.max_seq_len} ({counts['train_truncated']} of "
                              f"{len(train_rows)} are longer): raise training.max_seq_len")
    from .run_report import trained_examples

    kept = trained_examples(counts)
    if kept is not None and plan.data.examples and kept != plan.data.examples:
        log(f"warning: the plan counted {plan.data.examples} training examples ({plan.data.counted_with}); "
            f"this run trains on {kept}: its steps, hours and cost scale with that")
    return Session(trainer, tokenizer, device, run_dir, counts, kind, state, eval_rows, conformance)


def train(plan: Plan, plan_dir: Path, resume: bool = False, log=print, fresh: bool = False) -> RunResult:
    """Run the plan; returns what was measured (its `lock` held until released). Raises RecipeError on
    user errors. An earlier run in the directory is continued (resume), moved aside (fresh) or refused."""
    from .launch import is_worker

    run_dir = (plan_dir / plan.output_dir).resolve()
    if not is_worker():  # a launcher's processes run under the launcher's lock
        outdir.check_run_dir(run_dir, resume, fresh, keep=(plan_dir, Path.cwd()))
    session = prepare(plan, plan_dir, log)
    lock = None if is_worker() else outdir.RunLock.acquire(run_dir, fresh, log)
    try:
        result = _train(plan, plan_dir, session, resume, log)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    result.lock = lock
    return result


def _train(plan: Plan, plan_dir: Path, session: "Session", resume: bool, log) -> RunResult:
    import torch

    trainer, run_dir, state = session.trainer, session.run_dir, session.state
    checkpoints = run_dir / "checkpoints"
    main = trainer.is_world_process_zero()
    if main and not resume and outdir.outputs(run_dir):  # another run finished here while this one loaded
        raise RecipeError(f"{run_dir} now holds an earlier run ({', '.join(outdir.outputs(run_dir))}): "
                          f"continue it with --resume, or start over with --fresh")
    start_from = latest_checkpoint(checkpoints) if resume else None
    if resume and start_from is None:
        log("no complete checkpoint to resume from: starting from the beginning")
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:  # what `recipe export` reads
        from ..compiler.lock import seal  # `recipe run` refuses the file once edited by hand, as a `recipe plan -o` one

        outdir.atomic_write(run_dir / "plan.json", seal(plan).model_dump_json(indent=2) + "\n")
    sharded = plan.distributed.strategy in ("fsdp", "deepspeed")

    from .evaluate import evaluate, gate, load_schema

    schema = load_schema(plan, plan_dir)
    batch = min(16, max(1, 2 * plan.training.micro_batch_size))
    evaluation = {}
    if session.eval_rows and sharded:
        log("held-out generation is skipped on a sharded model; score the adapter with `recipe eval`")
    if session.eval_rows and not sharded:
        log("scoring the base model on the held-out set")
        evaluation["baseline"] = evaluate(plan, trainer.model, session.tokenizer, session.eval_rows, schema, batch)
        if plan.distributed.processes == 1:  # before train(), evaluate() would keep the model from DDP wrapping
            # absent when truncation left no held-out example with an answer to score
            evaluation["baseline_eval_loss"] = trainer.evaluate().get("eval_loss")

    def stop(signum, frame):
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        log("\ninterrupted: saving a checkpoint, then stopping (Ctrl-C again to abort at once)")

    # SIGTERM (a scheduler's preemption, `docker stop`, `kill`) stops as Ctrl-C does, after a checkpoint
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    if session.device.kind == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
    except AlreadyTrained:  # the checkpoint's weights and state are loaded: save, score and report them
        output = None
        trainer.control = trainer.callback_handler.on_train_end(trainer.args, trainer.state, trainer.control)
    except OSError as exc:
        if not outdir.disk_full(exc):
            raise
        last = _last_complete(checkpoints)
        raise RecipeError(f"the disk is full: a checkpoint could not be saved in {checkpoints} ({exc.strerror}). "
                          + (f"The last complete checkpoint, {last.name}, is kept; " if last else
                             "No checkpoint was complete yet; ")
                          + "free some space, then run again with --resume") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    seconds = time.perf_counter() - started
    ts = trainer.state
    # a resumed run's speed: the steps and tokens of this session, over its seconds (steps / tokens: in all)
    steps_run = ts.global_step - state.get("start_step", 0)
    tokens_run = int(ts.num_input_tokens_seen or 0) - state.get("start_tokens", 0)
    measured = {
        "wall_seconds": round(seconds, 2),
        "steps": ts.global_step,
        "steps_run": steps_run,
        "tokens": int(ts.num_input_tokens_seen or 0),
        "tokens_run": tokens_run,
        "tokens_per_second": round(tokens_run / max(seconds, 1e-9), 1),
        "train_loss": output.training_loss if steps_run and output is not None else None,
        "device": session.device.name,  # `recipe calibrate` fits speed per GPU
        **session.device.peak_memory(),
    }
    adapter_dir = None
    if not state["stop"]:
        adapter_dir = run_dir / ("model" if plan.method == "full" else "adapter")
        tmp = run_dir / f".{adapter_dir.name}.partial"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)  # a half-written save of this tool's
        try:
            trainer.save_model(str(tmp))  # every rank takes part (sharded states are gathered); rank 0 writes
            if main:
                session.tokenizer.save_pretrained(str(tmp))
        except OSError as exc:
            if not outdir.disk_full(exc):
                raise
            if main:
                shutil.rmtree(tmp, ignore_errors=True)
            last = _last_complete(checkpoints)
            raise RecipeError(f"the disk is full: the {adapter_dir.name} could not be saved ({exc.strerror}). "
                              + (f"The last complete checkpoint, {last.name}, is kept; " if last else "")
                              + "free some space, then run again with --resume") from None
        if main:
            if adapter_dir.exists():  # the same run's earlier adapter (a resumed run), replaced by the newer one
                old = run_dir / f".{adapter_dir.name}.old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(adapter_dir, old)
                os.replace(tmp, adapter_dir)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, adapter_dir)
    if plan.distributed.processes > 1:
        _record_rank(run_dir, trainer)
    if session.eval_rows and not state["stop"] and not sharded:
        log("scoring the tuned model on the held-out set")
        evaluation["tuned"] = evaluate(plan, trainer.model, session.tokenizer, session.eval_rows, schema, batch)
        if plan.preference is not None:
            from .preference_eval import against_base

            against_base(plan, evaluation.get("baseline"), evaluation["tuned"])
    if not state["stop"]:
        evaluation["gate"] = gate(plan, evaluation.get("tuned"))
    curve = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
             for h in ts.log_history if "loss" in h]
    evals = [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in ts.log_history if "eval_loss" in h]
    if evals:
        measured["eval_loss"] = evals[-1]["eval_loss"]
        measured["eval_curve"] = evals
        evaluation["tuned_eval_loss"] = evals[-1]["eval_loss"]
    return RunResult(run_dir, adapter_dir, state["stop"], measured, session.counts, curve,
                     str(start_from) if start_from else None, evaluation, main, session.conformance)


def _record_rank(run_dir: Path, trainer) -> None:
    """Each process notes its rank, the world size and a hash of its trainable weights."""
    import hashlib

    import torch.distributed as dist

    model = trainer.accelerator.unwrap_model(trainer.model)
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    ranks = run_dir / "ranks"
    ranks.mkdir(exist_ok=True)
    (ranks / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "world_size": world,
                                                         "wrapper": type(trainer.model_wrapped).__name__,
                                                         "trainable_sha256": h.hexdigest()}) + "\n")
