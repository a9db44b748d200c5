"""The causal LM that `recipe run` trains for a checkpoint, and how its weights are loaded.

Most checkpoints: what transformers' AutoModelForCausalLM builds. A multimodal checkpoint (a config with a
`vision_config` and a `text_config`) for which AutoModelForCausalLM would build the whole vision-language
model (Gemma 3 4B-27B: Gemma3ForConditionalGeneration, vision tower and projector included) is loaded as
its text model alone: the causal LM class of its `text_config` (Gemma3ForCausalLM), with the checkpoint's
own language-model weights renamed onto it (`key_mapping`, transformers' documented way to load a
checkpoint whose weight names differ) and the vision weights left on disk. Where transformers already
maps the multimodal type to a text-only causal LM (Qwen3.5: Qwen3_5ForCausalLM) it is left to do so.
The planner describes the same model (runtime/describe.py and runtime/trace.py build `causal_lm_config`).
"""

from __future__ import annotations

from ..schemas.errors import RecipeError

# Where vision-language checkpoints keep their language model: the legacy llava layout (Gemma 3,
# Mistral 3, PaliGemma as published: language_model.model.*, language_model.lm_head.*) and transformers
# 5's own (model.language_model.*, lm_head.*), renamed onto the text causal LM's names (model.*, lm_head.*)
KEY_MAPPING = {r"^language_model\.model\.": "model.", r"^language_model\.lm_head\.": "lm_head.",
               r"^model\.language_model\.": "model."}


def _causal_lm_class(config):
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except (KeyError, ValueError):
        return None


def causal_lm_config(config):
    """The config of the model `recipe run` trains: `config` itself, or, for a multimodal config whose
    AutoModelForCausalLM class is not a text-only causal LM, its text config (when transformers builds
    a causal LM from that)."""
    if getattr(config, "vision_config", None) is None or getattr(config, "text_config", None) is None:
        return config
    whole = _causal_lm_class(config)
    if whole is not None and whole.__name__.endswith("ForCausalLM"):
        return config  # transformers loads the text model itself (Qwen3.5)
    text = config.get_text_config()
    if text is config:
        return config
    cls = _causal_lm_class(text)
    return text if cls is not None and cls.__name__.endswith("ForCausalLM") else config


def load(model_dir: str, **kwargs):
    """AutoModelForCausalLM.from_pretrained(model_dir, **kwargs), except that a multimodal checkpoint's text
    model is loaded alone (module docstring); its weights must all come from the checkpoint (a RecipeError
    names those that would be left randomly initialised)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if kwargs.get("trust_remote_code"):
        return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    config = AutoConfig.from_pretrained(model_dir, revision=kwargs.get("revision"))
    text = causal_lm_config(config)
    if text is config:
        return AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if kwargs.get("attn_implementation"):
        text._attn_implementation = kwargs["attn_implementation"]
    cls = _causal_lm_class(text)
    import logging

    report = logging.getLogger("transformers.modeling_utils")  # its load report lists every vision weight as
    level = report.level  # unexpected: they are left on disk on purpose (the plan says so)
    report.setLevel(logging.ERROR)
    try:
        model, info = cls.from_pretrained(model_dir, config=text, key_mapping=KEY_MAPPING, output_loading_info=True,
                                          **kwargs)
    finally:
        report.setLevel(level)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise RecipeError(
            f"{model_dir}: a multimodal '{config.model_type}' checkpoint, loaded as its text model "
            f"({cls.__name__}): {len(missing)} of its weights were not found in the checkpoint (first: "
            f"{missing[0]}); its language model is stored under names this loader does not know "
            f"({', '.join(KEY_MAPPING)}). Point model.base at a text-only checkpoint, or convert this one")
    # save under the text model's own names (transformers would otherwise write the renamed weights back
    # under the checkpoint's names, which the text config's class does not read)
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [c for c in conversions
                                     if not set(getattr(c, "source_patterns", ())) & set(KEY_MAPPING)] or None
    return model
