"""The critic's batches: cached feature columns stacked into tensors, plus the texts a critic with a
text encoder reads (goal, previous action, action, and the alternative actions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..models.critic import DigiQCritic
from ..models.critic_text import action_text, critic_text_inputs, num_segments
from .critic_config import DigiQCriticConfig


Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass
class CriticTexts:
    """How a critic with a text encoder gets its texts: the encoder's tokenizer, the critic's text
    layout and length, and the column of alternative actions (their Q texts)."""

    tokenizer: Any
    layout: str
    max_length: int
    alt_actions_column: str | None = None
    match: bool = False

    def batch(self, examples: Sequence[Mapping[str, Any]], alternatives: bool) -> dict[str, Any]:
        """``q_text`` (s, a), ``v_text`` (s), ``next_v_text`` (s': the action is its previous one) and,
        with ``alternatives``, ``alt_q_text`` ``(B, K, S, L)`` padded like ``alt_q_features``."""
        goals = [str(ex["goal"]) for ex in examples]
        histories = [str(ex["history"]) for ex in examples]
        actions = [str(ex["action"]) for ex in examples]
        texts = {
            "q_text": critic_text_inputs(self.tokenizer, goals, histories, actions, self.layout, self.max_length, self.match),
            "v_text": critic_text_inputs(self.tokenizer, goals, histories, None, self.layout, self.max_length, self.match),
            "next_v_text": critic_text_inputs(self.tokenizer, goals, [action_text(a) for a in actions], None,
                                              self.layout, self.max_length, self.match),
        }
        if alternatives:
            texts["alt_q_text"] = self._alternatives(examples, goals, histories)
        return texts

    def _alternatives(self, examples: Sequence[Mapping[str, Any]], goals: list[str],
                      histories: list[str]) -> dict[str, torch.Tensor]:
        lists = [[str(a) for a in ex[self.alt_actions_column]] for ex in examples]
        most = max(len(alts) for alts in lists)
        if most == 0:
            empty = torch.zeros(len(examples), 0, num_segments(self.layout, with_action=True), 1, dtype=torch.long)
            pair = torch.zeros(len(examples), 0, 2, 1, dtype=torch.long)
            return {"input_ids": empty, "attention_mask": empty.clone(),
                    **({"match_ids": pair, "match_mask": pair.clone()} if self.match else {})}
        padded = [alts + [alts[-1] if alts else ""] * (most - len(alts)) for alts in lists]
        flat = critic_text_inputs(self.tokenizer, [g for g in goals for _ in range(most)],
                                  [h for h in histories for _ in range(most)],
                                  [a for alts in padded for a in alts], self.layout, self.max_length, self.match)
        return {key: value.view(len(examples), most, *value.shape[1:]) for key, value in flat.items()}


@dataclass
class DigiQCriticCollator:
    """Stacks feature columns into float32 tensors under the batch keys the trainer expects.

    Output keys: ``q_features`` ``(B, D_q)``, ``v_features`` ``(B, D_v)``, ``next_v_features``,
    ``reward``, ``done``, ``mc_return``, ``trajectory_reward``, ``step_id`` (those present), and,
    when the alternatives column is present, ``alt_q_features`` ``(B, K, D_q)`` zero-padded to the
    largest K with ``alt_mask`` ``(B, K)``. With ``texts`` (a critic with a text encoder), the token
    tensors of :meth:`CriticTexts.batch` too.
    """

    columns: Mapping[str, str]
    """Batch key -> dataset column, for the feature columns."""
    texts: CriticTexts | None = None

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        batch: dict[str, torch.Tensor] = {}
        present = examples[0].keys()
        for key, column in self.columns.items():
            if column not in present:
                continue
            if key == "alt_q_features":
                batch["alt_q_features"], batch["alt_mask"] = _pad_alternatives(
                    [example[column] for example in examples]
                )
            else:
                batch[key] = _stack([example[column] for example in examples])
        for key, dtype in (("reward", torch.float32), ("mc_return", torch.float32),
                           ("trajectory_reward", torch.float32), ("done", torch.bool),
                           ("step_id", torch.long)):
            if key in present:
                batch[key] = torch.as_tensor(np.asarray([example[key] for example in examples]), dtype=dtype)
        if self.texts is not None:
            batch.update(self.texts.batch(examples, alternatives="alt_q_features" in batch))
        return batch


def _stack(rows: Sequence[Any]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(row, dtype=np.float32) for row in rows]))


def _pad_alternatives(rows: Sequence[Any]) -> Pair:
    arrays = [np.asarray(row, dtype=np.float32) for row in rows]
    width = max((array.shape[-1] for array in arrays if array.size), default=1)
    arrays = [array.reshape(-1, width) for array in arrays]
    most = max(len(array) for array in arrays)
    features = torch.zeros(len(arrays), most, width)
    mask = torch.zeros(len(arrays), most, dtype=torch.bool)
    for index, array in enumerate(arrays):
        features[index, : len(array)] = torch.from_numpy(array)
        mask[index, : len(array)] = True
    return features, mask


TEXT_COLUMNS = ("goal", "history", "action")
"""Dataset columns a critic with a text encoder reads (besides the alternatives column)."""


def critic_texts(model: DigiQCritic, tokenizer: Any, args: DigiQCriticConfig) -> CriticTexts | None:
    """The collator's text settings for a critic that reads texts; None for one that does not."""
    if not model.config.has_text:
        return None
    if tokenizer is None:
        raise ValueError("this critic reads texts through a text encoder: pass its tokenizer as processing_class")
    return CriticTexts(tokenizer, model.config.text_layout, model.config.text_max_length, args.alt_actions_column,
                       model.config.text_match)
