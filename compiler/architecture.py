"""The `Architecture` the estimator reads, and what is in it (linears, expert tensors, counts).

Two sources, one vocabulary: `from_descriptor` reads a descriptor derived by transformers itself
(runtime/describe.py: the model built on the meta device, its modules walked; compiler/descriptor.py
finds it), which is how catalog models and any family transformers builds are known; `from_config`
normalises a config.json by hand for the older families in `_FAMILIES`, so that a local directory of
those plans without transformers installed. tests/test_models.py checks both against real models
built on the meta device, and the two against each other for every catalog model of those families.

Mixtral in transformers 5: each layer's experts are two fused 3-D
`nn.Parameter`s (`mlp.experts.gate_up_proj` [E, 2*I, H] and
`mlp.experts.down_proj` [E, H, I]) and the router `mlp.gate` is a custom module
holding a [E, H] weight; none of them is an `nn.Linear`, so `linear_modules`
lists only q/k/v/o_proj. PEFT 0.21 still honours LoRA `target_modules="all-linear"`
on such a model: it keeps q/k/v/o_proj as modules and adds `target_parameters`
{"gate.weight", "gate_up_proj", "down_proj"}, doubling r and alpha on
gate_up_proj (it fuses the old w1 and w3). `parameter_targets` lists those.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..schemas.errors import UnsupportedArchitecture

# Per family: the transformers config-class defaults this module relies on
# when a key is absent from config.json.
_FAMILIES: dict[str, dict] = {
    "llama": dict(tie=False, max_pos=2048, window=None, act="silu"),
    "mistral": dict(tie=False, max_pos=131072, window=4096, act="silu"),
    "mixtral": dict(tie=False, max_pos=131072, window=None, act="silu"),
    "qwen2": dict(tie=False, max_pos=32768, window=4096, act="silu"),
    "gemma": dict(tie=True, max_pos=8192, window=None, act="gelu_pytorch_tanh"),
    "gemma2": dict(tie=True, max_pos=8192, window=4096, act="gelu_pytorch_tanh"),
    "phi": dict(tie=False, max_pos=2048, window=None, act="gelu_new"),
    "phi3": dict(tie=False, max_pos=4096, window=None, act="silu"),
    "falcon": dict(tie=True, max_pos=2048, window=None, act="gelu"),
    "gpt_neox": dict(tie=False, max_pos=2048, window=None, act="gelu"),
    "stablelm": dict(tie=False, max_pos=4096, window=None, act="silu"),
}

SUPPORTED_FAMILIES = tuple(_FAMILIES)

# The class of the decoder-layer linear modules in transformers 5, where it is not `nn.Linear`.
# transformers' bitsandbytes integration replaces only modules whose type is exactly nn.Linear
# (`replace_with_bnb_linear`), so these stay in the compute dtype under QLoRA / an 8-bit base.
_LINEAR_CLASS = {"falcon": "FalconLinear"}

# The attention implementations the family's transformers 5 model class declares
# (`_supports_sdpa`, `_supports_flash_attn`; eager always): Gemma 2 has no sdpa (softcapping).
_ATTENTION = {family: ("eager", "sdpa", "flash_attention_2") for family in _FAMILIES}
_ATTENTION["gemma2"] = ("eager", "flash_attention_2")

# Old key spellings still found in some config.json files (Falcon's first releases).
_KEY_ALIASES = {
    "hidden_size": ("n_embed",),
    "num_hidden_layers": ("n_layer",),
    "num_attention_heads": ("n_head",),
    "num_kv_heads": ("n_head_kv",),
}


@dataclass(frozen=True)
class Architecture:
    """The decoder-only transformer a config.json describes, in one vocabulary."""

    family: str  # the config's model_type
    hidden_size: int
    num_layers: int
    intermediate_size: int  # per expert for MoE
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied_embeddings: bool
    gated_mlp: bool  # gate/up/down (SwiGLU, GeGLU) vs. plain up/down
    num_experts: int  # 1 for dense
    experts_per_token: int  # 1 for dense
    attention_bias: bool  # bias on the q/k/v projection(s)
    attention_out_bias: bool  # bias on o_proj / dense
    mlp_bias: bool
    fused_qkv: bool
    fused_gate_up: bool
    parallel_block: bool  # attention and MLP read the same input
    norm: str  # "rms" | "layer" (LayerNorm has a bias)
    norms_per_layer: int
    qk_norm: bool
    lm_head_bias: bool
    max_position_embeddings: int
    sliding_window: int | None
    rope_theta: float | None  # None: no rotary embedding (ALiBi)
    rope_type: str | None
    hidden_act: str
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    # Falcon's first (multi-query) architecture hands sdpa one key/value head for all query heads
    # and an always-materialised mask: sdpa's math path, which keeps the score matrices like eager
    sdpa_materializes_scores: bool = False
    # layers with softmax attention, where fewer than num_layers (Qwen3.5: full attention every 4th layer, a
    # gated delta net linear attention in the others); None: every layer
    attention_layers: int | None = None
    # What transformers builds, read off the model (compiler/descriptor.py); None for an architecture
    # normalised by hand (`from_config`), whose modules the functions below compute from the fields.
    layout: "Layout | None" = field(default=None, compare=False, hash=False, repr=False)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def softmax_attention_layers(self) -> int:
        return self.num_layers if self.attention_layers is None else self.attention_layers

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim


@dataclass(frozen=True)
class Linear:
    """One nn.Linear name in the decoder layers; `count` is instances in the whole model."""

    name: str
    in_features: int
    out_features: int
    count: int
    bias: bool
    group: str = "attention"  # "attention" | "mlp"
    module_class: str = "Linear"  # its transformers class
    quantizable: bool = True  # exactly nn.Linear: transformers' bitsandbytes integration replaces it

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features * self.count

    @property
    def bias_params(self) -> int:
        return self.out_features * self.count if self.bias else 0

    def lora_params(self, r: int) -> int:
        """Trainable LoRA parameters at rank r (lora_A [r, in] + lora_B [out, r])."""
        return r * (self.in_features + self.out_features) * self.count


@dataclass(frozen=True)
class ParameterTarget:
    """A weight that is not an nn.Linear; PEFT reaches it through `target_parameters`.

    Shape [num_experts, out, in], or [out, in] when num_experts is 1 (the router).
    """

    name: str  # as PEFT's target_parameters spells it, e.g. "gate_up_proj"
    path: str  # inside a decoder layer, e.g. "mlp.experts.gate_up_proj"
    num_experts: int
    in_features: int
    out_features: int
    count: int  # one per layer
    lora_rank_multiplier: int = 1  # PEFT doubles r on the fused gate_up_proj

    @property
    def params(self) -> int:
        return self.num_experts * self.in_features * self.out_features * self.count

    def lora_params(self, r: int) -> int:
        """Trainable LoRA parameters at rank r (lora_A [r*E, in] + lora_B [out, r*E])."""
        rank = r * self.lora_rank_multiplier * self.num_experts
        return rank * (self.in_features + self.out_features) * self.count


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts; total = embedding + lm_head + decoder_linear + experts + other."""

    total: int
    embedding: int
    lm_head: int  # 0 when tied to the embedding; weight only
    decoder_linear: int  # weights of `linear_modules` (biases are in `other`)
    experts: int  # fused MoE expert weights; 0 for dense
    other: int  # norms, biases, MoE router, lm_head bias


@dataclass(frozen=True)
class Layout:
    """The modules of a model as transformers builds it (from a descriptor)."""

    linears: tuple  # Linear rows
    expert_tensors: tuple  # ParameterTarget rows of the fused expert tensors
    targets: tuple  # ParameterTarget rows peft's LoRA 'all-linear' adds (experts, router)
    counts: ParamCounts
    attention_implementations: tuple
    expert_class: str = ""
    model_class: str = ""
    source: str = ""  # "catalog" | "derived" (where the descriptor came from)


def from_descriptor(desc: dict, where: str) -> Architecture:
    """The architecture a descriptor (runtime/describe.py) records, with its modules as built."""
    try:
        fields = dict(desc["architecture"])
        types = desc["attention"].get("layer_types") or {}
        softmax = sum(n for kind, n in types.items() if kind != "linear_attention")
        if types and softmax != fields["num_layers"]:
            fields.setdefault("attention_layers", softmax)
        linears = tuple(Linear(r["name"], r["in_features"], r["out_features"], r["count"], r["bias"], r["group"],
                               r["module_class"], r["quantizable"]) for r in desc["linears"])
        experts = []
        for t in desc["expert_tensors"]:
            e, a, b = t["shape"]
            # [E, out, in] (Mixtral, Qwen3-MoE) or [E, in, out] (gpt-oss): LoRA sizes are symmetric
            experts.append(ParameterTarget(t["name"], t["path"], e, b, a, t["count"]))
        lora = desc.get("lora_all_linear") or {}
        by_path = {t.path: t for t in experts}
        targets = []
        for t in lora.get("target_parameters", ()):
            if t["path"] in by_path:
                base = by_path[t["path"]]
                targets.append(ParameterTarget(base.name, base.path, base.num_experts, base.in_features,
                                               base.out_features, base.count, t.get("rank_multiplier", 1)))
            else:  # the router: [E, H], one per MoE layer
                targets.append(ParameterTarget(t["name"], t["path"], 1, fields["hidden_size"], fields["num_experts"],
                                               experts[0].count if experts else fields["num_layers"]))
        counts = ParamCounts(**desc["params"])
        expert_cls = next((t.get("module_class", "") for t in desc["expert_tensors"]), "")
        layout = Layout(linears, tuple(experts), tuple(targets), counts,
                        tuple(desc["attention"]["implementations"]), expert_cls,
                        desc.get("model_class", ""), desc.get("source", "catalog"))
        return Architecture(**fields, layout=layout)
    except (KeyError, TypeError, ValueError) as exc:
        raise _unsupported(where, f"the architecture descriptor is malformed ({type(exc).__name__}: {exc}); "
                                  f"derive it again") from None


# --------------------------------------------------------------------- parsing


def _unsupported(where: str, message: str) -> UnsupportedArchitecture:
    return UnsupportedArchitecture(f"{where}: {message}")


def _lookup(cfg: dict, key: str):
    if cfg.get(key) is not None:
        return cfg[key]
    for alias in _KEY_ALIASES.get(key, ()):
        if cfg.get(alias) is not None:
            return cfg[alias]
    return None


MAX_DIMENSION = 2**24  # no config field of a real model (vocabulary, widths, layers, heads) comes near it


def _int(cfg: dict, key: str, where: str, family: str, default=None) -> int:
    value = _lookup(cfg, key)
    if value is None:
        if default is not None:
            return default
        raise _unsupported(
            where,
            f"field '{key}' is missing, and a '{family}' model needs it; "
            "use the model's original config.json (or add the field to it)",
        )
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _unsupported(where, f"field '{key}' must be a positive integer, got {value!r}; fix config.json")
    if value > MAX_DIMENSION:
        raise _unsupported(where, f"field '{key}' is {value:,}, beyond any real model (at most {MAX_DIMENSION:,}); "
                                  f"fix config.json")
    return value


def _bool(cfg: dict, key: str, where: str, default: bool) -> bool:
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _unsupported(where, f"field '{key}' must be true or false, got {value!r}; fix config.json")
    return value


def _float(cfg: dict, key: str, where: str) -> float | None:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _unsupported(where, f"field '{key}' must be a number, got {value!r}; fix config.json")
    return float(value)


def _rope(cfg: dict, where: str) -> tuple[float | None, str | None]:
    params = cfg.get("rope_parameters")
    scaling = cfg.get("rope_scaling")
    for key, value in (("rope_parameters", params), ("rope_scaling", scaling)):
        if value is not None and not isinstance(value, dict):
            raise _unsupported(where, f"field '{key}' must be an object, got {value!r}; fix config.json")
    params, scaling = params or {}, scaling or {}
    theta = cfg.get("rope_theta", params.get("rope_theta", 10000.0))
    kind = scaling.get("rope_type") or scaling.get("type") or params.get("rope_type") or "default"
    if isinstance(theta, bool) or not isinstance(theta, (int, float)):
        raise _unsupported(where, f"field 'rope_theta' must be a number, got {theta!r}; fix config.json")
    return float(theta), str(kind)


def from_config(cfg: dict, where: str) -> Architecture:
    """Normalise a config.json dict; `where` names the file in error messages."""
    if not isinstance(cfg, dict):
        raise _unsupported(where, "config.json must hold a JSON object")
    family = cfg.get("model_type")
    if not family:
        raise _unsupported(
            where,
            "field 'model_type' is missing; use the model's original config.json "
            f"(supported model_type values: {', '.join(SUPPORTED_FAMILIES)})",
        )
    if family not in _FAMILIES:
        raise _unsupported(
            where,
            f"model_type '{family}' is not supported; supported: {', '.join(SUPPORTED_FAMILIES)}. "
            "Pick a catalog model or a model of one of these families",
        )
    d = _FAMILIES[family]

    def need(key: str, default=None) -> int:
        return _int(cfg, key, where, family, default)

    hidden = need("hidden_size")
    layers = need("num_hidden_layers")
    heads = need("num_attention_heads")
    vocab = need("vocab_size")
    inter = need("ffn_hidden_size", 4 * hidden) if family == "falcon" else need("intermediate_size")
    rope_theta, rope_type = _rope(cfg, where)

    # head_dim: Gemma defaults to 256; falcon, gpt_neox and stablelm always derive it.
    if family in ("gemma", "gemma2"):
        head_dim = need("head_dim", 256)
    elif family in ("falcon", "gpt_neox", "stablelm") or cfg.get("head_dim") is None:
        if hidden % heads:
            raise _unsupported(
                where, f"hidden_size {hidden} is not divisible by num_attention_heads {heads}; fix config.json"
            )
        head_dim = hidden // heads
    else:
        head_dim = need("head_dim")

    parallel = False
    new_arch = False
    if family == "falcon":
        new_arch = _bool(cfg, "new_decoder_architecture", where, False)
        if new_arch:
            kv = need("num_kv_heads", heads)
        elif _bool(cfg, "multi_query", where, True):
            kv = 1
        else:
            kv = heads
        parallel = new_arch or _bool(cfg, "parallel_attn", where, True)
        if not _bool(cfg, "parallel_attn", where, True):
            norms = 2
        else:
            n_ln = cfg.get("num_ln_in_parallel_attn")
            if n_ln is None and new_arch:
                n_ln = 2
            norms = 2 if n_ln == 2 else 1
        if _bool(cfg, "alibi", where, False):
            rope_theta, rope_type = None, None
    elif family == "gpt_neox":
        kv = heads
        norms = 2
    else:
        kv = need("num_key_value_heads", heads)
        norms = 4 if family == "gemma2" else 2
    if heads % kv:
        raise _unsupported(
            where, f"num_attention_heads {heads} is not a multiple of the key/value heads {kv}; fix config.json"
        )

    bias = dict(qkv=False, out=False, mlp=False)
    if family == "llama":
        attn_bias = _bool(cfg, "attention_bias", where, False)
        bias = dict(qkv=attn_bias, out=attn_bias, mlp=_bool(cfg, "mlp_bias", where, False))
    elif family == "gemma" or family == "gemma2":
        attn_bias = _bool(cfg, "attention_bias", where, False)
        bias = dict(qkv=attn_bias, out=attn_bias, mlp=False)
    elif family == "qwen2":
        bias = dict(qkv=True, out=False, mlp=False)
    elif family == "phi":
        bias = dict(qkv=True, out=True, mlp=True)
    elif family == "falcon":
        b = _bool(cfg, "bias", where, False)
        bias = dict(qkv=b, out=b, mlp=b)
    elif family == "gpt_neox":
        attn_bias = _bool(cfg, "attention_bias", where, True)
        bias = dict(qkv=attn_bias, out=attn_bias, mlp=True)
    elif family == "stablelm":
        bias = dict(qkv=_bool(cfg, "use_qkv_bias", where, False), out=False, mlp=False)

    if family in ("gpt_neox", "stablelm"):
        parallel = _bool(cfg, "use_parallel_residual", where, family == "gpt_neox")
        if family == "stablelm" and parallel:
            norms = 1
    elif family == "phi":
        parallel, norms = True, 1

    experts, per_token = 1, 1
    if family == "mixtral":
        experts = need("num_local_experts", 8)
        per_token = need("num_experts_per_tok", 2)
        if per_token > experts:
            raise _unsupported(
                where, f"num_experts_per_tok {per_token} exceeds num_local_experts {experts}; fix config.json"
            )

    window = cfg.get("sliding_window", d["window"])
    if family == "qwen2" and not _bool(cfg, "use_sliding_window", where, False):
        window = None
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise _unsupported(where, f"field 'sliding_window' must be an integer or null, got {window!r}; fix config.json")

    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or cfg.get("activation") or d["act"]

    return Architecture(
        family=family,
        hidden_size=hidden,
        num_layers=layers,
        intermediate_size=inter,
        vocab_size=vocab,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        tied_embeddings=_bool(cfg, "tie_word_embeddings", where, d["tie"]),
        gated_mlp=family not in ("phi", "falcon", "gpt_neox"),
        num_experts=experts,
        experts_per_token=per_token,
        attention_bias=bias["qkv"],
        attention_out_bias=bias["out"],
        mlp_bias=bias["mlp"],
        fused_qkv=family in ("phi3", "falcon", "gpt_neox"),
        fused_gate_up=family == "phi3",
        parallel_block=parallel,
        norm="layer" if family in ("phi", "falcon", "gpt_neox", "stablelm") else "rms",
        norms_per_layer=norms,
        qk_norm=family in ("phi", "stablelm") and _bool(cfg, "qk_layernorm", where, False),
        lm_head_bias=family == "phi",
        max_position_embeddings=need("max_position_embeddings", d["max_pos"]),
        sliding_window=window,
        rope_theta=rope_theta,
        rope_type=rope_type,
        hidden_act=str(act),
        attn_logit_softcapping=_float(cfg, "attn_logit_softcapping", where) if family == "gemma2" else None,
        final_logit_softcapping=_float(cfg, "final_logit_softcapping", where) if family == "gemma2" else None,
        sdpa_materializes_scores=family == "falcon" and not new_arch and kv < heads,
    )


# -------------------------------------------------------------------- counting


_NAMES = {  # family: (fused qkv, attention out, mlp up, mlp down); phi: (out, up, down)
    "falcon": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "phi": ("dense", "fc1", "fc2"),
}


def linear_modules(arch: Architecture) -> list[Linear]:
    """The decoder-layer nn.Linear modules, one row per name: LoRA 'all-linear' targets these
    (plus `parameter_targets` for MoE)."""
    if arch.layout is not None:
        return list(arch.layout.linears)
    h, n, a = arch.hidden_size, arch.num_layers, arch
    o_in = h if a.family == "stablelm" else a.q_size
    rows: list[Linear] = []
    if a.fused_qkv:
        qkv_name, out_name = ("qkv_proj", "o_proj") if a.family == "phi3" else _NAMES[a.family][:2]
        rows.append(Linear(qkv_name, h, a.q_size + 2 * a.kv_size, n, a.attention_bias))
    else:
        out_name = "dense" if a.family == "phi" else "o_proj"
        rows += [
            Linear("q_proj", h, a.q_size, n, a.attention_bias),
            Linear("k_proj", h, a.kv_size, n, a.attention_bias),
            Linear("v_proj", h, a.kv_size, n, a.attention_bias),
        ]
    cls = _LINEAR_CLASS.get(a.family, "Linear")
    rows.append(Linear(out_name, o_in, h, n, a.attention_out_bias))
    if a.is_moe:
        return rows  # experts are fused parameters, see expert_parameters()
    i = a.intermediate_size
    if a.fused_gate_up:
        rows.append(Linear("gate_up_proj", h, 2 * i, n, a.mlp_bias, "mlp"))
        rows.append(Linear("down_proj", i, h, n, a.mlp_bias, "mlp"))
    elif a.gated_mlp:
        rows += [
            Linear("gate_proj", h, i, n, a.mlp_bias, "mlp"),
            Linear("up_proj", h, i, n, a.mlp_bias, "mlp"),
            Linear("down_proj", i, h, n, a.mlp_bias, "mlp"),
        ]
    else:
        up, down = _NAMES[a.family][-2:]
        rows.append(Linear(up, h, i, n, a.mlp_bias, "mlp"))
        rows.append(Linear(down, i, h, n, a.mlp_bias, "mlp"))
    if cls != "Linear":
        rows = [Linear(r.name, r.in_features, r.out_features, r.count, r.bias, r.group, cls, False) for r in rows]
    return rows


def expert_parameters(arch: Architecture) -> list[ParameterTarget]:
    """Fused MoE expert weights (transformers 5 Mixtral); empty for dense models."""
    if arch.layout is not None:
        return list(arch.layout.expert_tensors)
    if not arch.is_moe:
        return []
    h, i, e, n = arch.hidden_size, arch.intermediate_size, arch.num_experts, arch.num_layers
    return [
        ParameterTarget("gate_up_proj", "mlp.experts.gate_up_proj", e, h, 2 * i, n, lora_rank_multiplier=2),
        ParameterTarget("down_proj", "mlp.experts.down_proj", e, i, h, n),
    ]


def parameter_targets(arch: Architecture) -> list[ParameterTarget]:
    """What LoRA 'all-linear' adds through PEFT `target_parameters`: experts and router (MoE only)."""
    if arch.layout is not None:
        return list(arch.layout.targets)
    if not arch.is_moe:
        return []
    router = ParameterTarget("gate.weight", "mlp.gate.weight", 1, arch.hidden_size, arch.num_experts, arch.num_layers)
    return [*expert_parameters(arch), router]


def parameter_count(arch: Architecture) -> ParamCounts:
    """Exact parameter count of the transformers model the architecture describes."""
    if arch.layout is not None:
        return arch.layout.counts
    h, n = arch.hidden_size, arch.num_layers
    linears = linear_modules(arch)
    embedding = arch.vocab_size * h
    lm_head = 0 if arch.tied_embeddings else arch.vocab_size * h
    decoder_linear = sum(lin.weight_params for lin in linears)
    experts = sum(p.params for p in expert_parameters(arch))

    norm_size = 2 * h if arch.norm == "layer" else h  # LayerNorm has weight and bias
    per_layer = arch.norms_per_layer * norm_size
    if arch.qk_norm and arch.family == "phi":  # two LayerNorms over hidden/heads
        per_layer += 2 * 2 * (h // arch.num_heads)
    elif arch.qk_norm:  # stablelm: one weight-only LayerNorm per head
        per_layer += (arch.num_heads + arch.num_kv_heads) * arch.head_dim
    if arch.is_moe:
        per_layer += arch.num_experts * h  # router
    other = n * per_layer + norm_size + sum(lin.bias_params for lin in linears)
    if arch.lm_head_bias:
        other += arch.vocab_size

    total = embedding + lm_head + decoder_linear + experts + other
    return ParamCounts(total, embedding, lm_head, decoder_linear, experts, other)


def linear_class(arch: Architecture) -> str:
    """The transformers class of the family's decoder-layer linear modules."""
    if arch.layout is not None:
        return next((m.module_class for m in arch.layout.linears), "Linear")
    return _LINEAR_CLASS.get(arch.family, "Linear")


def quantizable_linears(arch: Architecture) -> list[Linear]:
    """The decoder-layer linears bitsandbytes replaces when the base is loaded in 4 or 8 bits:
    those that are exactly nn.Linear (none in Falcon; never the MoE expert tensors)."""
    return [m for m in linear_modules(arch) if m.quantizable]


def expert_class(arch: Architecture) -> str:
    """The module holding the fused expert tensors ("" for dense models)."""
    if arch.layout is not None and arch.layout.expert_class:
        return arch.layout.expert_class
    return "MixtralExperts" if arch.is_moe else ""


def attention_implementations(arch: Architecture) -> tuple[str, ...]:
    if arch.layout is not None:
        return arch.layout.attention_implementations
    return _ATTENTION[arch.family]
