"""The one set of LoRA defaults of the trainers that adapt a VLM (actor and representation).

Both stages adapt the same kind of model for the same reason (a small update of the language
model on one task), so they share rank, scaling, dropout and targets. The targets are the attention
and MLP projections *of the language model*: the vision tower is never adapted, whatever its
modules are called (LLaVA's CLIP tower also has ``q_proj``/``k_proj``/``v_proj``, and Qwen2.5-VL's
vision MLP has ``gate_proj``/``up_proj``/``down_proj``; in transformers 5 the text decoder of a VLM
lives under ``language_model``).

Example:
    >>> from digiq_trl.trainers.lora import default_lora_config
    >>> config = default_lora_config()
    >>> (config.r, config.lora_alpha, config.lora_dropout)
    (16, 32, 0.0)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from peft import LoraConfig


LORA_R = 16
"""Rank of the LoRA update."""

LORA_ALPHA = 32
"""LoRA scaling numerator: the update is scaled by ``alpha / r`` (2 with the defaults)."""

LORA_DROPOUT = 0.0
"""Dropout on the LoRA input: none, as in peft's own default."""

LORA_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Names of the language model's projections that get adapters."""


def language_model_targets(module_names: Sequence[str] = LORA_TARGET_MODULES) -> str:
    """A peft ``target_modules`` regex matching modules named ``module_names`` inside the language model only."""
    if not module_names:
        raise ValueError("LoRA needs at least one target module name")
    names = "|".join(re.escape(name) for name in module_names)
    return rf".*language_model.*\.({names})"


def default_lora_config(
    r: int = LORA_R,
    lora_alpha: int = LORA_ALPHA,
    lora_dropout: float = LORA_DROPOUT,
    module_names: Sequence[str] = LORA_TARGET_MODULES,
) -> LoraConfig:
    """The LoRA of a VLM's language model, with the shared defaults (each overridable)."""
    return LoraConfig(
        r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=language_model_targets(module_names), task_type="CAUSAL_LM",
    )
