"""Scoring actions with a trained critic: its frozen feature VLM, its text tokenizer, its heads.

A :class:`~digiq_trl.models.critic.DigiQCritic` reads VLM features and, when it has a text encoder,
tokenized texts (:mod:`digiq_trl.models.critic_text`). :class:`CriticScorer` holds the three pieces
together, so Best-of-N extraction, the diagnosis, the viewer and the run report all score actions
the same way, with the advantage the critic was trained for.

Example:
    >>> from digiq_trl.models.scoring import CriticScorer
    >>> scorer = CriticScorer.load("outputs/digiq-default/critic")  # doctest: +SKIP
    >>> scores = scorer.score([screenshot], [goal], [history], [[action_a, action_b]])  # doctest: +SKIP
    >>> scores[0].advantage  # doctest: +SKIP
    array([ 0.03, -0.12])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..targets import advantage
from .critic import DigiQCritic, Text
from .critic_text import critic_text_inputs


@dataclass(frozen=True)
class Scores:
    """A state's candidates scored: ``q`` = max(Q1, Q2), ``v`` = max(V1, V2) (one value for the
    state) and ``advantage`` (:meth:`DigiQCritic.advantage`), one entry per candidate."""

    q: np.ndarray
    v: float
    advantage: np.ndarray


def load_critic_tokenizer(critic: DigiQCritic) -> Any:
    """The tokenizer saved with a critic that reads texts (None for one that does not).

    Raises:
        ValueError: the critic reads texts but was not loaded from a folder or repository holding
            its tokenizer.
    """
    if not critic.config.has_text:
        return None
    from transformers import AutoTokenizer

    source = critic.config.name_or_path
    if not source:
        raise ValueError("this critic reads texts and was built in memory: pass its text encoder's tokenizer")
    return AutoTokenizer.from_pretrained(source)


class CriticScorer:
    """A critic, the extractor of its features and the tokenizer of its texts.

    Args:
        critic: the trained critic (put in eval mode here).
        extractor: the :class:`~digiq_trl.models.features.VLMFeatureExtractor` its features come from.
        tokenizer: its text encoder's tokenizer; default: :func:`load_critic_tokenizer`.
    """

    def __init__(self, critic: DigiQCritic, extractor: Any = None, tokenizer: Any = None) -> None:
        self.critic = critic.eval()
        self.extractor = extractor
        self.tokenizer = tokenizer if tokenizer is not None else load_critic_tokenizer(critic)

    @classmethod
    def load(cls, critic: str | DigiQCritic, extractor: Any = None, device: str | torch.device | None = None,
             **kwargs: Any) -> CriticScorer:
        """A scorer for a critic given by path / Hub id (or already loaded); the extractor defaults to
        :meth:`~digiq_trl.models.features.VLMFeatureExtractor.for_critic` (``kwargs`` go there)."""
        if isinstance(critic, str):
            critic = DigiQCritic.from_pretrained(critic)
        critic.requires_grad_(False)
        if device is not None:
            critic.to(device)
        if extractor is None:
            from .features import VLMFeatureExtractor

            extractor = VLMFeatureExtractor.for_critic(critic.config, device=device, **kwargs)
        return cls(critic, extractor)

    def texts(self, goals: Sequence[str], histories: Sequence[str], actions: Sequence[str] | None = None) -> Text | None:
        """The critic's tokenized Q texts (with ``actions``) or V texts, or None when it reads no text."""
        if not self.critic.config.has_text:
            return None
        config = self.critic.config
        return critic_text_inputs(self.tokenizer, goals, histories, actions, config.text_layout, config.text_max_length,
                                  config.text_match)

    @torch.no_grad()
    def values(self, q_features: torch.Tensor, v_features: torch.Tensor, goals: Sequence[str],
               histories: Sequence[str], actions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Per row (one action each): ``q`` = max(Q1, Q2), ``v`` = max(V1, V2) and ``advantage``."""
        device = self.critic.device
        q_text, v_text = self.texts(goals, histories, actions), self.texts(goals, histories)
        q_features, v_features = q_features.to(device), v_features.to(device)
        q1, q2 = self.critic.q_values(q_features, v_features, q_text)
        v1, v2 = self.critic.v_values(v_features, v_text)
        adv = advantage(q1, q2, v1, v2, self.critic.config.v_target_combine)
        return {"q": torch.maximum(q1, q2).float().cpu(), "v": torch.maximum(v1, v2).float().cpu(),
                "advantage": adv.float().cpu()}

    def score(self, images: Sequence[Any], goals: Sequence[str], histories: Sequence[str],
              actions: Sequence[Sequence[str]]) -> list[Scores]:
        """Every candidate of every state scored (one extractor call for the batch of states)."""
        if self.extractor is None:
            raise ValueError("scoring observations needs the critic's feature extractor")
        states, per_state = self.extractor.state_action_features(list(images), list(goals), list(histories),
                                                                 [list(a) for a in actions])
        counts = [len(a) for a in actions]
        repeat = np.repeat(np.arange(len(counts)), counts)
        values = self.values(torch.cat(per_state), states[torch.as_tensor(repeat)], [goals[i] for i in repeat],
                             [histories[i] for i in repeat], [a for state in actions for a in state])
        split = {name: value.split(counts) for name, value in values.items()}
        return [Scores(q.numpy(), float(v[0]), a.numpy())
                for q, v, a in zip(split["q"], split["v"], split["advantage"])]
