"""A device-control policy backed by any Hugging Face VLM: observations in, AutoUI strings out.

:class:`VLMPolicy` renders each observation with the shared prompt (:mod:`digiq_trl.prompts`),
generates in left-padded batches and returns the decoded answers. ``act`` is the simulator's
policy interface (greedy by default, for evaluation and data collection); ``sample`` draws ``N``
candidates per state in one ``generate`` call, for Best-of-N policy extraction. For Qwen2-VL
family models ``sample`` runs each prompt (screenshot included) once and lets its ``N`` samples
share the prompt's KV cache: on a CPU the prompt is two thirds of the cost of sampling 16
candidates with the tiny actor, so repeating it ``N`` times was most of the actor stage.

Answers are returned as generated (stripped): they may not parse as actions. The device treats an
unparsable action as a wasted step and the Best-of-N trainer gives it advantage 0, so the policy
never raises on them.

Example:
    >>> from digiq_trl.models.policy import VLMPolicy
    >>> from digiq_trl.testing import tiny_qwen2_vl
    >>> from PIL import Image
    >>> policy = VLMPolicy(*tiny_qwen2_vl(), max_new_tokens=8)
    >>> obs = {"image": Image.new("RGB", (112, 224)), "goal": "Open Settings", "history": ""}
    >>> len(policy.act([obs, obs], [{}, {}]))
    2
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache, PreTrainedModel, ProcessorMixin

from ..prompts import render_prompt
from .features import PREFIX_SHARING_MODEL_TYPES, _unwrap


def _as_rgb(image: Any) -> Image.Image:
    """A PIL RGB image from a PIL image or an ``(H, W, C)`` uint8 array."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "RGB" else image.convert("RGB")


@contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration, restoring the caller's train/eval mode."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


class VLMPolicy:
    """Acts with a VLM (plain or peft-wrapped) on observations ``{"image", "goal", "history"}``.

    Args:
        model: a model ``AutoModelForImageTextToText`` loads (or a ``peft.PeftModel`` of one).
        processor: its processor; must have a chat template that renders
            :func:`digiq_trl.prompts.build_messages`.
        temperature: 0 decodes greedily (the default); above 0 ``act`` samples at this temperature.
        max_new_tokens: answer length limit; an AutoUI string is ~25 tokens with the tiny tokenizer
            and ~60 with Qwen2-VL's.
        batch_size: most sequences per ``generate`` call (states for ``act``, states x samples for
            ``sample``); bounds memory.
        prefix_sharing: ``sample`` runs each prompt once and expands its KV cache to the samples.
            ``None`` (default) turns it on for :data:`~digiq_trl.models.features.PREFIX_SHARING_MODEL_TYPES`;
            ``False`` expands the prompts instead (``generate(num_return_sequences=N)``).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        temperature: float = 0.0,
        max_new_tokens: int = 64,
        batch_size: int = 64,
        prefix_sharing: bool | None = None,
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
        self.model = model
        self.processor = processor
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        model_type = _unwrap(model).config.model_type
        if prefix_sharing and model_type not in PREFIX_SHARING_MODEL_TYPES:
            raise ValueError(f"prefix sharing is wired for {PREFIX_SHARING_MODEL_TYPES}, not {model_type!r}")
        self.prefix_sharing = model_type in PREFIX_SHARING_MODEL_TYPES if prefix_sharing is None else prefix_sharing

    def act(
        self, observations: Sequence[Mapping[str, Any]], infos: Sequence[Mapping[str, Any]] | None = None
    ) -> list[str]:
        """One action string per observation (``infos`` is accepted for the policy protocol, unused)."""
        answers: list[str] = []
        for start in range(0, len(observations), self.batch_size):
            chunk = observations[start : start + self.batch_size]
            answers.extend(a[0] for a in self._generate(chunk, 1, self.temperature))
        return answers

    def sample(
        self, observations: Sequence[Mapping[str, Any]], num_samples: int, temperature: float = 1.0
    ) -> list[list[str]]:
        """``num_samples`` sampled action strings per observation (one ``generate`` per chunk of states).

        Each chunk holds ``max(1, batch_size // num_samples)`` states; its prompts are encoded once
        and ``generate(num_return_sequences=num_samples, do_sample=True)`` expands them.
        """
        if num_samples < 1 or temperature <= 0:
            raise ValueError(f"need num_samples >= 1 and temperature > 0, got {num_samples}, {temperature}")
        states_per_call = max(1, self.batch_size // num_samples)
        samples: list[list[str]] = []
        for start in range(0, len(observations), states_per_call):
            chunk = observations[start : start + states_per_call]
            samples.extend(self._generate(chunk, num_samples, temperature))
        return samples

    def _encode(self, observations: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Left-padded model inputs (with ``mm_token_type_ids`` where the processor makes them)."""
        prompts = [render_prompt(self.processor, obs["goal"], obs["history"]) for obs in observations]
        images = [_as_rgb(obs["image"]) for obs in observations]
        inputs = self.processor(
            images=images, text=prompts, padding=True, padding_side="left", return_tensors="pt"
        )
        return {k: v.to(self.model.device) for k, v in inputs.items()}

    def _generate(
        self, observations: Sequence[Mapping[str, Any]], num_samples: int, temperature: float
    ) -> list[list[str]]:
        """``num_samples`` decoded answers per observation, from one ``generate`` call."""
        if not observations:
            return []
        inputs = self._encode(observations)
        tokenizer = self.processor.tokenizer
        sampling = {"do_sample": False}
        if temperature > 0:  # plain temperature sampling, whatever top-k/top-p the checkpoint ships
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        with _eval_mode(self.model):
            shared = self.prefix_sharing and num_samples > 1
            if shared:
                expanded = self._prefill_shared(inputs, num_samples)
            else:
                expanded = {**inputs, "num_return_sequences": num_samples}
            output = self.model.generate(
                **expanded, max_new_tokens=self.max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
            )
            if shared:  # drop the expanded M-RoPE offsets; the next prompt recomputes them
                _unwrap(self.model).model.rope_deltas = None
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return [texts[i : i + num_samples] for i in range(0, len(texts), num_samples)]

    def _prefill_shared(self, inputs: dict[str, torch.Tensor], num_samples: int) -> dict[str, Any]:
        """Run the prompts but their last token once, into a KV cache copied ``num_samples`` times.

        Returns ``generate`` arguments for the expanded batch: every row's full prompt ids (only the
        last token is uncached, so the screenshot is never encoded again) and the cache. Qwen2-VL
        continues from a cache with its stored M-RoPE offsets (``rope_deltas``), expanded likewise.
        """
        base = _unwrap(self.model)
        cache = DynamicCache(config=base.config.get_text_config())
        prefix = {k: v[:, :-1] if k in _PER_TOKEN else v for k, v in inputs.items()}
        self.model(**prefix, cache=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(num_samples)
        base.model.rope_deltas = base.model.rope_deltas.repeat_interleave(num_samples, dim=0)
        expanded = {k: v.repeat_interleave(num_samples, dim=0) for k, v in inputs.items() if k in _PER_TOKEN}
        return {**expanded, "cache": cache}


_PER_TOKEN = ("input_ids", "attention_mask", "mm_token_type_ids")
"""Processor outputs with one entry per prompt token (the rest describe the images)."""
