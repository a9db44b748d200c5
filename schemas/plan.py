"""The plan: a recipe resolved into concrete, versioned decisions. `recipe run` executes a plan.

Pydantic and stdlib only. `schema_version` changes when a field changes meaning or goes away;
readers refuse a plan whose major version they do not know.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from .recipe import Recipe

PLAN_SCHEMA_VERSION = "1.1"  # 1.1: `build`, what the live model is made of
# The words that open the plan's warning for a multimodal checkpoint trained as its text model (written by
# compiler/models.py, read by runtime/export.py to annotate the unmerged-adapter serving files)
MULTIMODAL_NOTE = "is a multimodal checkpoint"


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Decision(Frozen):
    what: str  # e.g. "method", "gpu", "micro_batch_size"
    choice: str
    reason: str


class ModelInfo(Frozen):
    name: str
    source: str  # catalog | local
    family: str
    path: Optional[str] = None
    parameters: int
    published_parameters: Optional[int] = None
    trainable_parameters: int
    hidden_size: int
    num_layers: int
    vocab_size: int
    config: dict = Field(default_factory=dict, description="The config.json fields the plan was made from")


class Hardware(Frozen):
    gpu: str
    count: int
    memory_bytes: int
    bf16_tflops: float
    usd_per_gpu_hour: Optional[float] = None
    price_source: Optional[str] = None
    provider: Optional[str] = None
    gpus_rented: Optional[int] = Field(None, description=(
        "GPUs paid for: more than count when the cheapest rental is a whole instance with more GPUs "
        "(cost.usd_per_hour = gpus_rented x usd_per_gpu_hour); None: no price"))


class Memory(Frozen):
    allocated_peak_bytes: int = Field(description="What torch.cuda.max_memory_allocated would report")
    required_bytes: int = Field(description="What must fit on the card: peak + allocator overhead + CUDA context")
    capacity_bytes: int
    headroom_bytes: int
    components: dict[str, int]


class Adapter(Frozen):
    rank: int
    alpha: float
    dropout: float
    targets: list[str]
    use_dora: bool
    quantization: Optional[dict] = None  # {bits, type, double_quant, compute_dtype}


class TrainingPlan(Frozen):
    micro_batch_size: int
    gradient_accumulation_steps: int
    effective_batch_size: int
    gradient_checkpointing: bool
    epochs: float
    steps: int
    max_seq_len: int
    optimizer: str
    precision: str
    attention: str
    learning_rate: float
    packing: bool


class PreferencePlan(Frozen):
    """Preference tuning (task: preference): the objective and what it costs against SFT."""

    objective: str  # dpo | orpo | kto
    beta: float
    loss_type: Optional[str] = None
    label_smoothing: Optional[float] = None  # DPO's exo_pair / robust: the share of pairs assumed flipped
    sequences_per_example: int  # chosen and rejected (or completion and KL completion) in one batch
    reference: str  # adapter_disabled | second_model | precomputed | none
    precompute_ref_log_probs: bool
    sft_allocated_peak_bytes: int = Field(description="The same step trained as SFT (one sequence per example)")
    note: str = ""


class DataPlan(Frozen):
    train_path: str
    train_sha256: Optional[str] = None
    eval_path: Optional[str] = None
    eval_sha256: Optional[str] = None
    examples: int
    tokens_per_example: float
    counted_with: str  # "tokenizer" | "heuristic" | "declared" | "assumed" (nothing to count, nothing declared)
    truncated_examples: int = 0
    note: str = ""


class TimePlan(Frozen):
    hours: float
    train_tokens: int
    flops_per_token: float
    utilization: float
    tokens_per_second: float
    scaling_efficiency: float
    assumptions: list[str]
    # seconds per optimizer step on one GPU by part (compute, dequantization, optimizer_step, ...), as
    # modelled before any calibration factor
    step_seconds: dict[str, float] = {}
    setup_hours: float = 0.1
    calibration_factor: float = 1.0  # the project's own runs on this GPU: measured / modelled speed
    calibration: Optional[str] = None  # "calibrated on 3 runs of this repository ..."


class CostPlan(Frozen):
    usd: Optional[float]
    usd_per_hour: Optional[float]


class Alternative(Frozen):
    gpu: str
    count: int
    method: str
    strategy: str = "single"
    fits: bool
    allocated_peak_bytes: int
    required_bytes: int
    capacity_bytes: int
    micro_batch_size: Optional[int] = None
    gradient_checkpointing: Optional[bool] = None
    hours: Optional[float] = None
    usd: Optional[float] = None
    within_budget: bool
    note: str = ""


class DistributedPlan(Frozen):
    """How the GPUs share the work: one process per GPU, across `nodes` machines."""

    strategy: str  # "single" | "ddp" | "fsdp" | "deepspeed"
    processes: int
    nodes: int = 1
    gpus_per_node: int = 1
    zero_stage: Optional[int] = None
    cpu_offload: bool = False


class ModuleBuild(Frozen):
    """One kind of weight in the decoder layers, and whether bitsandbytes stores it quantized."""

    name: str  # as in the model: "q_proj", "query_key_value", "mlp.experts"
    module_class: str  # the transformers class: "Linear", "FalconLinear", "MixtralExperts"
    count: int  # instances in the whole model
    quantized: bool
    reason: str


class BuildPlan(Frozen):
    """What the live model is made of, decided once by the compiler. `recipe run` builds the model
    from it and checks the built (trl-wrapped) model against it before the first step."""

    modules: list[ModuleBuild]
    quantization: Optional[str] = Field(description="None, nf4, fp4 or int8 (bitsandbytes)")
    attention: str
    attention_supported: list[str]
    weights_dtype: str = Field(description="The frozen base weights (quantized ones: their compute dtype)")
    trainable_dtype: str = Field(description="Adapters (DoRA magnitudes stay fp32) or, for full, the master weights")
    gradient_dtype: str
    optimizer_state_dtype: str = Field(description="fp32, bf16 or uint8 (bitsandbytes 8-bit, blockwise)")
    trainable_parameters: int
    packing: str = Field(description="off, or padding_free (trl bfd rows, varlen flash-attention)")
    stack: list[str] = Field(default_factory=list, description="Parts of the stack the run needs")


class Lock(Frozen):
    """What makes a plan stale: the recipe, its data, a local model's config and tokenizer, and the
    catalogs it was made from."""

    recipe_path: str
    recipe_sha256: str
    overrides: list[str] = Field(default_factory=list)
    data_sha256: dict[str, Optional[str]]
    model_sha256: dict[str, Optional[str]] = Field(
        default_factory=dict, description="A local model's config.json and tokenizer files, by path")
    catalogs: dict[str, str]
    tool_version: str
    plan_sha256: Optional[str] = Field(
        default=None, description="The plan file's content without its lock, as `recipe plan -o` wrote it: "
                                  "`recipe run` refuses a plan edited by hand")


class ApiSide(Frozen):
    """The API call the fine-tuned model replaces."""

    model: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    price_source: str
    as_of: Optional[str] = None
    retired: bool = False
    monthly_usd: float
    usd_per_mtok: float = Field(description="Blended over input and output tokens at the recipe's mix")


class Serving(Frozen):
    """Self-hosting the merged model: GPU, replicas, throughput and cost."""

    gpu: str
    gpus_per_replica: int
    replicas: int
    quantization: str  # none | 8bit | 4bit
    weights_bytes: int
    capacity_bytes: int = Field(description="Memory of one replica (all its GPUs)")
    usd_per_gpu_hour: float
    price_source: str
    gpus_rented: Optional[int] = Field(None, description=(
        "GPUs paid for (always on: for all replicas; scaled to zero: for one busy replica): more than "
        "the replicas use when the cheapest rental is a whole instance with more GPUs"))
    scale_to_zero: bool
    prefill_tokens_per_second: float = Field(description="Input tokens/s of one replica")
    decode_tokens_per_second: float = Field(description="Output tokens/s of one replica at high concurrency")
    seconds_per_request: float = Field(description="GPU time of one request on one replica")
    requests_per_second: float = Field(description="What one replica sustains at the recipe's token mix")
    peak_requests_per_second: float
    gpu_hours_per_month: float = Field(description="GPU-hours paid for (rented GPUs, idle ones included)")
    monthly_usd: float
    usd_per_mtok: float = Field(description="Blended, at the recipe's volume (idle time included)")
    usd_per_mtok_at_capacity: float = Field(description="Blended, with every replica busy (and every GPU rented)")


class OneTime(Frozen):
    training_usd: Optional[float] = Field(description="The plan's training cost; None when it has no price")
    eval_usd: Optional[float]
    engineering_usd: float
    total_usd: float


class Economics(Frozen):
    """Does fine-tuning pay for itself against the API it replaces? USD; a month is 30.4 days."""

    api_monthly_usd: float
    self_hosted_monthly_usd: Optional[float] = Field(description="None when no catalog GPU can serve the model")
    one_time_usd: float
    monthly_saving_usd: Optional[float]
    break_even_days: Optional[float] = Field(description="None when self-hosting never pays back")
    verdict: str
    requests_per_day: int
    input_tokens_per_request: int
    output_tokens_per_request: int
    tokens_per_month: int
    api: ApiSide
    serving: Optional[Serving]
    one_time: OneTime
    caveats: list[str] = Field(default_factory=list)
    assumptions: list[str] = Field(default_factory=list)


class Plan(Frozen):
    schema_version: str = PLAN_SCHEMA_VERSION
    tool_version: str
    name: str
    task: str
    method: str
    fits: bool
    model: ModelInfo
    hardware: Hardware
    adapter: Optional[Adapter]
    memory: Memory
    training: TrainingPlan
    data: DataPlan
    time: TimePlan
    cost: CostPlan
    decisions: list[Decision]
    alternatives: list[Alternative]
    warnings: list[str] = Field(default_factory=list)
    economics: Optional[Economics] = None
    output_dir: str
    distributed: DistributedPlan = DistributedPlan(strategy="single", processes=1)
    build: Optional[BuildPlan] = None  # None only in plans written before schema 1.1
    preference: Optional[PreferencePlan] = None
    recipe: Recipe
    lock: Lock
