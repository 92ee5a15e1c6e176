"""The actor's batches and loss: prompt and answer tokens left-padded, NLL of the answer tokens only.

:class:`BestOfNCollator` builds the batches of :class:`~digiq_trl.trainers.actor_trainer.BestOfNActorTrainer`;
:func:`weighted_nll` is its loss and :func:`answer_span` the logit columns that loss needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..prompts import answer_token_ids, render_prompt


@dataclass
class BestOfNCollator:
    """Batches ``{"image", "goal", "history", "target_action", "target_weight"}`` rows for weighted NLL.

    Each row is the prompt (image and text, through the processor) followed by the answer tokens
    of :func:`~digiq_trl.prompts.answer_token_ids`, left-padded so that every answer ends at the
    last column: the loss then needs the logits of the last few columns only
    (:func:`answer_span`), whatever the prompt and image lengths. ``labels`` are -100 everywhere but
    on the answer tokens, so prompt and image tokens never enter the loss. Per-token processor
    outputs (e.g. Qwen2-VL's ``mm_token_type_ids``) are extended with zeros over the answer; image
    tensors pass through.
    """

    processor: Any

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [render_prompt(self.processor, ex["goal"], ex["history"]) for ex in examples]
        answers = [answer_token_ids(self.processor, ex["goal"], ex["history"], ex["target_action"]) for ex in examples]
        encoded = self.processor(
            text=prompts, images=[_as_rgb(ex["image"]) for ex in examples], padding=True, padding_side="right", return_tensors="pt"
        )
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        width = max(p + len(a) for p, a in zip(prompt_lengths, answers))
        batch = {key: value for key, value in encoded.items() if not _is_per_token(value, encoded)}
        batch.update(self._sequences(encoded, prompt_lengths, answers, width))
        batch["weights"] = torch.tensor([float(ex["target_weight"]) for ex in examples])
        return batch

    def _sequences(
        self, encoded: dict[str, torch.Tensor], prompt_lengths: list[int], answers: list[list[int]], width: int
    ) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids``, ``attention_mask``, ``labels`` and other per-token tensors."""
        pad_id = self.processor.tokenizer.pad_token_id or 0
        rows = len(answers)
        out = {
            "input_ids": torch.full((rows, width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((rows, width), dtype=torch.long),
            "labels": torch.full((rows, width), -100, dtype=torch.long),
        }
        extra = {k: torch.zeros((rows, width), dtype=v.dtype) for k, v in encoded.items()
                 if _is_per_token(v, encoded) and k not in out}
        for row, (length, answer) in enumerate(zip(prompt_lengths, answers)):
            start = width - length - len(answer)
            answer_start = width - len(answer)
            ids = torch.tensor(answer, dtype=torch.long)
            out["input_ids"][row, start:answer_start] = encoded["input_ids"][row, :length]
            out["input_ids"][row, answer_start:] = ids
            out["attention_mask"][row, start:] = 1
            out["labels"][row, answer_start:] = ids
            for key, tensor in extra.items():
                tensor[row, start:answer_start] = encoded[key][row, :length]
        return {**out, **extra}


def _as_rgb(image: Any) -> Any:
    """RGB, as the policy feeds images at acting time (screenshots may be RGBA or grayscale)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def _is_per_token(value: Any, encoded: dict[str, torch.Tensor]) -> bool:
    """Whether a processor output has one entry per prompt token (``[B, L]`` like ``input_ids``)."""
    return isinstance(value, torch.Tensor) and value.shape == encoded["input_ids"].shape


def answer_span(labels: torch.Tensor) -> int:
    """How many last columns hold every labelled token, plus the column whose logits predict the first.

    With the collator's left padding the answers end at the last column, so the logits of these
    columns are all the loss needs (``logits_to_keep``).
    """
    labelled = (labels != -100).any(dim=0).nonzero()
    if labelled.numel() == 0:
        return 1
    return labels.shape[1] - int(labelled[0]) + 1


def weighted_nll(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                 probability_clamp: Sequence[float] | None = None) -> torch.Tensor:
    """``sum_i w_i * sum_t NLL_it / sum_i T_i``: token NLL of the labelled tokens, weighted per row.

    Causal shift: the logits at position t predict the token at t + 1. Normalizing by the token
    count (not the weight sum) keeps ``pg`` weights signed and ``awr`` weights relative. With
    ``probability_clamp = (low, high)`` each token's probability is clamped to that range before the
    log, as the reference does with ``(0.001, 0.99)``: tokens already above ``high`` (or hopeless,
    below ``low``) contribute no gradient.
    """
    targets = labels[:, 1:]
    mask = targets != -100
    nll = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none"
    )
    if probability_clamp is not None:
        low, high = probability_clamp
        nll = -torch.log(torch.exp(-nll).clamp(low, high))
    per_row = (nll * mask).sum(dim=1)
    return (weights.to(per_row) * per_row).sum() / mask.sum().clamp(min=1)
