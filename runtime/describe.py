"""Describe a model from its config.json with transformers itself: build it on the meta device (no
memory, no weights), walk its modules, and record what the planner needs as plain data (a
"descriptor", read by compiler/descriptor.py without torch).

    python -m recipe_ft.runtime.describe --catalog          # rewrite compiler/data/descriptors.json
    python -m recipe_ft.runtime.describe path/to/config.json  # print one descriptor

What is recorded, all read off the built model (the config only where the model keeps no trace of it:
head counts, window, softcapping, rope, activation, experts per token):
- every linear module in the decoder layers: name, shape, bias, class, and whether transformers'
  bitsandbytes integration would replace it (its type is exactly nn.Linear);
- fused 3-D expert tensors (MoE), the router, shared experts; which weights LoRA 'all-linear'
  reaches (peft's own choice, from `get_peft_model` on the meta model: target_modules and
  target_parameters, with the rank multiplier it applies);
- embeddings (tied or not), norms (kind, per layer, q/k norms), attention (GQA / MQA / MLA, sliding
  window, softcapping, sinks, the implementations the model class declares), MLP kind and activation;
- parameter counts by part.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

from ..compiler.descriptor import DESCRIPTOR_VERSION, DESCRIPTORS_PATH, config_hash
from ..schemas.errors import UnsupportedArchitecture

_FUSED_QKV = {"qkv_proj", "query_key_value", "Wqkv", "c_attn", "qkv"}
_PARALLEL_FAMILIES = {"phi", "cohere", "cohere2", "gptj"}


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__.split("+")[0],
            "peft": peft.__version__}


def build_meta_model(cfg: dict, where: str):
    """The transformers causal LM of `cfg`, on the meta device; UnsupportedArchitecture when the
    installed transformers cannot build one."""
    import torch
    import transformers

    cfg = copy.deepcopy(cfg)  # config classes edit nested dicts (rope_scaling) in place
    family = cfg.pop("model_type", None)
    if not family:
        raise UnsupportedArchitecture(f"{where}: field 'model_type' is missing; use the model's original config.json")
    for key in ("auto_map", "quantization_config", "torch_dtype", "dtype"):
        cfg.pop(key, None)
    version = transformers.__version__
    try:
        config = transformers.AutoConfig.for_model(family, **cfg)
    except (ValueError, KeyError) as exc:
        raise UnsupportedArchitecture(
            f"{where}: model_type '{family}' is not known to the installed transformers {version} "
            f"({str(exc).splitlines()[0].split(' Should contain')[0][:160]}); upgrade transformers, "
            f"or pick a catalog model") from None
    except Exception as exc:  # noqa: BLE001 - a config class rejecting the values
        raise UnsupportedArchitecture(
            f"{where}: transformers {version} cannot read this '{family}' config: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}; fix config.json") from None
    from .text_model import causal_lm_config

    config = causal_lm_config(config)  # a multimodal checkpoint's text model, as `recipe run` loads it
    try:
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise UnsupportedArchitecture(
            f"{where}: model_type '{family}' has no causal language model in transformers {version} "
            f"(the planner trains decoder-only causal LMs): {str(exc).splitlines()[0][:160]}") from None
    except Exception as exc:  # noqa: BLE001 - a model class failing on these values
        raise UnsupportedArchitecture(
            f"{where}: transformers {version} cannot build a '{family}' model from this config: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    return model, config


def _decoder_layers(model):
    """The ModuleList of decoder layers: the one holding most parameters."""
    import torch

    best, best_n = None, -1
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            n = sum(p.numel() for p in module.parameters())
            if n > best_n:
                best, best_n = (name, module), n
    if best is None:
        raise UnsupportedArchitecture("the model has no list of decoder layers")
    return best


_OUTPUT_SIDE = {"o_proj", "dense", "out_proj", "c_proj", "down_proj", "fc2", "dense_4h_to_h", "w2"}


def _forward_order(rows: list[dict]) -> list[dict]:
    """Linears in the order a layer runs them: attention inputs, attention output, MLP inputs, MLP output
    (modules are registered in any order: Phi-3 registers o_proj before qkv_proj)."""
    return sorted(rows, key=lambda r: (r["group"] == "mlp", r["name"] in _OUTPUT_SIDE))


def _group(path: str) -> str:
    return "mlp" if any(k in path for k in ("mlp", "feed_forward", "experts", "ffn", "moe")) else "attention"


def _is_norm(module) -> bool:
    return "norm" in type(module).__name__.lower()


def _rope(config) -> tuple[float | None, str | None]:
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, dict) and "rope_theta" not in params and "rope_type" not in params:
        params = params.get("full_attention") or next(iter(params.values()), {}) if params else {}
    if not isinstance(params, dict):
        params = {}
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    kind = params.get("rope_type") or "default"
    if theta is None:
        return None, None
    return float(theta), str(kind)


def describe(cfg: dict, where: str = "config.json", with_peft: bool = True) -> dict:
    """The descriptor of the model `cfg` describes (see the module docstring); UnsupportedArchitecture,
    naming the model_type, when the model transformers builds is not one this walk understands."""
    started = time.perf_counter()
    model, config = build_meta_model(cfg, where)
    try:
        desc = _describe(model, config, cfg, with_peft)
    except UnsupportedArchitecture:
        raise
    except Exception as exc:  # noqa: BLE001 - a layout this walk does not know
        raise UnsupportedArchitecture(
            f"{where}: cannot describe model_type '{config.model_type}' ({type(model).__name__}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}; pick a catalog model or another family") from None
    desc["derived_seconds"] = round(time.perf_counter() - started, 3)
    return desc


def _describe(model, top_config, cfg: dict, with_peft: bool) -> dict:
    import torch

    config_key = config_hash(cfg)
    config = top_config.get_text_config() if hasattr(top_config, "get_text_config") else top_config
    family = top_config.model_type
    layers_name, layers = _decoder_layers(model)
    n = len(layers)
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    vocab, hidden = tuple(embedding.weight.shape)
    tied = head is not None and head.weight is embedding.weight
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())

    # --- linears and 3-D (fused expert) tensors, grouped over layers
    linears: dict[tuple, dict] = {}
    tensors: dict[tuple, dict] = {}
    for layer in layers:
        for path, module in layer.named_modules():
            if isinstance(module, torch.nn.Linear):
                key = (path.rsplit(".", 1)[-1], module.in_features, module.out_features, module.bias is not None,
                       type(module).__name__)
                row = linears.setdefault(key, dict(
                    name=key[0], path=path, in_features=key[1], out_features=key[2], count=0, bias=key[3],
                    group=_group(path), module_class=key[4], quantizable=type(module) is torch.nn.Linear))
                row["count"] += 1
        for path, param in layer.named_parameters():
            owner = layer.get_submodule(path.rsplit(".", 1)[0]) if "." in path else layer
            # fused expert tensors: 3-D parameters of a model's own module (not a convolution's kernel,
            # such as the short conv of Qwen3.5's linear-attention layers)
            if param.dim() == 3 and not isinstance(owner, torch.nn.modules.conv._ConvNd):
                row = tensors.setdefault((path, tuple(param.shape)), dict(
                    name=path.rsplit(".", 1)[-1], path=path, shape=list(param.shape), count=0,
                    module_class=type(owner).__name__))
                row["count"] += 1
    experts = list(tensors.values())
    num_experts = experts[0]["shape"][0] if experts else 1
    first = layers[0]
    router = None
    for path, module in first.named_modules():
        w = getattr(module, "weight", None)
        if (experts and not isinstance(module, torch.nn.Linear) and isinstance(w, torch.nn.Parameter)
                and w.dim() == 2 and w.shape[0] == num_experts and w.shape[1] == hidden):
            router = dict(path=f"{path}.weight", module_class=type(module).__name__,
                          bias=getattr(module, "bias", None) is not None)
    per_token = 1
    if experts:
        per_token = next((getattr(config, k) for k in ("num_experts_per_tok", "experts_per_token",
                                                        "num_experts_per_token", "moe_topk")
                          if isinstance(getattr(config, k, None), int)), 1)
    shared = sorted({r["path"].split(".shared_expert", 1)[0] + ".shared_expert"
                     for r in linears.values() if "shared_expert" in r["path"]})

    decoder_linear = sum(r["in_features"] * r["out_features"] * r["count"] for r in linears.values())
    expert_params = sum(r["shape"][0] * r["shape"][1] * r["shape"][2] * r["count"] for r in experts)
    emb = vocab * hidden
    lm_head = 0 if tied or head is None else head.weight.numel()
    counts = dict(total=total, embedding=emb, lm_head=lm_head, decoder_linear=decoder_linear,
                  experts=expert_params, other=total - emb - lm_head - decoder_linear - expert_params)

    # --- norms, attention, mlp
    norms = [(p, m) for p, m in first.named_modules() if p and "." not in p and _is_norm(m)]
    # q/k norms, in whichever layers have them (Qwen3.5's first layer is a gated delta net, whose output
    # norm linear_attn.norm is no q/k norm; its q_norm and k_norm are in the full-attention layers)
    nested = {p: m for layer in layers for p, m in layer.named_modules() if "." in p and _is_norm(m)}
    attn_norms = [(p, m) for p, m in nested.items() if p.rsplit(".", 1)[-1][:1] in ("q", "k")]
    norm_kind = "layer" if norms and getattr(norms[0][1], "bias", None) is not None else "rms"
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    if family == "falcon":
        kv = (getattr(config, "num_kv_heads", None) or heads) if config.new_decoder_architecture else \
            (1 if config.multi_query else heads)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    mla = getattr(config, "kv_lora_rank", None) is not None
    kind = "mla" if mla else ("mha" if kv == heads else "mqa" if kv == 1 else "gqa")
    names = {r["name"] for r in linears.values()}
    q_row = next((r for r in linears.values() if r["name"] in _FUSED_QKV | {"q_proj"}), None)
    o_row = next((r for r in linears.values() if r["name"] in ("o_proj", "dense", "out_proj", "c_proj")
                  and r["group"] == "attention"), None)
    mlp_rows = [r for r in linears.values() if r["group"] == "mlp" and "shared_expert" not in r["path"]]
    down = next((r for r in mlp_rows if r["out_features"] == hidden and r["in_features"] != hidden), None)
    if experts:  # the expert down projection: [E, hidden, I] (Mixtral) or [E, I, hidden] (gpt-oss)
        down_t = next((r for r in experts if r["name"] in ("down_proj", "w2")), experts[-1])
        dims = down_t["shape"][1:]
        inter = dims[0] if dims[1] == hidden else dims[1]
    elif down is not None:
        inter = down["in_features"]
    else:
        inter = getattr(config, "intermediate_size", None) or 4 * hidden
    gated = any(("gate" in r["name"] or r["name"] in ("w1", "w3")) for r in mlp_rows) or \
        any("gate" in r["name"] for r in experts)
    layer_types = list(getattr(config, "layer_types", None) or [])
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) is False or (layer_types and "sliding_attention" not in layer_types):
        window = None
    act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None) or \
        getattr(config, "activation", None) or "silu"
    parallel = bool(getattr(config, "use_parallel_residual", False)) or family in _PARALLEL_FAMILIES
    if family == "falcon":
        parallel = bool(config.new_decoder_architecture or config.parallel_attn)
    rope_theta, rope_type = _rope(config)
    if getattr(config, "alibi", False):
        rope_theta, rope_type = None, None
    implementations = ["eager"]
    if getattr(model, "_supports_sdpa", False):
        implementations.append("sdpa")
    if getattr(model, "_supports_flash_attn", False):
        implementations.append("flash_attention_2")
    if getattr(model, "_supports_flex_attn", False):
        implementations.append("flex_attention")
    sinks = any(p.endswith("sinks") for p, _ in first.named_parameters())

    architecture = dict(
        family=family, hidden_size=hidden, num_layers=n, intermediate_size=int(inter), vocab_size=vocab,
        num_heads=heads, num_kv_heads=kv, head_dim=head_dim, tied_embeddings=tied, gated_mlp=gated,
        num_experts=num_experts, experts_per_token=per_token,
        attention_bias=bool(q_row and q_row["bias"]), attention_out_bias=bool(o_row and o_row["bias"]),
        mlp_bias=any(r["bias"] for r in mlp_rows), fused_qkv=bool(names & _FUSED_QKV),
        fused_gate_up="gate_up_proj" in names, parallel_block=parallel, norm=norm_kind,
        norms_per_layer=len(norms), qk_norm=bool(attn_norms),
        lm_head_bias=head is not None and getattr(head, "bias", None) is not None,
        max_position_embeddings=int(getattr(config, "max_position_embeddings", 0) or 0),
        sliding_window=window, rope_theta=rope_theta, rope_type=rope_type, hidden_act=str(act),
        attn_logit_softcapping=getattr(config, "attn_logit_softcapping", None),
        final_logit_softcapping=getattr(config, "final_logit_softcapping", None),
        sdpa_materializes_scores=family == "falcon" and not config.new_decoder_architecture and kv < heads,
    )
    descriptor = dict(
        descriptor_version=DESCRIPTOR_VERSION,
        model_type=family,
        model_class=type(model).__name__,
        config_sha256=config_key,
        architecture=architecture,
        linears=_forward_order(list(linears.values())),
        expert_tensors=experts,
        router=router,
        shared_experts=shared,
        embedding=dict(vocab_size=vocab, hidden_size=hidden, tied=tied, lm_head_bias=architecture["lm_head_bias"]),
        norms=dict(kind=norm_kind, per_layer=[p for p, _ in norms], qk=[p for p, _ in attn_norms],
                   module_class=type(norms[0][1]).__name__ if norms else None),
        attention=dict(kind=kind, implementations=implementations, sliding_window=window,
                       layer_types={t: layer_types.count(t) for t in dict.fromkeys(layer_types)},
                       attn_logit_softcapping=architecture["attn_logit_softcapping"],
                       final_logit_softcapping=architecture["final_logit_softcapping"], sinks=sinks),
        mlp=dict(kind="moe" if experts else ("gated" if gated else "plain"), activation=str(act),
                 experts=num_experts, experts_per_token=per_token,
                 expert_intermediate_size=int(inter) if experts else None),
        params=counts,
        layers_path=layers_name,
    )
    if with_peft:
        descriptor["lora_all_linear"] = _lora_targets(model, layers_name, experts, router)
    return descriptor


def _lora_targets(model, layers_name: str, experts: list[dict], router: dict | None) -> dict:
    """What peft's LoRA target_modules='all-linear' adapts on this model (at rank 1; LoRA is linear in
    the rank): the module names, and for each target parameter (peft's ParamWrapper) the rank
    multiplier it applies (2 on a fused gate_up_proj)."""
    import peft

    lora = peft.get_peft_model(model, peft.LoraConfig(r=1, lora_alpha=1, target_modules="all-linear"))
    config = lora.peft_config["default"]
    multipliers: dict[str, int] = {}
    for module in lora.modules():
        name = getattr(module, "parameter_name", None)
        if name is None or not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        param = getattr(module.get_base_layer(), name, None)
        rows = module.lora_A["default"].weight.shape[0]
        experts_here = param.shape[0] if param is not None and param.dim() == 3 else 1
        multipliers.setdefault(name, max(1, rows // experts_here))
    wanted = {name.rsplit(".", 1)[-1]: name for name in config.target_parameters or ()}
    params = [dict(name=wanted[e["name"]], path=e["path"], rank_multiplier=multipliers.get(e["name"], 1))
              for e in experts if e["name"] in wanted]  # the expert tensors, then the router
    for name in config.target_parameters or ():
        if router is not None and router["path"].endswith(name):
            params.append(dict(name=name, path=router["path"], rank_multiplier=1))
    return {"target_modules": sorted({t.rsplit(".", 1)[-1] for t in (config.target_modules or ())}),
            "target_parameters": params}


def write_catalog(path: Path = DESCRIPTORS_PATH) -> dict:
    """Derive every catalog model's descriptor (one per distinct config) into `path`."""
    from ..compiler.models import catalog_configs

    versions = _versions()
    out: dict[str, dict] = {}
    for name, cfg in catalog_configs():
        key = config_hash(cfg)
        if key in out:
            out[key]["models"].append(name)
            continue
        desc = describe(cfg, where=f"catalog entry '{name}'")
        desc.pop("derived_seconds", None)
        desc["models"] = [name]
        out[key] = desc
        print(f"{name:48s} {desc['params']['total']:>16,d}", file=sys.stderr, flush=True)
    data = {"note": "Derived by `python -m recipe_ft.runtime.describe --catalog` from compiler/data/models.json: "
                    "each config built with transformers on the meta device. Do not edit by hand.",
            "descriptor_version": DESCRIPTOR_VERSION, "derived": datetime.date.today().isoformat(),
            "versions": versions, "descriptors": out}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Derive architecture descriptors with transformers (meta device).")
    parser.add_argument("config", nargs="?", help="a config.json (or its directory) to describe")
    parser.add_argument("--catalog", action="store_true", help=f"rewrite {DESCRIPTORS_PATH}")
    args = parser.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.catalog:
        data = write_catalog()
        print(f"wrote {len(data['descriptors'])} descriptors to {DESCRIPTORS_PATH}")
        return 0
    if not args.config:
        parser.error("give a config.json or --catalog")
    path = Path(args.config)
    path = path / "config.json" if path.is_dir() else path
    try:
        desc = describe(json.loads(path.read_text(encoding="utf-8")), where=str(path))
    except UnsupportedArchitecture as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(desc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
