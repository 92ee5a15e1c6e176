"""Returns and splits over episodes: pure functions plus their ``datasets`` wrappers."""

from __future__ import annotations

import random
from collections.abc import Sequence

from datasets import Dataset, DatasetDict, Value

from ..discount import check_gamma


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    """Monte-Carlo returns ``G_t = r_t + gamma * G_{t+1}`` of one episode.

    Raises:
        ValueError: ``gamma`` is not in ``(0, 1]``.

    Example:
        >>> discounted_returns([0.0, 0.0, 1.0], gamma=0.5)
        [0.25, 0.5, 1.0]
    """
    check_gamma(gamma)
    returns: list[float] = []
    running = 0.0
    for reward in reversed(rewards):
        running = reward + gamma * running
        returns.append(running)
    return returns[::-1]


def _episode_spans(episode_ids: Sequence[str]) -> list[tuple[int, int]]:
    """``[start, end)`` row spans of adjacent runs of equal episode ids."""
    spans: list[tuple[int, int]] = []
    start = 0
    for index in range(1, len(episode_ids) + 1):
        if index == len(episode_ids) or episode_ids[index] != episode_ids[start]:
            spans.append((start, index))
            start = index
    return spans


def episode_returns(
    episode_ids: Sequence[str], rewards: Sequence[float], gamma: float
) -> tuple[list[float], list[float]]:
    """MC returns and trajectory rewards for rows sorted by episode (pure; see compute_mc_returns)."""
    mc: list[float] = []
    totals: list[float] = []
    for start, end in _episode_spans(episode_ids):
        episode_rewards = rewards[start:end]
        mc.extend(discounted_returns(episode_rewards, gamma))
        totals.extend([float(sum(episode_rewards))] * (end - start))
    return mc, totals


def compute_mc_returns(ds: Dataset, gamma: float) -> Dataset:
    """Fill ``mc_return`` and ``trajectory_reward`` from ``reward`` (rows sorted by episode/step).

    Only the light columns are read; the result keeps the dataset's features.
    """
    light = ds.select_columns(["episode_id", "reward"])
    mc, totals = episode_returns(light["episode_id"], light["reward"], gamma)
    columns = ds.column_names + [
        name for name in ("mc_return", "trajectory_reward") if name not in ds.column_names
    ]
    for name, values in (("mc_return", mc), ("trajectory_reward", totals)):
        if name in ds.column_names:
            ds = ds.remove_columns(name)
        ds = ds.add_column(name, values, feature=Value("float32"))
    return ds.select_columns(columns)


def split_by_episode(ds: Dataset, test_size: float, seed: int = 0) -> DatasetDict:
    """Split into ``train`` and ``test`` by whole episodes (no episode in both).

    Args:
        test_size: fraction of episodes that go to ``test`` (at least one when there are two or more).
        seed: shuffles the episode order before splitting.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    episodes = list(dict.fromkeys(ds["episode_id"]))
    random.Random(seed).shuffle(episodes)
    num_test = max(1, round(test_size * len(episodes))) if len(episodes) > 1 else 0
    test_episodes = set(episodes[:num_test])
    ids = ds["episode_id"]
    test_rows = [i for i, e in enumerate(ids) if e in test_episodes]
    train_rows = [i for i, e in enumerate(ids) if e not in test_episodes]
    return DatasetDict(train=ds.select(train_rows), test=ds.select(test_rows))


def take_episodes(ds: Dataset, max_rows: int, seed: int) -> Dataset:
    """Whole episodes of ``ds`` in a seeded random order, as many as fit in ``max_rows`` rows."""
    spans: dict[str, list[int]] = {}
    for index, episode in enumerate(ds["episode_id"]):
        spans.setdefault(episode, []).append(index)
    episodes = list(spans)
    random.Random(seed).shuffle(episodes)
    rows: list[int] = []
    for episode in episodes:
        if len(rows) + len(spans[episode]) <= max_rows:
            rows.extend(spans[episode])
    return ds.select(sorted(rows))
