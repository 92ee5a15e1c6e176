"""Evaluation: success rate of a policy in the simulated phone, per seed and across seeds.

Uses the same lockstep rollout loop as data collection (:func:`digiq_trl.envs.run_episodes`), so a
VLM policy is called on batches of ``batch_size`` screenshots.

Example:
    >>> from digiq_trl.envs import ExpertPolicy
    >>> from digiq_trl.evaluation import evaluate_policy
    >>> evaluate_policy(ExpertPolicy(), "general", num_episodes=20)["success_rate"]
    1.0
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from .envs.collect import run_episodes
from .envs.phone import PhoneEnv
from .envs.policies import Policy


def evaluate_policy(
    policy: Policy,
    suite: str,
    split: str = "test",
    num_episodes: int = 200,
    seed: int = 0,
    batch_size: int = 64,
    **env_kwargs: Any,
) -> dict[str, float]:
    """Play ``num_episodes`` episodes and report the success rate.

    Returns:
        ``success_rate``, ``stderr`` (binomial standard error ``sqrt(p (1 - p) / n)``),
        ``num_episodes`` and ``mean_episode_length`` (steps, failures run to the horizon).
    """
    env = PhoneEnv(suite=suite, split=split, **env_kwargs)
    successes: dict[int, bool] = {}
    lengths: dict[int, int] = {}
    for step in run_episodes(env, policy, num_episodes, seed=seed, batch_size=batch_size):
        if step.done:
            successes[step.episode] = step.reward > 0
            lengths[step.episode] = step.step + 1
    rate = sum(successes.values()) / num_episodes
    return {
        "success_rate": rate,
        "stderr": math.sqrt(rate * (1.0 - rate) / num_episodes),
        "num_episodes": num_episodes,
        "mean_episode_length": sum(lengths.values()) / num_episodes,
    }


def evaluate_policy_seeds(
    policy: Policy, suite: str, seeds: Sequence[int] = (0, 1, 2), **kwargs: Any
) -> dict[str, Any]:
    """:func:`evaluate_policy` once per seed, aggregated.

    Returns:
        ``success_rate`` (mean over seeds), ``stderr`` (standard error of that mean across seeds,
        0 for a single seed), ``num_seeds``, ``mean_episode_length`` and ``per_seed`` (each run's dict).
    """
    if not seeds:
        raise ValueError("give at least one seed")
    runs = [evaluate_policy(policy, suite, seed=seed, **kwargs) for seed in seeds]
    rates = [run["success_rate"] for run in runs]
    mean = sum(rates) / len(rates)
    spread = math.sqrt(sum((r - mean) ** 2 for r in rates) / (len(rates) - 1)) if len(rates) > 1 else 0.0
    return {
        "success_rate": mean,
        "stderr": spread / math.sqrt(len(rates)),
        "num_seeds": len(rates),
        "mean_episode_length": sum(run["mean_episode_length"] for run in runs) / len(runs),
        "per_seed": runs,
    }
