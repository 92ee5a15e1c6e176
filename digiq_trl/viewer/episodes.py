"""The viewer's data: episodes of a transitions dataset, with critic values and Best-of-N candidates.

:func:`build_episodes` turns dataset splits into the JSON the page reads (one dict per episode, no
pixels) and, separately, each episode's screenshots as data: URIs, so the page can keep them apart
and decode only the episode on screen. Values come from :func:`critic_values` on features cached by
:func:`featurize`; candidates from :func:`best_of_n_steps` on the actor trainer's preparation.

Example:
    >>> from digiq_trl.viewer.episodes import build_episodes
    >>> episodes, screenshots = build_episodes({"train": train})  # doctest: +SKIP
    >>> episodes[0]["steps"][0]["action"]  # doctest: +SKIP
    'tap [0.268, 0.125]'
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..actions import ActionType, describe_action, try_parse_action
from ..envs.tasks import SPLITS, SUITES, parse_goal
from ..pipeline_config import ALT_ACTIONS_COLUMN
from .thumbnails import screenshot_thumbnail


StepKey = tuple[str, int]
"""``(episode_id, step_id)``: how the preparation rows join the transitions."""

SIMULATOR_EPISODE_ID = re.compile(rf"^({'|'.join(SUITES)})-({'|'.join(SPLITS)})-seed\d+-ep\d+$")
"""Episode ids written by :func:`digiq_trl.envs.collect_transitions`, e.g. ``general-train-seed0-ep000012``."""

"""The pipeline's random-alternatives column; features cached with it are reused (see :func:`featurize`)."""

PREPARATION_COLUMNS = (
    "episode_id", "step_id", "action", "candidates", "candidate_advantages", "chosen_action", "weight",
    "base_action", "target_action", "target_weight",
)
"""Columns of an actor preparation dataset that the viewer reads."""

DECIMALS = 4
"""Values are stored (and shown) with this many decimals."""

MAX_INVALID_TEXT = 120
"""An unparsable action string is shown cut to this many characters."""


def task_kind(goal: str, episode_id: str) -> str:
    """The simulator's task kind of ``goal`` (``search``, ``install``, ...) for simulated episodes,
    ``"unknown"`` for any other data (real goals would all parse as a fallback web search)."""
    return parse_goal(goal).kind if SIMULATOR_EPISODE_ID.match(episode_id) else "unknown"


def action_entry(action: str) -> dict[str, Any]:
    """How the page shows one action: ``text`` (e.g. ``tap [0.52, 0.31]``), for taps and swipes
    ``points``, ``[touch_y, touch_x, lift_y, lift_x]`` normalized, to mark them on the screenshot,
    and ``invalid: True`` with the raw string cut to :data:`MAX_INVALID_TEXT` characters as ``text``
    when it does not parse."""
    parsed = try_parse_action(action)
    if parsed is None:
        return {"text": action[:MAX_INVALID_TEXT], "invalid": True}
    entry: dict[str, Any] = {"text": describe_action(parsed)}
    if parsed.action_type == ActionType.DUAL_POINT:
        entry["points"] = [*parsed.touch_point, *parsed.lift_point]
    return entry


def _round(value: float) -> float:
    return round(float(value), DECIMALS)


def featurize(split: Dataset, extractor: Any) -> Dataset:
    """``split`` with the critic's feature columns, by :func:`~digiq_trl.models.feature_cache.cache_features`.

    The pipeline caches features with the ``alt_actions`` alternatives on some splits; those files
    are reused when they exist, so viewing a finished run does not run the VLM again. Otherwise the
    features are computed without alternatives (the viewer needs only V(s) and Q(s, a)).
    """
    from ..models.feature_cache import cache_features, features_fingerprint

    alternatives = None
    if ALT_ACTIONS_COLUMN in split.column_names and split.cache_files:
        folder = Path(split.cache_files[0]["filename"]).parent
        fingerprint = features_fingerprint(split, extractor, ALT_ACTIONS_COLUMN)
        if (folder / f"cache-{fingerprint}.arrow").exists():
            alternatives = ALT_ACTIONS_COLUMN
    return cache_features(split, extractor, alt_actions_column=alternatives)


def critic_values(featurized: Dataset, scorer: Any, batch_size: int = 1024) -> dict[str, list[float]]:
    """Digi-Q's values of every row: ``v`` = max(V1, V2)(s), ``q`` = max(Q1, Q2)(s, a) of the logged
    action and its ``advantage`` (:meth:`~digiq_trl.models.critic.DigiQCritic.advantage`, the formula
    the critic was trained for).

    Args:
        featurized: rows with ``v_features`` and ``q_features`` (see :func:`featurize`), ``goal``,
            ``history`` and ``action``.
        scorer: the critic's :class:`~digiq_trl.models.scoring.CriticScorer`.
        batch_size: rows per forward of the heads.
    """
    columns = featurized.select_columns(["v_features", "q_features", "goal", "history", "action"])
    values: dict[str, list[float]] = {"v": [], "q": [], "advantage": []}
    for start in range(0, len(columns), batch_size):
        batch = columns.with_format("torch", columns=["v_features", "q_features"],
                                    output_all_columns=True)[start : start + batch_size]
        scored = scorer.values(batch["q_features"].float(), batch["v_features"].float(), batch["goal"],
                               batch["history"], batch["action"])
        for name in values:
            values[name] += scored[name].tolist()
    return values


def best_of_n_steps(preparation: Dataset) -> dict[StepKey, dict[str, Any]]:
    """What Best-of-N did at each state of an actor preparation dataset, keyed by ``(episode_id, step_id)``.

    Each value holds ``candidates`` (:func:`action_entry` dicts in first-seen order, identical ones
    merged into one with a ``count``, each with its ``advantage`` and ``logged`` / ``chosen`` set
    on the logged action and the critic's choice), ``weight`` (1 when the choice was imitated), the
    texts of the ``base`` actor's, the ``chosen`` and the ``target`` action (what the actor was
    trained on), and ``target_weight``.

    Raises:
        ValueError: a column of :data:`PREPARATION_COLUMNS` is missing (e.g. a filtered-BC
            preparation, which has no candidates).
    """
    missing = [name for name in PREPARATION_COLUMNS if name not in preparation.column_names]
    if missing:
        raise ValueError(f"the preparation dataset lacks column(s) {missing}; it has {preparation.column_names}")
    return {
        (row["episode_id"], int(row["step_id"])): _best_of_n(row)
        for row in preparation.select_columns(list(PREPARATION_COLUMNS))
    }


def _best_of_n(row: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, dict[str, Any]] = {}
    for text, value in zip(row["candidates"], row["candidate_advantages"], strict=True):
        if text in merged:
            merged[text]["count"] = merged[text].get("count", 1) + 1
            continue
        flags = {"logged": text == row["action"], "chosen": text == row["chosen_action"]}
        merged[text] = {**action_entry(text), "advantage": _round(value), **{k: True for k, v in flags.items() if v}}
    return {
        "candidates": list(merged.values()),
        "weight": _round(row["weight"]),
        "base": action_entry(row["base_action"])["text"],
        "chosen": action_entry(row["chosen_action"])["text"],
        "target": action_entry(row["target_action"])["text"],
        "target_weight": _round(row["target_weight"]),
    }


def _step(row: dict[str, Any], values: Mapping[str, list[float]] | None, index: int,
          best_of_n: Mapping[StepKey, dict[str, Any]]) -> dict[str, Any]:
    step = {
        **action_entry(row["action"]),
        "raw": row["action"],
        "reward": _round(row["reward"]),
        "mc_return": _round(row["mc_return"]),
        "done": bool(row["done"]),
    }
    if values is not None:
        step.update(v=_round(values["v"][index]), q=_round(values["q"][index]),
                    advantage=_round(values["advantage"][index]))
    bon = best_of_n.get((row["episode_id"], int(row["step_id"])))
    if bon is not None:
        step["best_of_n"] = bon
    return step


def episode_ends(episode_ids: list[str]) -> list[int]:
    """The end (exclusive row index) of each episode of rows grouped by episode."""
    if not episode_ids:
        return []
    return [i for i in range(1, len(episode_ids)) if episode_ids[i] != episode_ids[i - 1]] + [len(episode_ids)]


def first_episodes(split: Dataset, max_episodes: int | None) -> Dataset:
    """The rows of the first ``max_episodes`` episodes of ``split`` (all of them for None)."""
    if max_episodes is not None and max_episodes < 1:
        raise ValueError(f"max_episodes must be at least 1, got {max_episodes}")
    ends = episode_ends(split["episode_id"]) if max_episodes is not None else []
    if max_episodes is None or len(ends) <= max_episodes:
        return split
    return split.select(range(ends[max_episodes - 1]))


def build_episodes(
    splits: Mapping[str, Dataset],
    values: Mapping[str, Mapping[str, list[float]]] | None = None,
    best_of_n: Mapping[StepKey, dict[str, Any]] | None = None,
    notes: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """The viewer's episodes and, aligned with them, each episode's screenshots (data: URIs).

    Args:
        splits: transitions per split name, rows grouped by episode and sorted by step (the schema).
        values: per split name, :func:`critic_values` of its rows (None: no critic).
        best_of_n: :func:`best_of_n_steps` of a preparation dataset; joined on ``(episode_id, step_id)``.
        notes: extra fields per ``episode_id`` (an evaluation's ``judge`` verdict and device ``error``).

    Returns:
        ``(episodes, screenshots)``: each episode is ``{"id", "split", "goal", "kind", "success",
        "steps"}`` plus its ``notes``, each step its action (``text``, ``raw``, ``points``), ``reward``, ``mc_return``,
        ``done``, ``v``/``q``/``advantage`` with a critic and ``best_of_n`` where it ran.
    """
    episodes: list[dict[str, Any]] = []
    screenshots: list[list[str]] = []
    for name, split in splits.items():
        light = split.select_columns(
            ["episode_id", "step_id", "goal", "action", "reward", "done", "mc_return", "trajectory_reward"]
        )[:]
        rows = [dict(zip(light, row)) for row in zip(*light.values())]
        ends = episode_ends(light["episode_id"])
        uris = [screenshot_thumbnail(row["image"], row["action"]) for row in split.select_columns(["image", "action"])]
        split_values = values.get(name) if values is not None else None
        for start, end in zip([0, *ends[:-1]], ends):
            first = rows[start]
            episodes.append({
                "id": first["episode_id"],
                "split": name,
                "goal": first["goal"],
                "kind": task_kind(first["goal"], first["episode_id"]),
                "success": first["trajectory_reward"] > 0,
                "steps": [_step(rows[i], split_values, i, best_of_n or {}) for i in range(start, end)],
                **(notes or {}).get(first["episode_id"], {}),
            })
            screenshots.append(uris[start:end])
    return episodes, screenshots
