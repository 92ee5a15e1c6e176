"""Behavior policies: the protocol every actor implements, plus the scripted ones.

A policy maps a batch of observations (and the env's ``info`` dicts) to AutoUI action strings.
Scripted policies read ``info["expert_action"]``; a VLM policy ignores ``infos`` and acts from the
screenshot, goal and history alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..actions import ActionType, DeviceAction, format_action


_RANDOM_KINDS = ("tap", "swipe", "type", "back", "home", "enter", "complete", "impossible")
_RANDOM_WEIGHTS = np.array([0.5, 0.15, 0.1, 0.08, 0.07, 0.07, 0.015, 0.015])
_SWIPE_DIRECTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))
_FALLBACK_WORDS = ("news", "weather", "hotels", "music", "price", "video", "apps", "settings")


@runtime_checkable
class Policy(Protocol):
    """Anything that picks actions for a batch of states."""

    def act(self, observations: Sequence[dict[str, Any]], infos: Sequence[dict[str, Any]]) -> list[str]:
        """One AutoUI action string per observation."""
        ...


def random_action(rng: np.random.Generator, goal: str = "") -> DeviceAction:
    """A random device action: mostly taps anywhere, also swipes, typing, buttons, status.

    Typed text is one or two words of ``goal`` (a plausible wrong query), or a stock word.
    """
    kind = _RANDOM_KINDS[rng.choice(len(_RANDOM_KINDS), p=_RANDOM_WEIGHTS)]
    if kind == "tap":
        y, x = (round(float(v), 2) for v in rng.random(2))
        return DeviceAction.tap(y, x)
    if kind == "swipe":
        return _random_swipe(rng)
    if kind == "type":
        return DeviceAction.type_text(_random_words(rng, goal))
    return DeviceAction.press(
        {
            "back": ActionType.PRESS_BACK,
            "home": ActionType.PRESS_HOME,
            "enter": ActionType.PRESS_ENTER,
            "complete": ActionType.STATUS_TASK_COMPLETE,
            "impossible": ActionType.STATUS_TASK_IMPOSSIBLE,
        }[kind]
    )


def _random_swipe(rng: np.random.Generator) -> DeviceAction:
    y, x = (float(v) for v in rng.random(2))
    dy, dx = _SWIPE_DIRECTIONS[rng.integers(len(_SWIPE_DIRECTIONS))]
    end_y, end_x = min(max(y + 0.4 * dy, 0.0), 1.0), min(max(x + 0.4 * dx, 0.0), 1.0)
    if (end_y, end_x) == (y, x):
        end_y = 1.0 - y
    return DeviceAction.swipe((round(y, 2), round(x, 2)), (round(end_y, 2), round(end_x, 2)))


def _random_words(rng: np.random.Generator, goal: str) -> str:
    words = [w.strip("?.,!\"'") for w in goal.split()] or list(_FALLBACK_WORDS)
    words = [w for w in words if w] or list(_FALLBACK_WORDS)
    count = int(rng.integers(1, 3))
    start = int(rng.integers(len(words)))
    return " ".join(words[start : start + count])


def add_random_alternatives(ds: Any, count: int, seed: int, column: str = "alt_actions") -> Any:
    """``ds`` with ``column``: ``count`` uniformly random actions per state (seeded, reproducible).

    The critic's ranking metric compares the logged action with them, and its conservative penalty
    pushes their Q values down (:class:`~digiq_trl.trainers.critic_config.DigiQCriticConfig`
    ``alt_actions_column``).

    Example:
        >>> ds = add_random_alternatives(transitions, count=4, seed=0)  # doctest: +SKIP
    """
    rng = np.random.default_rng(seed)
    alternatives = [[format_action(random_action(rng, goal)) for _ in range(count)] for goal in ds["goal"]]
    return ds.add_column(column, alternatives)


class ExpertPolicy:
    """The scripted expert: plays ``info["expert_action"]`` (solves every task within the horizon)."""

    def act(self, observations: Sequence[dict[str, Any]], infos: Sequence[dict[str, Any]]) -> list[str]:
        """The env's expert action for each state."""
        return [_expert_from(info) for info in infos]


class NoisyExpertPolicy:
    """The expert, except that with probability ``noise`` it takes a :func:`random_action`.

    At ``DEFAULT_NOISE`` it succeeds on 20-35 % of episodes on both suites, like the zero-shot
    AutoUI behavior policy of the Digi-Q paper; the expert recovers from the random steps when there
    is time, so its datasets contain failures, detours and recoveries.

    Args:
        noise: probability of a random action at each step, in ``[0, 1]``.
        seed: seeds the policy's own random generator.
    """

    DEFAULT_NOISE = 0.65

    def __init__(self, noise: float = DEFAULT_NOISE, seed: int = 0) -> None:
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {noise}")
        self.noise = noise
        self.rng = np.random.default_rng(seed)

    def act(self, observations: Sequence[dict[str, Any]], infos: Sequence[dict[str, Any]]) -> list[str]:
        """Expert or random action per state."""
        actions = []
        for observation, info in zip(observations, infos):
            if self.rng.random() < self.noise:
                actions.append(format_action(random_action(self.rng, observation.get("goal", ""))))
            else:
                actions.append(_expert_from(info))
        return actions


DEFAULT_NOISE = NoisyExpertPolicy.DEFAULT_NOISE
"""The noisy expert's default random-action rate (re-exported as ``digiq_trl.envs.DEFAULT_NOISE``)."""


class RandomPolicy:
    """Uniformly random actions (see :func:`random_action`); the floor every policy should beat."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, observations: Sequence[dict[str, Any]], infos: Sequence[dict[str, Any]]) -> list[str]:
        """A random action per state."""
        return [format_action(random_action(self.rng, o.get("goal", ""))) for o in observations]


def _expert_from(info: dict[str, Any]) -> str:
    if "expert_action" not in info:
        raise KeyError("scripted policies need info['expert_action'] from PhoneEnv")
    return info["expert_action"]
