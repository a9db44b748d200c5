"""The recipe: what to train, on what data, with which method, within what budget.

Pydantic and stdlib only. Every model forbids unknown keys. Key names are a contract with users'
files: add keys, never rename them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

Task = Literal["classification", "extraction", "generation", "chat", "preference"]
DataFormat = Literal["chat", "sharegpt", "alpaca", "prompt_completion", "text", "template", "preference", "kto"]
MethodName = Literal["auto", "lora", "qlora", "dora", "qdora", "full"]
Optimizer = Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"]
Precision = Literal["bf16", "fp16", "fp32", "bf16-pure"]  # bf16-pure: bf16 weights and optimizer states, no fp32 master
Metric = Literal["exact_match", "accuracy", "macro_f1", "token_f1", "json_fields", "preference_accuracy"]
Objective = Literal["sft", "dpo", "orpo", "kto"]
# trl 1.16 DPOConfig.loss_type
DpoLoss = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                  "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm"]
KTO_MIN_MICRO_BATCH = 2  # KTO's KL term pairs each example with another of its micro batch
SMOOTHED_LOSSES = ("exo_pair", "robust")  # the DPO losses that read trl's label_smoothing
PREFERENCE_FORMATS = ("preference", "kto")
Scheduler = Literal["cosine", "linear", "constant", "constant_with_warmup"]
Attention = Literal["auto", "sdpa", "eager", "flash_attention_2"]
Tracker = Literal["tensorboard", "wandb", "mlflow"]

QUANTIZED_METHODS = ("qlora", "qdora")


def _auto_or_positive_int(value: Any) -> Union[str, int]:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise PydanticCustomError("auto_or_int", "expected 'auto' or a positive integer, got {got}",
                              {"got": repr(value)})


def _auto_or_bool(value: Any) -> Union[str, bool]:
    if value == "auto" or isinstance(value, bool):
        return value
    raise PydanticCustomError("auto_or_bool", "expected 'auto', true or false, got {got}",
                              {"got": repr(value)})


AutoInt = Annotated[
    Union[Literal["auto"], int],
    PlainValidator(_auto_or_positive_int),
    WithJsonSchema({"anyOf": [{"const": "auto"}, {"type": "integer", "minimum": 1}]}),
]
AutoBool = Annotated[
    Union[Literal["auto"], bool],
    PlainValidator(_auto_or_bool),
    WithJsonSchema({"anyOf": [{"const": "auto"}, {"type": "boolean"}]}),
]


def _targets(value: Any) -> Union[str, list[str]]:
    if value == "all-linear":
        return value
    if (isinstance(value, list) and value
            and all(isinstance(v, str) and v.strip() for v in value)):
        return list(value)
    if isinstance(value, str):
        raise PydanticCustomError(
            "targets", "expected 'all-linear' or a list of module names such as [q_proj, v_proj], "
                       "got {got}", {"got": repr(value), "choices": ["all-linear"]})
    raise PydanticCustomError(
        "targets", "expected 'all-linear' or a non-empty list of module names, got {got}",
        {"got": repr(value)})


Targets = Annotated[
    Union[Literal["all-linear"], list[str]],
    PlainValidator(_targets),
    WithJsonSchema({"anyOf": [{"const": "all-linear"},
                              {"type": "array", "items": {"type": "string", "minLength": 1},
                               "minItems": 1}]}),
]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Name = Annotated[str, Field(min_length=1)]


def cross_field(problems: list[tuple[str, str]]) -> None:
    """Raise the problems of one section at once; each names the key it is about."""
    if problems:
        raise PydanticCustomError(
            "cross_field", "; ".join(message for _, message in problems), {"problems": problems}
        )


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)  # numbers are finite


class ModelSpec(Section):
    """The base model: a catalog name or hub id, or a local directory holding config.json."""

    base: Name = Field(description="Catalog name, hub id, or local directory with config.json")
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit)")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model (off by default)")
    adapter: Optional[Name] = Field(
        None, description="Start from a trained adapter (e.g. runs/sft/adapter), relative to the recipe file")
    adapter_mode: Literal["merge", "stack"] = Field(
        "merge", description="merge: fold the adapter into the base and train a new one on top; "
                             "stack: keep it as a separate adapter and train it further")


class TemplateSpec(Section):
    """Jinja2 templates over the data's columns, rendered in a sandbox."""

    prompt: Name
    completion: Name


class SourceSpec(Section):
    """One data source: a local file or glob, a `datasets.save_to_disk` directory, or a hub dataset."""

    path: Optional[Name] = Field(None, description="A local file or glob (JSONL, JSON, CSV, Parquet), relative "
                                                   "to the recipe file")
    disk: Optional[Name] = Field(None, description="A directory written by datasets' save_to_disk")
    hub: Optional[Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")]] = Field(
        None, description="A Hugging Face hub dataset, org/name")
    subset: Optional[Name] = Field(None, description="The hub dataset's configuration (subset) name")
    split: Optional[Name] = Field(None, description="Split to read (default: train)")
    revision: Optional[Name] = Field(None, description="Hub branch, tag or commit")
    data_files: Optional[Union[Name, Annotated[list[Name], Field(min_length=1)]]] = Field(
        None, description="Files (patterns) of the hub dataset to read")
    weight: Optional[PositiveFloat] = Field(None, description="Sampling share in a mixture (relative)")
    max_examples: Optional[PositiveInt] = Field(None, description="Use at most this many examples of the source")
    format: Optional[DataFormat] = Field(None, description="This source's format (default: data.format)")
    columns: dict[Name, Name] = Field(
        default_factory=dict, description="Format field -> the source's column, e.g. {prompt: question}")
    roles: dict[Name, Literal["system", "user", "assistant", "tool"]] = Field(
        default_factory=dict, description="sharegpt: the source's role names -> system, user, assistant or tool")

    @model_validator(mode="after")
    def _rules(self) -> "SourceSpec":
        problems = []
        given = [k for k in ("path", "disk", "hub") if getattr(self, k) is not None]
        if len(given) != 1:
            key = given[1] if len(given) > 1 else "path"
            problems.append((key, "a source takes exactly one of path, disk or hub" +
                             (f" (got {', '.join(given)})" if given else "")))
        if self.split is not None and self.path is not None:
            problems.append(("split", "split is for hub and saved (disk) datasets; a file is one split"))
        if self.hub is None:
            for key in ("subset", "revision", "data_files"):
                if getattr(self, key) is not None:
                    problems.append((key, f"{key} is for hub sources (hub: org/name)"))
        cross_field(problems)
        return self


def _tag(value: Any) -> str:
    if isinstance(value, list):
        return "@list"
    return "@mapping" if isinstance(value, dict) or isinstance(value, SourceSpec) else "@text"


# Tagged unions: a value is checked only against the shape it has, so errors name that shape alone
# (the "@..." tags are dropped from error locations by compiler/validate.py).
DataSource = Annotated[Union[Annotated[Name, Tag("@text")], Annotated[SourceSpec, Tag("@mapping")]],
                       Discriminator(_tag)]
Sources = Annotated[Union[Annotated[Name, Tag("@text")], Annotated[SourceSpec, Tag("@mapping")],
                          Annotated[list[DataSource], Field(min_length=1), Tag("@list")]],
                    Discriminator(_tag)]


class DataSpec(Section):
    train: Sources = Field(description="A source or a list of sources: a file or glob relative to the recipe file, "
                                       "hf://org/name[@revision], or a mapping with path, disk or hub")
    eval: Optional[Sources] = Field(None, description="Held-out source(s); or use eval_fraction")
    eval_fraction: Optional[float] = Field(None, gt=0, lt=1, description="Held-out share of train")
    format: DataFormat = "chat"
    template: Optional[TemplateSpec] = None
    chat_template: Optional[Name] = Field(
        None, description="model (the model's own, default), chatml, llama3, gemma, qwen, alpaca, or a Jinja file")
    train_on_inputs: bool = Field(False, description="Compute the loss on prompts too (default: answers only)")
    system_prompt: Optional[Name] = Field(None, description="System message added to conversations that lack one")
    on_error: Literal["fail", "skip"] = Field("fail", description="What to do with a malformed record")
    examples: Optional[int] = Field(
        None, ge=1, le=10**12, description="Training examples for planning; overrides the count of the data")
    tokens_per_example: Optional[int] = Field(
        None, ge=1, le=2**20, description="Mean tokens per example for planning; overrides the measured mean")

    @model_validator(mode="after")
    def _rules(self) -> "DataSpec":
        problems = []
        if self.eval is not None and self.eval_fraction is not None:
            problems.append(("eval_fraction", "give either data.eval or data.eval_fraction, not both"))
        formats = {self.format} | {s.format for s in _listed(self.train) if isinstance(s, SourceSpec) and s.format}
        if "template" in formats and self.template is None:
            problems.append(("template", "format 'template' needs data.template with prompt and completion"))
        if "template" not in formats and self.template is not None:
            problems.append(("template", f"data.template is only used with format 'template' "
                                         f"(format is '{self.format}')"))
        for key in ("train", "eval"):
            listed = _listed(getattr(self, key))
            weighted = [s for s in listed if isinstance(s, SourceSpec) and s.weight is not None]
            if weighted and len(weighted) != len(listed):
                problems.append((key, f"data.{key}: {len(weighted)} of {len(listed)} sources have a weight; give "
                                      f"every source a weight, or none (then every example of each is used)"))
        cross_field(problems)
        return self


def _listed(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


class QuantizationSpec(Section):
    bits: Literal[4, 8] = 4
    type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True


class MethodSpec(Section):
    name: MethodName = "auto"
    rank: PositiveInt = 16
    alpha: PositiveFloat = 32
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: Targets = "all-linear"
    quantization: Optional[QuantizationSpec] = Field(
        None, description="Base-model quantization for qlora / qdora (default 4-bit NF4, double quant)")

    @model_validator(mode="after")
    def _rules(self) -> "MethodSpec":
        problems = []
        if self.quantization is not None and self.name not in (*QUANTIZED_METHODS, "auto"):
            problems.append(("quantization", f"quantization is only used by qlora / qdora "
                                             f"(method is '{self.name}'); remove it or pick qlora"))
        cross_field(problems)
        return self


class TrainingSpec(Section):
    epochs: float = Field(3, gt=0, le=1000)
    max_steps: Optional[int] = Field(None, ge=1, le=10**9, description="Stop after this many optimizer steps")
    max_seq_len: int = Field(2048, ge=1, le=2**20)
    batch_size: int = Field(32, ge=1, le=2**20, description="Effective batch, in sequences")
    micro_batch_size: AutoInt = "auto"
    gradient_checkpointing: AutoBool = "auto"
    learning_rate: float = Field(2.0e-4, gt=0, le=10)
    lr_scheduler: Scheduler = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: NonNegativeFloat = 0.0
    max_grad_norm: PositiveFloat = 1.0
    optimizer: Optimizer = "adamw"
    precision: Precision = "bf16"
    attention: Attention = "auto"
    packing: bool = False
    seed: int = 42
    save_steps: Optional[PositiveInt] = Field(None, description="Checkpoint every N steps (default: each epoch)")
    logging_steps: PositiveInt = 10
    report_to: list[Tracker] = Field(default_factory=list)
    objective: Optional[Objective] = Field(
        None, description="sft, or for task preference: dpo (default), orpo or kto")
    beta: PositiveFloat = Field(0.1, description="Preference objectives: how far from the reference (dpo, kto) "
                                                 "or the odds-ratio weight (orpo)")
    loss_type: Optional[DpoLoss] = Field(None, description="DPO loss variant (trl's loss_type); default sigmoid")
    label_smoothing: Optional[float] = Field(
        None, ge=0, lt=0.5, description="DPO loss_type exo_pair or robust: the share of pairs assumed mislabelled "
                                        "(needed by both; the EXO paper recommends 0.001)")
    precompute_ref_log_probs: AutoBool = Field(
        "auto", description="Score the reference once before training (auto: when the plan says it saves memory)")

    @model_validator(mode="after")
    def _rules(self) -> "TrainingSpec":
        problems = []
        if self.loss_type is not None and self.objective not in (None, "dpo"):
            problems.append(("loss_type", f"training.loss_type is a DPO setting (objective is '{self.objective}')"))
        smoothed = self.loss_type in SMOOTHED_LOSSES
        if smoothed and not self.label_smoothing:
            problems.append(("loss_type", f"loss_type {self.loss_type} needs training.label_smoothing > 0 (the share "
                                          f"of pairs assumed mislabelled; the EXO paper recommends 0.001)"
                                          + (": at 0 robust is plain sigmoid" if self.loss_type == "robust" else "")))
        if self.label_smoothing is not None and not smoothed:
            problems.append(("label_smoothing", f"training.label_smoothing is used only by DPO's loss_type exo_pair "
                                                f"and robust (loss_type is {self.loss_type or 'sigmoid'})"))
        mbs = self.micro_batch_size
        if isinstance(mbs, int) and mbs > self.batch_size:
            problems.append(("micro_batch_size", f"micro_batch_size {mbs} is larger than batch_size "
                                                 f"{self.batch_size}"))
        cross_field(problems)
        return self


class CustomGPU(Section):
    """A GPU the catalog does not have ("the machine I have")."""

    name: Name
    memory_gb: PositiveFloat = Field(description="Memory in GiB, as torch.cuda reports it")
    bf16_tflops: PositiveFloat = Field(description="Dense BF16 (or FP16) tensor TFLOPS")
    usd_per_hour: NonNegativeFloat = 0.0
    bf16_supported: bool = True


class BudgetSpec(Section):
    gpus: Optional[Annotated[list[Name], Field(min_length=1)]] = Field(
        None, description="Candidate GPU types; omitted: the whole catalog")
    gpu: Optional[Name] = Field(None, description="Pin one GPU type")
    gpu_count: Optional[PositiveInt] = Field(None, description="Pin the GPU count")
    max_gpus: PositiveInt = 8
    nodes: PositiveInt = Field(1, description="Most machines to spread over")
    gpus_per_node: PositiveInt = Field(8, description="GPUs in one machine")
    max_cost_usd: Optional[PositiveFloat] = None
    max_hours: Optional[PositiveFloat] = None
    provider: Optional[Name] = Field(None, description="Price GPUs at this provider (aws, gcp, ...)")
    spot: bool = False
    prices: dict[str, NonNegativeFloat] = Field(
        default_factory=dict, description=(
            "Your own USD per GPU-hour, by GPU name, paid for exactly the GPUs the plan uses (catalog "
            "prices rent whole instances: an 8-GPU instance costs 8 GPUs even for one)"))
    custom_gpus: list[CustomGPU] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self) -> "BudgetSpec":
        problems = []
        # budget.gpu outside budget.gpus: compiler/checks.py, which knows the catalog's names for a GPU
        if self.gpu_count is not None and self.gpu_count > self.max_gpus:
            problems.append(("gpu_count", f"gpu_count {self.gpu_count} exceeds max_gpus {self.max_gpus}"))
        if self.gpu_count is not None and self.gpu_count > self.nodes * self.gpus_per_node:
            problems.append(("gpu_count", f"gpu_count {self.gpu_count} is more than nodes x gpus_per_node "
                                          f"({self.nodes} x {self.gpus_per_node})"))
        cross_field(problems)
        return self


class DistributedSpec(Section):
    """How a plan on several GPUs shares the work; engines: accelerate (DDP, FSDP) and DeepSpeed."""

    strategy: Literal["auto", "ddp", "fsdp", "deepspeed"] = Field(
        "auto", description="auto: the smallest GPU count and the cheapest strategy that fits")
    zero_stage: Literal[2, 3] = Field(3, description="DeepSpeed ZeRO stage")
    cpu_offload: bool = Field(False, description="Offload optimizer states (and ZeRO-3 / FSDP parameters) to CPU")


class EvalSpec(Section):
    metric: Optional[Metric] = Field(None, description="Default by task: exact_match (classification), json_fields "
                                                       "(extraction), token_f1 (generation, chat), "
                                                       "preference_accuracy (preference)")
    min_score: Optional[float] = Field(None, ge=0, le=1, description="Quality gate")
    max_new_tokens: AutoInt = "auto"
    json_schema: Optional[Name] = Field(None, description="JSON Schema file outputs must satisfy")


class EconomicsSpec(Section):
    api_model: Name
    requests_per_day: int = Field(ge=1, le=10**12)
    input_tokens_per_request: int = Field(ge=1, le=2**22)
    output_tokens_per_request: int = Field(ge=1, le=2**22)
    input_usd_per_mtok: Optional[NonNegativeFloat] = Field(None, description="Override the API price")
    output_usd_per_mtok: Optional[NonNegativeFloat] = Field(None, description="Override the API price")
    serving_quantization: Literal["none", "8bit", "4bit"] = "none"
    scale_to_zero: bool = False
    engineering_hours: NonNegativeFloat = 0.0
    hourly_rate: NonNegativeFloat = 0.0


class SLASpec(Section):
    """What the served model must sustain before it takes traffic; `recipe bench` checks each line."""

    p95_latency_ms: Optional[PositiveFloat] = Field(None, description="Most 95th-percentile request latency, ms")
    min_tokens_per_s: Optional[PositiveFloat] = Field(
        None, description="Least output tokens per second sustained by the endpoint, all requests together")
    max_error_rate: Optional[float] = Field(
        None, ge=0, le=1, description="Most share of requests that fail or time out")

    @model_validator(mode="after")
    def _rules(self) -> "SLASpec":
        problems = []
        if self.p95_latency_ms is None and self.min_tokens_per_s is None and self.max_error_rate is None:
            problems.append(("p95_latency_ms", "serving.sla sets no target: give p95_latency_ms, "
                                               "min_tokens_per_s or max_error_rate"))
        cross_field(problems)
        return self


class ServingSpec(Section):
    sla: Optional[SLASpec] = Field(None, description="Service-level targets checked by `recipe bench`")


class OutputSpec(Section):
    dir: Optional[Name] = Field(None, description="Run directory; default runs/<name>")


class Recipe(Section):
    name: Optional[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]] = Field(
        None, description="Short name; default: the file name")
    task: Task
    model: ModelSpec
    data: DataSpec
    method: MethodSpec = MethodSpec()
    training: TrainingSpec = TrainingSpec()
    budget: BudgetSpec = BudgetSpec()
    eval: EvalSpec = EvalSpec()
    economics: Optional[EconomicsSpec] = None
    serving: Optional[ServingSpec] = None
    distributed: DistributedSpec = DistributedSpec()
    output: OutputSpec = OutputSpec()

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, title="recipe")

    @model_validator(mode="after")
    def _rules(self) -> "Recipe":
        problems = []
        if self.task == "classification" and self.data.format == "text":
            problems.append(("data.format", "a classification task needs labelled examples; "
                                            "format 'text' has no completion to score"))
        problems += _preference_rules(self)
        cross_field(problems)
        return self


def objective_of(recipe: "Recipe") -> str:
    """The training objective: as set, else dpo for task preference (kto for kto data), else sft."""
    if recipe.training.objective is not None:
        return recipe.training.objective
    if recipe.task != "preference":
        return "sft"
    return "kto" if recipe.data.format == "kto" else "dpo"


def _preference_rules(recipe: "Recipe") -> list[tuple[str, str]]:
    problems = []
    preference = recipe.task == "preference"
    fmt, objective = recipe.data.format, recipe.training.objective
    if preference and fmt not in PREFERENCE_FORMATS:
        problems.append(("data.format", f"task 'preference' trains on pairs: data.format 'preference' "
                                        f"({{prompt, chosen, rejected}}) or 'kto' ({{prompt, completion, label}}), "
                                        f"not '{fmt}'"))
    if not preference and fmt in PREFERENCE_FORMATS:
        problems.append(("task", f"data.format '{fmt}' holds preference data: set task: preference"))
    if not preference and objective not in (None, "sft"):
        problems.append(("training.objective", f"objective '{objective}' needs task: preference"))
    if preference and objective == "sft":
        problems.append(("training.objective", "task 'preference' trains with dpo, orpo or kto, not sft"))
    if preference and fmt == "kto" and objective in ("dpo", "orpo"):
        problems.append(("training.objective", f"objective '{objective}' needs paired data (data.format: "
                                               f"preference); kto data trains with objective kto"))
    if preference and fmt == "preference" and objective == "kto":
        problems.append(("data.format", "objective 'kto' trains on unpaired data: data.format: kto"))
    resolved, t = objective_of(recipe), recipe.training
    if t.loss_type is not None and objective is None and resolved == "sft":
        problems.append(("training.loss_type", "training.loss_type is a DPO setting (the objective is sft; DPO "
                                               "needs task: preference)"))
    if isinstance(t.precompute_ref_log_probs, bool) and resolved not in ("dpo", "kto"):
        problems.append(("training.precompute_ref_log_probs", f"objective {resolved} has no reference model to "
                                                              f"precompute (only dpo and kto have one): remove it"))
    if preference and resolved == "kto":
        mbs = recipe.training.micro_batch_size
        if isinstance(mbs, int) and mbs < KTO_MIN_MICRO_BATCH:
            problems.append(("training.micro_batch_size", f"KTO needs a micro batch of at least {KTO_MIN_MICRO_BATCH} "
                                                          f"(its KL term pairs each example with another of the same "
                                                          f"micro batch)"))
        elif recipe.training.batch_size < KTO_MIN_MICRO_BATCH:
            problems.append(("training.batch_size", f"KTO needs a batch of at least {KTO_MIN_MICRO_BATCH} (its KL "
                                                    f"term pairs each example with another of the same micro batch)"))
    metric = recipe.eval.metric
    if preference and metric not in (None, "preference_accuracy"):
        problems.append(("eval.metric", f"task 'preference' is scored with preference_accuracy, not '{metric}'"))
    if not preference and metric == "preference_accuracy":
        problems.append(("eval.metric", "preference_accuracy needs task: preference"))
    if recipe.model.adapter is not None and recipe.method.name == "full" and recipe.model.adapter_mode == "stack":
        problems.append(("model.adapter_mode", "a stacked adapter trains as an adapter; method 'full' can only "
                                               "start from it merged (adapter_mode: merge)"))
    return problems


def default_metric(task: str) -> str:
    return {"classification": "exact_match", "extraction": "json_fields",
            "generation": "token_f1", "chat": "token_f1", "preference": "preference_accuracy"}[task]
