"""``digiq-trl train --dry_run``: what a run would do and need, without loading anything heavy.

For each stage: its optimizer steps (or rows to process), its batch and an estimate of its peak
GPU memory per process, from the model's shape (its ``config.json``, or the published architecture
of :mod:`digiq_trl.models.published` when that cannot be read offline) and the formulas of
``docs/real-data-gpu.md``: bf16 or fp32 weights, LoRA state, the activations autograd keeps (with
or without activation checkpointing), answer-only logits, and the KV caches of feature extraction
and sampling. It also checks what a run would otherwise find late: the data (a local dataset's
splits and rows, a Hub id that can be read) and the Hub prefix of ``push_to_hub``.

The estimates are a planning aid, not a measurement (``benchmarks/real_size.py`` measures on a GPU).

Example:
    >>> from digiq_trl.dry_run import estimate_stages
    >>> from digiq_trl.pipeline_config import DigiQPipelineConfig
    >>> [row.stage for row in estimate_stages(DigiQPipelineConfig())][:2]  # doctest: +SKIP
    ['base_actor', 'data']
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from .pipeline_config import DigiQPipelineConfig


GIB = 1024**3
AITW_SCREEN = (2400, 1080)
"""Height and width of an AitW screenshot (the size assumed when the data cannot be looked at)."""
TEXT_TOKENS = 160
"""Tokens of a Digi-Q prompt besides the image: system prompt, goal, history and an action."""
ANSWER_TOKENS = 60
"""Tokens of an AutoUI action (the answer the training stages score)."""
NEW_TOKENS = 128
"""Tokens a sampled candidate may have (``max_completion_length``)."""
OVERHEAD_GIB = 1.0
"""CUDA context and allocator slack."""


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: parameters, widths, layers, KV heads, vocabulary."""

    parameters: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    kv_width: int
    vocab_size: int

    @property
    def lora_parameters(self) -> int:
        """Parameters of the default LoRA (r=16 on every attention and MLP projection of the language model)."""
        from .trainers.lora import LORA_R

        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_width
        per_layer = (h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h)
        return LORA_R * per_layer * self.num_layers

    def activation_bytes(self) -> int:
        """Bytes autograd keeps per token per decoder layer for LoRA training (measured: 10 I + 17 h)."""
        return 10 * self.intermediate_size + 17 * self.hidden_size


@dataclass(frozen=True)
class StageEstimate:
    """One stage of a dry run."""

    stage: str
    work: str
    batch: str
    peak_gib: float | None

    def line(self) -> str:
        peak = "n/a" if self.peak_gib is None else f"{self.peak_gib:7.1f} GiB"
        return f"{self.stage:<15} {self.work:<34} {self.batch:<28} {peak}"


def model_shape(reference: str) -> ModelShape:
    """The shape of the model at ``reference`` (a path or Hub id), built on the ``meta`` device from
    its published architecture when it is one of :data:`~digiq_trl.models.published.PUBLISHED_ARCHITECTURES`
    (nothing to download), else from its ``config.json``."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from .models.pretrained import resolve_pretrained
    from .models.published import PUBLISHED_ARCHITECTURES

    if reference in PUBLISHED_ARCHITECTURES:
        config = PUBLISHED_ARCHITECTURES[reference].config()
    else:
        config = AutoConfig.from_pretrained(resolve_pretrained(reference))
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    text = config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return ModelShape(
        parameters=sum(p.numel() for p in model.parameters()), hidden_size=text.hidden_size,
        intermediate_size=text.intermediate_size, num_layers=text.num_hidden_layers,
        kv_width=getattr(text, "num_key_value_heads", text.num_attention_heads) * head_dim,
        vocab_size=text.vocab_size,
    )


def image_tokens(height: int, width: int, max_pixels: int | None, min_pixels: int | None) -> int:
    """Image tokens of one screenshot through a Qwen2-VL-family processor (one per 28x28 pixels)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    bounds = {"max_pixels": max_pixels or 12_845_056, "min_pixels": min_pixels or 3136}
    resized_height, resized_width = smart_resize(height, width, factor=28, **bounds)
    return resized_height * resized_width // (28 * 28)


def training_gib(shape: ModelShape, batch: int, tokens: int, checkpointing: bool, weight_bytes: int,
                 lora: bool = True) -> float:
    """Peak memory of a training step: weights, trainable state, activations and answer-only logits."""
    trainable = shape.lora_parameters if lora else shape.parameters
    fixed = weight_bytes * shape.parameters + 16 * trainable
    per_layer = batch * tokens * shape.activation_bytes()
    if checkpointing:
        activations = batch * tokens * shape.num_layers * 2 * shape.hidden_size + per_layer
    else:
        activations = per_layer * shape.num_layers
    logits = batch * ANSWER_TOKENS * shape.vocab_size * 14
    return (fixed + activations + logits) / GIB + OVERHEAD_GIB


def features_gib(shape: ModelShape, candidates: int, tokens: int, weight_bytes: int) -> float:
    """Peak memory of feature extraction: the prompt's KV cache copied for every candidate."""
    kv = candidates * tokens * shape.num_layers * 2 * shape.kv_width * weight_bytes
    return (weight_bytes * shape.parameters + kv) / GIB + 2 * OVERHEAD_GIB


def sampling_gib(shape: ModelShape, states: int, candidates: int, tokens: int, weight_bytes: int) -> float:
    """Peak memory of sampling ``candidates`` actions for ``states`` states at once."""
    kv = states * candidates * (tokens + NEW_TOKENS) * shape.num_layers * 2 * shape.kv_width * weight_bytes
    return (weight_bytes * shape.parameters + kv * 17 / 16) / GIB + OVERHEAD_GIB


def data_summary(config: DigiQPipelineConfig) -> tuple[str, int | None, tuple[int, int]]:
    """What the data stage would read: a description, the number of rows (None when unknown) and
    the screenshots' height and width (the first image of a local dataset)."""
    import inspect

    from .envs.phone import PhoneEnv

    if config.dataset is None:
        defaults = inspect.signature(PhoneEnv).parameters
        screen = (defaults["height"].default, defaults["width"].default)
        return f"{config.collect_episodes} episodes collected in {config.env_id}", None, screen
    if not Path(config.dataset).exists():
        return f"Hub dataset {config.dataset}", None, AITW_SCREEN
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(config.dataset)
    splits = loaded if isinstance(loaded, DatasetDict) else {"train": loaded}
    first = next(iter(splits.values()))
    size = first[0]["image"].size if len(first) and "image" in first.column_names else AITW_SCREEN[::-1]
    rows = sum(len(split) for split in splits.values())
    return f"{config.dataset} ({', '.join(f'{n}: {len(s)}' for n, s in splits.items())} rows)", rows, size[::-1]


def estimate_stages(config: DigiQPipelineConfig) -> list[StageEstimate]:
    """Each stage's work, batch and estimated peak memory per process (see the module docstring)."""
    from .trainers.actor_config import BestOfNActorConfig

    described, rows, (height, width) = data_summary(config)
    backbone = config.base_actor or "tiny Qwen2-VL (bc_* options)"
    shape = model_shape(config.base_actor) if config.base_actor else None
    tokens = image_tokens(height, width, config.max_pixels, config.min_pixels) + TEXT_TOKENS
    weight_bytes = 2 if config.bf16 else 4
    checkpointing = config.activation_checkpointing

    def train(batch: int) -> float | None:
        return None if shape is None else training_gib(shape, batch, tokens, checkpointing, weight_bytes)

    runs = len(config.actor_seeds) * 2
    states = next(f.default for f in fields(BestOfNActorConfig) if f.name == "candidate_batch_size")
    estimates = [
        StageEstimate("base_actor", f"{config.bc_steps} steps of {backbone}" if config.bc_steps else "kept as it is",
                      f"{config.bc_batch_size} x {config.bc_gradient_accumulation_steps}",
                      train(config.bc_batch_size) if config.bc_steps else None),
        StageEstimate("data", described, f"{config.rollout_batch_size} phones" if config.dataset is None else "-",
                      None if shape is None or config.dataset is not None else
                      sampling_gib(shape, config.rollout_batch_size, 1, tokens, weight_bytes)),
        StageEstimate("representation", f"{config.representation_steps} steps",
                      f"{config.representation_batch_size} x {config.representation_gradient_accumulation_steps}",
                      train(config.representation_batch_size)),
        StageEstimate("features", f"{rows if rows is not None else '?'} rows, {tokens} tokens each",
                      f"{config.ranking_alternatives + 1} actions per state",
                      None if shape is None else features_gib(shape, config.ranking_alternatives + 1, tokens,
                                                              weight_bytes)),
        StageEstimate("critic", f"{config.critic_steps} steps",
                      f"{config.critic_batch_size} x {config.critic_gradient_accumulation_steps}", 1.0),
        StageEstimate("actor sampling", f"{config.num_candidates} candidates per state",
                      f"{states} states x {config.num_candidates}",
                      None if shape is None else sampling_gib(shape, states, config.num_candidates, tokens,
                                                              weight_bytes)),
        StageEstimate("actor training", f"{runs} x {config.actor_steps} steps",
                      f"{config.actor_batch_size} x {config.actor_gradient_accumulation_steps}",
                      train(config.actor_batch_size)),
        StageEstimate("evaluate", f"{config.evaluation}", f"{config.rollout_batch_size} states",
                      None if shape is None else sampling_gib(shape, config.rollout_batch_size, 1, tokens,
                                                              weight_bytes)),
    ]
    return estimates


def dry_run(config: DigiQPipelineConfig) -> dict[str, Any]:
    """Check the data and the Hub (:func:`~digiq_trl.pipeline_checks.check_hub_access`), print each
    stage's work, batch and estimated peak memory, then what failed; return them (``peak_gib``: the
    largest estimate, ``problems``: the failed checks)."""
    from .pipeline_checks import InvalidOptionError, check_hub_access

    problems = []
    try:
        check_hub_access(config)
    except InvalidOptionError as error:
        problems.append(str(error))
    rows = estimate_stages(config)
    print(f"{'stage':<15} {'work':<34} {'batch':<28} estimated peak per process")
    for row in rows:
        print(row.line())
    peaks = [row.peak_gib for row in rows if row.peak_gib is not None]
    peak = max(peaks) if peaks else None
    print(_gpu_verdict(peak))
    print("\n".join(f"check failed: {problem}" for problem in problems) or "checks passed: options, data, Hub")
    return {"stages": [row.__dict__ for row in rows], "peak_gib": peak, "problems": problems}


def _gpu_verdict(peak: float | None) -> str:
    """The largest estimate against this machine's GPU, where it has one."""
    import torch

    if peak is None:
        return "no estimate (the tiny model built in the run)"
    if not torch.cuda.is_available():
        return f"largest estimate {peak:.1f} GiB; no GPU here: compare it with your GPU's memory"
    total = torch.cuda.get_device_properties(0).total_memory / GIB
    verdict = "fits" if peak <= total else "does NOT fit"
    return f"largest estimate {peak:.1f} GiB {verdict} in {torch.cuda.get_device_name(0)} ({total:.0f} GiB)"

