"""A device-control policy backed by any Hugging Face VLM: observations in, AutoUI strings out.

:class:`VLMPolicy` renders each observation with the shared prompt (:mod:`digiq_trl.prompts`),
generates in left-padded batches and returns the decoded answers. ``act`` is the simulator's
policy interface (greedy by default, for evaluation and data collection); ``sample`` draws ``N``
candidates per state in one batched decode, for Best-of-N policy extraction. For the Qwen-VL
families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) both run the library's own decoding loop: each prompt
(screenshot included) runs once and its ``N`` samples share its KV cache, new tokens are written
into room reserved in the cache, and finished answers leave the batch. Other families use
``generate``, and so does a Qwen-VL model where the installed transformers lacks an internal the
loop reads (``cache_utils.DynamicLayer``, the backbone's ``rope_deltas``, ...): the loop is checked
against ``generate`` (same greedy answers) for every family it serves.

Answers are returned as generated (stripped): they may not parse as actions. The device treats an
unparsable action as a wasted step and the Best-of-N trainer gives it advantage 0, so the policy
never raises on them.

Example:
    >>> from digiq_trl.models.policy import VLMPolicy
    >>> from digiq_trl.models.tiny import tiny_qwen2_vl
    >>> from PIL import Image
    >>> policy = VLMPolicy(*tiny_qwen2_vl(), max_new_tokens=8)
    >>> obs = {"image": Image.new("RGB", (112, 224)), "goal": "Open Settings", "history": ""}
    >>> len(policy.act([obs, obs], [{}, {}]))
    2
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import DynamicCache, PreTrainedModel, ProcessorMixin, cache_utils

from ..prompts import render_prompt
from .vlm import choose_prefix_sharing, unwrap_peft


logger = logging.getLogger(__name__)

_DynamicLayer = getattr(cache_utils, "DynamicLayer", object)
"""The cache layer :class:`_RoomyLayer` extends; ``object`` in a transformers without it, where
prefix sharing is off (:func:`~digiq_trl.models.vlm.prefix_sharing_unavailable`) and this module
still imports."""


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
        batch_size: most sequences decoded at once (states for ``act``, states x samples for
            ``sample``); bounds memory.
        prefix_sharing: decode with the library's loop, each prompt run once and its KV cache shared
            by its samples. ``None`` (default) turns it on for
            :data:`~digiq_trl.models.vlm.PREFIX_SHARING_MODEL_TYPES` where the installed transformers
            has the internals the loop reads (else ``generate``, with a warning); ``False`` uses
            ``generate(num_return_sequences=N)``, which repeats each prompt.
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
        self.prefix_sharing = choose_prefix_sharing(model, prefix_sharing, "generate")

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
        self, observations: Sequence[Mapping[str, Any]], num_candidates: int, temperature: float = 1.0
    ) -> list[list[str]]:
        """``num_candidates`` sampled action strings per observation (Best-of-N's N; one decode per
        chunk of states). Each chunk holds ``max(1, batch_size // num_candidates)`` states; its
        prompts are encoded once.
        """
        if num_candidates < 1 or temperature <= 0:
            raise ValueError(f"need num_candidates >= 1 and temperature > 0, got {num_candidates}, {temperature}")
        states_per_call = max(1, self.batch_size // num_candidates)
        samples: list[list[str]] = []
        for start in range(0, len(observations), states_per_call):
            chunk = observations[start : start + states_per_call]
            samples.extend(self._generate(chunk, num_candidates, temperature))
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
        self, observations: Sequence[Mapping[str, Any]], num_candidates: int, temperature: float
    ) -> list[list[str]]:
        """``num_candidates`` decoded answers per observation, from one batched decode."""
        if not observations:
            return []
        inputs = self._encode(observations)
        with _eval_mode(self.model):
            if self.prefix_sharing:
                rows = self._decode_shared(inputs, num_candidates, temperature)
            else:
                rows = self._decode_with_generate(inputs, num_candidates, temperature)
        texts = [t.strip() for t in self.processor.tokenizer.batch_decode(rows, skip_special_tokens=True)]
        return [texts[i : i + num_candidates] for i in range(0, len(texts), num_candidates)]

    def _decode_with_generate(
        self, inputs: dict[str, torch.Tensor], num_candidates: int, temperature: float
    ) -> list[list[int]]:
        """New token ids per sequence from ``generate`` (any family; each prompt repeated N times)."""
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:  # plain temperature sampling, whatever top-k/top-p the checkpoint ships
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        output = self.model.generate(
            **inputs, num_return_sequences=num_candidates, max_new_tokens=self.max_new_tokens,
            pad_token_id=self.processor.tokenizer.pad_token_id, **sampling,
        )
        return output[:, inputs["input_ids"].shape[1] :].tolist()

    def _decode_shared(
        self, inputs: dict[str, torch.Tensor], num_candidates: int, temperature: float
    ) -> list[list[int]]:
        """New token ids per sequence, decoded with the prompts' KV cache shared by their samples.

        Each prompt (screenshot included) runs once; its cache and next-token logits are copied to
        its ``num_candidates`` rows; then one token per step is fed for every unfinished row, with the
        M-RoPE text positions continuing each prompt's own (``rope_deltas``). A row that emits a stop
        token is done; once done rows are a quarter of the batch they leave it (their cache rows are
        dropped), so short answers stop costing compute without copying the cache at every stop.

        Where the prompt forward leaves no ``rope_deltas`` (one per prompt) to continue from, a
        transformers changed what the loop reads: the policy warns, turns prefix sharing off and
        decodes with ``generate``.
        """
        base = unwrap_peft(self.model)
        cache = _RoomyCache(base.config.get_text_config(), room=self.max_new_tokens)
        logits = self.model(**inputs, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        rope_deltas = getattr(base.model, "rope_deltas", None)
        if not isinstance(rope_deltas, torch.Tensor) or rope_deltas.numel() != logits.shape[0]:
            logger.warning("the prompt forward of %s left no rope_deltas per prompt (transformers internals "
                           "changed?): decoding with generate from now on", type(base).__name__)
            self.prefix_sharing = False
            return self._decode_with_generate(inputs, num_candidates, temperature)
        mask = inputs["attention_mask"]
        next_position = rope_deltas.reshape(-1) + mask.sum(dim=1)
        base.model.rope_deltas = None  # the next prompt computes its own
        if num_candidates > 1:
            cache.batch_repeat_interleave(num_candidates)
            logits, mask, next_position = (t.repeat_interleave(num_candidates, dim=0) for t in (logits, mask, next_position))
        stop = torch.tensor(sorted(_stop_token_ids(self.model, self.processor)), device=logits.device)
        rows = torch.arange(logits.shape[0], device=logits.device)  # the answer each batch row writes
        going = torch.ones_like(rows, dtype=torch.bool)
        tokens: list[list[int]] = [[] for _ in range(logits.shape[0])]
        for step in range(self.max_new_tokens):
            chosen = _next_tokens(logits, temperature)
            for row, token in zip(rows[going].tolist(), chosen[going].tolist()):
                tokens[row].append(token)
            going &= ~torch.isin(chosen, stop)
            if step == self.max_new_tokens - 1 or not going.any():
                break
            if (~going).sum() * 4 >= going.numel():  # drop finished rows once they are a quarter
                keep = going.nonzero().reshape(-1)
                cache.batch_select_indices(keep)
                rows, chosen, mask, next_position = rows[keep], chosen[keep], mask[keep], next_position[keep]
                going = going[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            positions = (next_position + step).reshape(1, -1, 1).expand(3, -1, -1)
            logits = self.model(
                input_ids=chosen[:, None], attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
            ).logits[:, -1]
        return tokens


def _next_tokens(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Greedy (``temperature`` 0) or plain temperature-sampled next tokens, one per row.

    Sampling uses the Gumbel-max trick, ``argmax(logits / T + Gumbel noise)``: exactly a draw from
    ``softmax(logits / T)``, and several times faster than ``torch.multinomial`` on a CPU.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    noise = -torch.log(-torch.log(torch.rand_like(logits, dtype=torch.float32).clamp_(min=1e-20)))
    return (logits.float() / temperature + noise).argmax(dim=-1)


class _RoomyLayer(_DynamicLayer):
    """A cache layer that writes new tokens into room reserved after the prompt.

    ``DynamicLayer`` concatenates every decoded token onto the cache, which copies the whole cache
    at each step (about a third of the decoding time of the tiny actor on a CPU); this one grows
    only when its room runs out.
    """

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key_states.shape[-2]
        if not self.is_initialized or end > self._keys.shape[-2]:
            self._keys = self._grown(getattr(self, "_keys", None), key_states, end)
            self._values = self._grown(getattr(self, "_values", None), value_states, end)
            self.device, self.is_initialized = key_states.device, True
        self._keys[..., self.length : end, :] = key_states
        self._values[..., self.length : end, :] = value_states
        self.length = end
        return self._views()

    def _grown(self, old: torch.Tensor | None, new: torch.Tensor, end: int) -> torch.Tensor:
        grown = new.new_empty((*new.shape[:-2], end + self.room, new.shape[-1]))
        if old is not None and self.length:
            grown[..., : self.length, :] = old[..., : self.length, :]
        return grown

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("the decoding cache is never cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self._views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._views()


class _RoomyCache(DynamicCache):
    """A ``DynamicCache`` whose full-attention layers are :class:`_RoomyLayer` with ``room`` tokens."""

    def __init__(self, config: Any, room: int) -> None:
        super().__init__(config=config)
        self.layers = [_RoomyLayer(room) if type(layer) is _DynamicLayer else layer for layer in self.layers]


def _stop_token_ids(model: torch.nn.Module, processor: Any) -> set[int]:
    """Token ids that end an answer: the generation config's EOS ids, else the tokenizer's."""
    eos = unwrap_peft(model).generation_config.eos_token_id
    if eos is None:
        eos = processor.tokenizer.eos_token_id
    ids = {eos} if isinstance(eos, int) else set(eos or [])
    if not ids:
        raise ValueError("the model's generation config and tokenizer name no EOS token to stop answers at")
    return ids


