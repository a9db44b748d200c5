"""The plan: a recipe resolved into concrete, versioned decisions. `recipe run` executes a plan.

Pydantic and stdlib only. `schema_version` changes when a field changes meaning or goes away;
readers refuse a plan whose major version they do not know.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from .recipe import Recipe

PLAN_SCHEMA_VERSION = "1.0"


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


class DataPlan(Frozen):
    train_path: str
    train_sha256: Optional[str] = None
    eval_path: Optional[str] = None
    eval_sha256: Optional[str] = None
    examples: int
    tokens_per_example: float
    counted_with: str  # "tokenizer" | "heuristic" | "declared"
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


class CostPlan(Frozen):
    usd: Optional[float]
    usd_per_hour: Optional[float]


class Alternative(Frozen):
    gpu: str
    count: int
    method: str
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


class Lock(Frozen):
    """What makes a plan stale: the recipe, its data and the catalogs it was made from."""

    recipe_path: str
    recipe_sha256: str
    overrides: list[str] = Field(default_factory=list)
    data_sha256: dict[str, Optional[str]]
    catalogs: dict[str, str]
    tool_version: str


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
    economics: Optional[dict] = None
    output_dir: str
    recipe: Recipe
    lock: Lock
