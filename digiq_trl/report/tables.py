"""The numbers behind the report: results JSON, success per method and task kind, critic losses and
values, Best-of-N preparation statistics.

Each is a small pure function of a run's results, a trainer's ``log_history`` or a saved
preparation, so it can be checked on hand-made inputs; :mod:`digiq_trl.report.plots` draws them and
:mod:`digiq_trl.report.markdown` writes them into ``report.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation import binomial_stderr


METHOD_LABELS = {
    "behavior": "behavior data",
    "base": "base actor",
    "filtered_bc": "filtered BC",
    "digiq": "Digi-Q (Best-of-N)",
}
"""The name each method goes by in plots and tables."""

METRIC_LABELS = {"success_rate": "success rate",
                 "successful_episode_action_match": "action match on successful test episodes"}
"""The name of each headline metric (``results["metric"]``)."""

Bar = tuple[str, float, float, int | None]
"""``(method, rate, standard error, episodes)`` of one bar; episodes is None where unknown."""

CriticValues = tuple[Sequence[int], Mapping[str, Sequence[float]], Sequence[bool]]
"""``(step_ids, {"Q": ..., "V": ...}, success)`` of the held-out steps, aligned row by row."""


def write_results(path: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as indented JSON (atomically: a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- success per method
def episode_count(row: Mapping[str, Any]) -> int | None:
    """Episodes behind one method's (or one split's) rate: ``num_episodes``, else the sum over its
    training-seed runs, else over its task kinds; None when the result does not count episodes
    (offline action matching)."""
    if "num_episodes" in row:
        return int(row["num_episodes"])
    runs = row.get("runs") or []
    if runs and all("num_episodes" in run for run in runs):
        return sum(int(run["num_episodes"]) for run in runs)
    if row.get("by_kind"):
        return sum(int(kind["episodes"]) for kind in row["by_kind"].values())
    return None


def success_bars(methods: Mapping[str, Mapping[str, Any]], metric: str = "success_rate",
                 generalization: bool = False) -> list[Bar]:
    """One bar per method: its rate on the evaluation goals (or, with ``generalization``, on the
    generalization split, for the methods that have it), the standard error of the results table
    and the episode count."""
    bars = []
    for method, row in methods.items():
        source = row.get("generalization") if generalization else row
        if source is not None:
            rate = source["success_rate"] if generalization else source[metric]
            bars.append((method, rate, source.get("stderr", 0.0), episode_count(source)))
    return bars


# --------------------------------------------------------------------------- success per task kind
def kind_rates(methods: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``{task kind: {method: (success rate, binomial standard error, episodes)}}`` for the methods
    with per-kind counts, kinds sorted by name."""
    counted = {m: row["by_kind"] for m, row in methods.items() if row.get("by_kind")}
    kinds = sorted({kind for per_kind in counted.values() for kind in per_kind})
    table: dict[str, dict[str, tuple[float, float, int]]] = {}
    for kind in kinds:
        table[kind] = {}
        for method, per_kind in counted.items():
            if kind in per_kind:
                successes, episodes = per_kind[kind]["successes"], per_kind[kind]["episodes"]
                rate = successes / episodes if episodes else 0.0
                table[kind][method] = (rate, binomial_stderr(rate, episodes), episodes)
    return table


# --------------------------------------------------------------------------- critic losses
def critic_loss_curves(log_history: Sequence[Mapping[str, Any]],
                       conservative_weight: float | None = None) -> dict[str, list[tuple[int, float]]]:
    """The critic's loss curves from ``trainer.state.log_history``, named for what they contain.

    :class:`~digiq_trl.trainers.critic_trainer.DigiQCriticTrainer` logs ``loss``, the training
    objective (Q loss + V loss, plus ``conservative_weight`` × the conservative penalty when it is
    positive), ``q_loss`` (TD regression of both Q heads, summed) and ``v_loss`` (both V heads
    regressed on the target Q), each averaged over the logging window, and in evaluation
    ``eval_loss`` = ``eval_q_loss`` + ``eval_v_loss`` (the penalty only applies in training). The
    weighted penalty is not logged; it is recovered as ``loss - q_loss - v_loss``. A step logged twice
    (the final evaluation) keeps its last value.

    Args:
        log_history: the critic trainer's ``state.log_history``.
        conservative_weight: the critic's ``conservative_weight``; None (unknown, e.g. a run folder
            without its configuration) infers from the log whether the objective holds a penalty.
    """
    return {label: points for _, label, points in loss_curves(log_history, conservative_weight)}


def loss_curves(log_history: Sequence[Mapping[str, Any]],
                 conservative_weight: float | None) -> list[tuple[str, str, list[tuple[int, float]]]]:
    """``(logged key, label, points)`` of every curve with points (see :func:`critic_loss_curves`)."""
    penalized = _logs_a_penalty(log_history) if conservative_weight is None else conservative_weight > 0
    weighted = "weighted" if conservative_weight is None else f"× {conservative_weight:g}"
    penalty = f" + conservative penalty {weighted}" if penalized else ""
    names = {
        "loss": f"train objective: Q + V loss{penalty}",
        "q_loss": "train Q loss (TD, both Q heads)",
        "v_loss": "train V loss (to target Q, both V heads)",
        "eval_loss": "held-out loss: Q + V (no penalty)",
        "eval_q_loss": "held-out Q loss (TD)",
        "eval_v_loss": "held-out V loss",
    }
    curves = [(key, label, _points(log_history, lambda row, key=key: row.get(key))) for key, label in names.items()]
    if penalized:
        label = f"train conservative penalty {weighted} (= objective - Q - V)"
        curves.append(("penalty", label, _points(log_history, _logged_penalty)))
    return [curve for curve in curves if curve[2]]


def _logs_a_penalty(log_history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a logged training objective exceeds its Q + V losses (by more than rounding)."""
    gaps = [value for _, value in _points(log_history, _logged_penalty)]
    return any(gap > 1e-4 for gap in gaps)


def _logged_penalty(row: Mapping[str, Any]) -> float | None:
    if all(key in row for key in ("loss", "q_loss", "v_loss")):
        return row["loss"] - row["q_loss"] - row["v_loss"]
    return None


def _points(log_history: Sequence[Mapping[str, Any]],
            value: Callable[[Mapping[str, Any]], float | None]) -> list[tuple[int, float]]:
    by_step = {}
    for row in log_history:
        point = value(row)
        if "step" in row and point is not None:
            by_step[row["step"]] = point
    return sorted(by_step.items())


# --------------------------------------------------------------------------- critic values
def mean_by_step(
    step_ids: Sequence[int], series: Sequence[float], keep: Sequence[bool]
) -> list[tuple[int, float]]:
    sums: dict[int, list[float]] = {}
    for step, value, kept in zip(step_ids, series, keep):
        if kept:
            sums.setdefault(step, []).append(value)
    return [(step, sum(v) / len(v)) for step, v in sorted(sums.items())]


def first_step_values(critic_values: CriticValues, head: str = "V") -> tuple[list[float], list[bool]]:
    """``(V(s0) per episode, episode succeeded)``: the rows of step 0 of :data:`CriticValues`."""
    step_ids, values, success = critic_values
    rows = [i for i, step in enumerate(step_ids) if step == 0]
    return [float(values[head][i]) for i in rows], [bool(success[i]) for i in rows]


def v0_summary(v0: Sequence[float], success: Sequence[bool]) -> dict[str, float]:
    """Episodes, mean V(s0) of successful and failed episodes, and the AUROC of V(s0) for success
    (nan with a single outcome)."""
    from ..targets import auroc

    won = [v for v, s in zip(v0, success) if s]
    lost = [v for v, s in zip(v0, success) if not s]
    return {"successful": len(won), "failed": len(lost),
            "mean_successful": float(np.mean(won)) if won else float("nan"),
            "mean_failed": float(np.mean(lost)) if lost else float("nan"),
            "auroc": auroc(v0, success)}


# --------------------------------------------------------------------------- Best-of-N preparation
BEST_OF_N_COLUMNS = ("chosen_advantage", "logged_advantage", "chosen_is_logged", "weight", "candidates")
"""Columns of the actor stage's saved preparation that the report reads."""


def load_preparation(path: str | Path) -> dict[str, list[Any]]:
    """The :data:`BEST_OF_N_COLUMNS` of a Best-of-N preparation saved with ``save_to_disk``."""
    from datasets import load_from_disk

    prepared = load_from_disk(str(path))
    return prepared.select_columns([c for c in BEST_OF_N_COLUMNS if c in prepared.column_names]).to_dict()


def kept_states(preparation: Mapping[str, Sequence[Any]], threshold: float | None) -> np.ndarray:
    """Which states imitate their Best-of-N choice: ``weight != 0`` (the advantage is above the
    threshold and the chosen action parses), or ``A > threshold`` when no weight was saved."""
    if "weight" in preparation:
        return np.asarray(preparation["weight"], dtype=float) != 0
    if threshold is None:
        raise ValueError("a preparation without a 'weight' column needs the advantage threshold")
    return np.asarray(preparation["chosen_advantage"], dtype=float) > threshold


def best_of_n_stats(preparation: Mapping[str, Sequence[Any]], threshold: float | None = None) -> dict[str, float]:
    """States, states kept (:func:`kept_states`) and their share, share where the chosen action is
    the logged one, mean advantage of the chosen and of the logged action, distinct candidates per
    state."""
    kept = kept_states(preparation, threshold)
    stats = {"states": int(kept.size), "kept": int(kept.sum()), "share_kept": float(kept.mean()) if kept.size else 0.0,
             "mean_chosen_advantage": float(np.mean(preparation["chosen_advantage"]))}
    if "chosen_is_logged" in preparation:
        stats["share_chosen_is_logged"] = float(np.mean(preparation["chosen_is_logged"]))
    if "logged_advantage" in preparation:
        stats["mean_logged_advantage"] = float(np.mean(preparation["logged_advantage"]))
    if "candidates" in preparation:
        stats["mean_candidates"] = float(np.mean([len(c) for c in preparation["candidates"]]))
    return stats


def advantage_histogram(chosen: Sequence[float], kept: Sequence[bool], bins: int | np.ndarray = 40,
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bin edges, kept states per bin, dropped states per bin)`` of the chosen advantages."""
    values = np.asarray(chosen, dtype=float)
    mask = np.asarray(kept, dtype=bool)
    edges = np.histogram_bin_edges(values, bins=bins) if np.ndim(bins) == 0 else np.asarray(bins)
    return edges, np.histogram(values[mask], edges)[0], np.histogram(values[~mask], edges)[0]
