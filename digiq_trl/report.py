"""Pipeline outputs a person reads: ``results.json``, ``report.md`` and PNG plots.

``report.md`` is written for a person: every figure carries a readable name and unit, internal
metric keys (``eval_runtime``, ``epoch``...) never appear, and each plot sits in the section it
illustrates. The numbers behind each plot come from small pure functions (:func:`success_bars`,
:func:`kind_rates`, :func:`critic_loss_curves`, :func:`advantage_histogram`,
:func:`best_of_n_stats`, :func:`first_step_values`), so they can be checked on hand-made inputs.

Plots use matplotlib's non-interactive Agg backend, so they work on headless machines and in CI.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


METHOD_LABELS = {
    "behavior": "behavior data",
    "base": "base actor",
    "filtered_bc": "filtered BC",
    "digiq": "Digi-Q (Best-of-N)",
}
METHOD_COLORS = {"behavior": "#9e9e9e", "base": "#64b5f6", "filtered_bc": "#ffb74d", "digiq": "#66bb6a"}
METRIC_LABELS = {"success_rate": "success rate", "action_matching_accuracy": "action-matching accuracy"}

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


def plot_success_rates(methods: Mapping[str, Mapping[str, Any]], path: str | Path, metric: str = "success_rate",
                       eval_split: str = "evaluation", generalization_split: str | None = None) -> Path:
    """Bar chart of ``metric`` per method with standard-error bars and the episode count on every bar;
    with ``generalization_split``, a second (hatched) bar per method for those goals."""
    groups = [(f"{eval_split} goals", success_bars(methods, metric), None)]
    if generalization_split and any("generalization" in row for row in methods.values()):
        groups.append((f"{generalization_split} goals", success_bars(methods, metric, True), "//"))
    order = list(methods)
    width = 0.8 / len(groups)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for index, (name, bars, hatch) in enumerate(groups):
        offset = (index - (len(groups) - 1) / 2) * width
        drawn = ax.bar([order.index(b[0]) + offset for b in bars], [100 * b[1] for b in bars], width,
                       yerr=[100 * b[2] for b in bars], capsize=4, hatch=hatch, edgecolor="#424242", label=name,
                       color=[METHOD_COLORS.get(b[0], "#90a4ae") for b in bars])
        ax.bar_label(drawn, labels=[_bar_text(b) for b in bars], padding=2, fontsize=7)
    ax.set_xticks(range(len(order)), [METHOD_LABELS.get(m, m) for m in order], fontsize=8)
    label = METRIC_LABELS.get(metric, metric.replace("_", " "))
    ax.set_ylabel(f"{label} (%)")
    tops = [100 * (b[1] + b[2]) for _, bars, _ in groups for b in bars]
    ax.set_ylim(0, max(tops + [1.0]) * 1.35)
    ax.set_title(f"{label[0].upper() + label[1:]} per method (± 1 standard error)")
    if len(groups) > 1:
        ax.legend(fontsize=7)
    return _save(fig, path)


def _bar_text(bar: Bar) -> str:
    _, rate, _, episodes = bar
    return f"{100 * rate:.1f}" + (f"\nn={episodes}" if episodes is not None else "")


# --------------------------------------------------------------------------- success per task kind
def binomial_stderr(rate: float, trials: int) -> float:
    """``sqrt(p (1 - p) / n)``; 0 without trials."""
    return math.sqrt(rate * (1 - rate) / trials) if trials else 0.0


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


def plot_success_by_kind(methods: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Grouped bars: success per task kind and method, binomial standard-error bars, episodes per
    kind under its name (a range when methods were scored on different numbers of episodes, e.g.
    several training seeds)."""
    table = kind_rates(methods)
    shown = [m for m in methods if any(m in row for row in table.values())]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(table)), 3.8))
    width = 0.8 / max(1, len(shown))
    for index, method in enumerate(shown):
        points = [(k, row[method]) for k, row in enumerate(table.values()) if method in row]
        offset = (index - (len(shown) - 1) / 2) * width
        ax.bar([k + offset for k, _ in points], [100 * r for _, (r, _, _) in points], width,
               yerr=[100 * e for _, (_, e, _) in points], capsize=2, label=METHOD_LABELS.get(method, method),
               color=METHOD_COLORS.get(method, "#90a4ae"), edgecolor="#424242", linewidth=0.5)
    ax.set_xticks(range(len(table)), [f"{kind}\n{_episode_range(row)}" for kind, row in table.items()], fontsize=7)
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(0, 118)
    ax.legend(fontsize=7, ncol=max(1, len(shown)), loc="upper center")
    ax.set_title("Success per task kind (± 1 binomial standard error)")
    return _save(fig, path)


def _episode_range(row: Mapping[str, tuple[float, float, int]]) -> str:
    counts = sorted({episodes for _, _, episodes in row.values()})
    return f"n={counts[0]}" if len(counts) == 1 else f"n={counts[0]}-{counts[-1]}"


# --------------------------------------------------------------------------- critic losses
LOSS_COLORS = {"loss": "#212121", "q_loss": "#1e88e5", "v_loss": "#fb8c00", "penalty": "#e53935"}
"""Colour of each loss curve; the held-out curve of a loss shares its training curve's colour."""


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
    return {label: points for _, label, points in _loss_curves(log_history, conservative_weight)}


def _loss_curves(log_history: Sequence[Mapping[str, Any]],
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


def plot_critic_losses(log_history: Sequence[Mapping[str, Any]], path: str | Path,
                       conservative_weight: float | None = None) -> Path:
    """Training (solid) and held-out (dashed, dots) loss curves of :func:`critic_loss_curves`."""
    curves = _loss_curves(log_history, conservative_weight)
    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    for key, label, points in curves:
        held_out = key.startswith("eval_")
        ax.plot(*zip(*points), "--" if held_out else "-", marker="o" if held_out else None, markersize=3,
                color=LOSS_COLORS[key.removeprefix("eval_")], label=label)
    positive = all(v > 0 for _, _, points in curves for _, v in points)
    ax.set_yscale("log" if curves and positive else "linear")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (log scale)" if ax.get_yscale() == "log" else "loss")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    ax.set_title("Critic losses")
    return _save(fig, path)


# --------------------------------------------------------------------------- critic values
def plot_values_by_step(
    step_ids: Sequence[int],
    values: Mapping[str, Sequence[float]],
    success: Sequence[bool],
    path: str | Path,
) -> Path:
    """Mean critic values per episode step, successful vs failed episodes.

    Args:
        step_ids: the step index of each row.
        values: one sequence per curve name (e.g. ``{"Q": q, "V": v}``), aligned with ``step_ids``.
        success: whether each row's episode succeeded.
    """
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, series in values.items():
        for outcome, style in ((True, "-"), (False, "--")):
            means = _mean_by_step(step_ids, series, [s == outcome for s in success])
            if means:
                label = f"{name}, {'successful' if outcome else 'failed'} episodes"
                ax.plot(*zip(*means), style, marker="o", markersize=3, label=label)
    ax.set_xlabel("episode step")
    ax.set_ylabel("value")
    ax.legend(fontsize=7)
    ax.set_title("Critic values along held-out episodes")
    return _save(fig, path)


def _mean_by_step(
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
    from .targets import auroc

    won = [v for v, s in zip(v0, success) if s]
    lost = [v for v, s in zip(v0, success) if not s]
    return {"successful": len(won), "failed": len(lost),
            "mean_successful": float(np.mean(won)) if won else float("nan"),
            "mean_failed": float(np.mean(lost)) if lost else float("nan"),
            "auroc": auroc(v0, success)}


def plot_first_step_values(v0: Sequence[float], success: Sequence[bool], path: str | Path) -> Path:
    """Distributions of V(s0) for successful and failed held-out episodes (share of each group per
    bin, so groups of different sizes compare), with episode counts, means and the AUROC."""
    summary = v0_summary(v0, success)
    edges = np.histogram_bin_edges(np.asarray(v0, dtype=float), bins=20) if len(v0) else np.linspace(0, 1, 21)
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for outcome, color, name in ((True, "#43a047", "successful"), (False, "#e53935", "failed")):
        group = np.asarray([v for v, s in zip(v0, success) if s == outcome], dtype=float)
        if group.size:
            counts, _ = np.histogram(group, edges)
            ax.stairs(counts / group.size, edges, fill=True, alpha=0.35, color=color,
                      label=f"{name} episodes (n={group.size}, mean {group.mean():.3f})")
    ax.set_xlabel("V(s0) = max(V1, V2) at the first step")
    ax.set_ylabel("share of episodes")
    ax.legend(fontsize=7)
    ax.set_title(f"Critic's V(s0), held-out episodes (AUROC {summary['auroc']:.2f})")
    return _save(fig, path)


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


def plot_advantage_histogram(preparation: Mapping[str, Sequence[Any]], threshold: float | None,
                             path: str | Path, title: str = "Digi-Q") -> Path:
    """Histogram of the chosen candidates' advantages, stacked kept / dropped with their counts, the
    threshold as a dashed line and, when saved, the logged actions' advantages as an outline."""
    chosen = np.asarray(preparation["chosen_advantage"], dtype=float)
    logged = np.asarray(preparation.get("logged_advantage", []), dtype=float)
    edges = np.histogram_bin_edges(np.concatenate([chosen, logged]), bins=40)
    _, kept, dropped = advantage_histogram(chosen, kept_states(preparation, threshold), edges)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.stairs(dropped, edges, fill=True, color="#bdbdbd", label=f"dropped: {dropped.sum()} states")
    ax.stairs(dropped + kept, edges, baseline=dropped, fill=True, color="#66bb6a",
              label=f"kept (imitated): {kept.sum()} states")
    if logged.size:
        ax.stairs(np.histogram(logged, edges)[0], edges, color="#1e88e5", linewidth=1.2,
                  label="logged action's advantage")
    if threshold is not None:
        ax.axvline(threshold, color="#212121", linestyle="--", label=f"threshold a_min = {threshold:g}")
    ax.set_xlabel("advantage A of the chosen candidate (critic)")
    ax.set_ylabel("training states")
    ax.legend(fontsize=7)
    ax.set_title(f"Advantage of the Best-of-N choice ({title})")
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- report.md
Figure = tuple[str, str]
"""``(readable name, unit)`` of a results entry; unit ``%`` shows a share as a percentage, ``count``
an integer, ``s`` seconds, ``auroc`` two decimals, ``""`` four significant digits."""

HIDDEN_SUFFIXES = ("runtime", "per_second", "flos", "epoch", "num_tokens", "entropy", "num_states")
"""Bookkeeping entries the report leaves out (``num_states`` is told with the figure it counts)."""

CRITIC_FIGURES: dict[str, Figure] = {
    "eval_ranking_accuracy": ("held-out ranking accuracy (a successful episode's logged action scores above "
                              "a random alternative)", "%"),
    "expert_vs_random_ranking": ("the simulator expert's action scores above a random one (states the behavior "
                                 "policy visits on evaluation goals)", "%"),
    "eval_v0_auroc": ("held-out AUROC of V(s0) for episode success (0.5 = chance)", "auroc"),
    "eval_v_mc_mse": ("held-out mean squared error of V(s) against the Monte-Carlo return", ""),
    "eval_loss": ("held-out loss: Q + V (no conservative penalty)", ""),
    "eval_q_loss": ("held-out Q loss (TD regression, both Q heads summed)", ""),
    "eval_v_loss": ("held-out V loss (regression on the target Q, both V heads summed)", ""),
    "eval_td_error": ("held-out mean absolute TD error |Q - (r + gamma V'(s'))|", ""),
    "eval_q1": ("held-out mean Q1", ""), "eval_q2": ("held-out mean Q2", ""),
    "eval_v1": ("held-out mean V1", ""), "eval_v2": ("held-out mean V2", ""),
    "eval_target_q": ("held-out mean target Q", ""), "eval_target_v": ("held-out mean V target", ""),
}
REPRESENTATION_FIGURES: dict[str, Figure] = {
    "eval_yes_no_accuracy": ("held-out actionability Yes/No accuracy", "%"),
    "eval_yes_no_balanced_accuracy": ("held-out balanced Yes/No accuracy", "%"),
    "eval_majority_rate": ("held-out majority-label rate (always answering the commoner label)", "%"),
    "eval_predicted_yes_rate": ("held-out share of Yes answers", "%"),
    "eval_mean_token_accuracy": ("held-out token accuracy of the answers", "%"),
    "eval_loss": ("held-out cross-entropy per answer token", ""),
    "train_loss": ("mean training cross-entropy per answer token", ""),
    "labels_num_examples": ("training labels", "count"),
    "labels_num_yes": ("Yes labels", "count"),
    "labels_num_no": ("No labels", "count"),
    "labels_yes_rate": ("share of Yes labels", "%"),
    "labels_majority_rate": ("majority-label rate of the training labels", "%"),
}
BEHAVIOR_FIGURES: dict[str, Figure] = {
    "episodes": ("episodes", "count"),
    "transitions": ("transitions (steps)", "count"),
    "success_rate": ("success rate of the behavior policy", "%"),
    "goal_predictability_auroc": ("AUROC of success predicted from the goal text alone (the ceiling of "
                                  "the critic's V(s0) AUROC)", "auroc"),
}
ANCHOR_TEXT = {"logged": "imitate the logged action instead",
               "greedy": "imitate the base actor's greedy action instead",
               "none": "are left out of training"}
"""What the states below the threshold do, per ``anchor`` of the actor stage."""


def render_report(
    results: Mapping[str, Any],
    plots: Mapping[str, str | Path] | None = None,
    best_of_n: Mapping[int, Mapping[str, float]] | None = None,
    v0: tuple[Sequence[float], Sequence[bool]] | None = None,
) -> str:
    """``report.md``: results with the success plots, success per task kind, the forgetting probe,
    the Best-of-N preparation, the critic, the representation, the behavior data and the time per
    stage, every figure under a readable name.

    Args:
        results: the run's results (see :func:`write_run_report`).
        plots: plot files by role: ``success``, ``success_by_kind``, ``advantages``,
            ``critic_losses``, ``v0``, ``critic_values``; each is shown in its section.
        best_of_n: :func:`best_of_n_stats` per actor training seed of Digi-Q's preparation.
        v0: ``(V(s0) per held-out episode, success)``, from :func:`first_step_values`.
    """
    plots = plots or {}
    metric = results.get("metric", "success_rate")
    methods = results.get("methods", {})
    lines = [
        f"# Digi-Q run: {results.get('suite', '?')} suite",
        "",
        f"Evaluation: {results.get('num_eval_episodes', '?')} episodes per evaluation seed on "
        f"`{results.get('eval_split', '?')}` goals, evaluation seeds {_join(results.get('seeds', []))}, "
        f"actor training seeds {_join(results.get('actor_seeds', []))}. The standard error is across evaluation "
        "seeds (binomial with one seed; across training seeds when there are several); the pooled one is "
        "binomial over all episodes.",
        *_phone_lines(results),
        "",
        *_methods_table(methods, metric, results.get("generalization_split")),
        *_images(plots, ("success", "Success per method")),
        "",
        "Every episode of the offline data, step, critic value and Best-of-N candidate: [viewer.html](viewer.html); "
        + ("every method's evaluation episodes side by side, by failure mode: [evaluation.html](evaluation.html) "
           if metric == "success_rate" else "") + "(open them in a browser).",
        *_kind_table(methods),
        *_images(plots, ("success_by_kind", "Success per task kind")),
        *_failure_table(methods),
        *_probe_table(methods, results.get("probe_states")),
        *_best_of_n_section(best_of_n, results.get("config", {}), plots),
        *_critic_section(results.get("critic"), v0, plots),
        *_figures_section("Representation (actionability fine-tuning)", results.get("representation"),
                          REPRESENTATION_FIGURES),
        *_figures_section("Behavior data (the offline dataset)", results.get("behavior_data"), BEHAVIOR_FIGURES),
        *_timings_section(results.get("timings_s")),
    ]
    return "\n".join(lines) + "\n"


def _join(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values) if values else "-"


def _images(plots: Mapping[str, str | Path], *roles: tuple[str, str]) -> list[str]:
    return [line for role, caption in roles if role in plots
            for line in ("", f"![{caption}]({Path(plots[role]).name})")]


def _methods_table(methods: Mapping[str, Any], metric: str, generalization: str | None) -> list[str]:
    name = METRIC_LABELS.get(metric, metric.replace("_", " "))
    extra = f" {generalization} goals (%) |" if generalization else ""
    lines = [f"| method | {name} (%) | std. error (%) | pooled s.e. (%) | episodes | per seed (%) |{extra}",
             "|---|---|---|---|---|---|" + ("---|" if generalization else "")]
    for method, row in methods.items():
        per_seed = ", ".join(f"{100 * r:.1f}" for r in row.get("per_seed", []))
        episodes = episode_count(row)
        cells = [METHOD_LABELS.get(method, method), f"{100 * row[metric]:.1f}", f"{100 * row.get('stderr', 0.0):.1f}",
                 f"{100 * row['pooled_stderr']:.1f}" if "pooled_stderr" in row else "-",
                 str(episodes) if episodes is not None else "-", per_seed]
        if generalization:
            other = row.get("generalization")
            cells.append(f"{100 * other['success_rate']:.1f}" if other else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _kind_table(methods: Mapping[str, Any]) -> list[str]:
    """Successes / episodes per task kind and method (methods without per-kind counts are left out)."""
    counted = {m: row["by_kind"] for m, row in methods.items() if "by_kind" in row}
    if not counted:
        return []
    kinds = sorted({kind for per_kind in counted.values() for kind in per_kind})
    lines = ["", "## Success per task kind", "",
             "| task kind | " + " | ".join(METHOD_LABELS.get(m, m) for m in counted) + " |",
             "|---|" + "---|" * len(counted)]
    for kind in kinds:
        cells = []
        for per_kind in counted.values():
            row = per_kind.get(kind)
            cells.append(f"{row['successes']}/{row['episodes']} ({100 * row['successes'] / row['episodes']:.0f} %)"
                         if row else "-")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return lines


def _phone_lines(results: Mapping[str, Any]) -> list[str]:
    """Which simulated phone the data and the evaluation ran on, when the run says."""
    if "data_phone" not in results:
        return []
    drift = "on" if results.get("drift") else "off"
    return ["", f"Phone of the offline data: `{results['data_phone']}`; of the evaluation: `{results['eval_phone']}` "
                f"(version drift {drift}, interruptions in {100 * results.get('interruption_probability', 0):.0f} % "
                "of episodes)."]


def _failure_table(methods: Mapping[str, Any]) -> list[str]:
    """Failed evaluation episodes per failure mode and method (methods without the counts are left out)."""
    counted = {m: row["failure_modes"] for m, row in methods.items() if "failure_modes" in row}
    if not counted:
        return []
    modes = list(next(iter(counted.values())))
    lines = ["", "## Why episodes failed", "",
             "Every failed evaluation episode, classified from the simulated phone's state at its end (the first "
             "mode that applies, in this order; `digiq_trl.envs.failures`).", "",
             "| failure mode | " + " | ".join(METHOD_LABELS.get(m, m) for m in counted) + " |",
             "|---|" + "---|" * len(counted)]
    for mode in modes:
        lines.append(f"| {mode} | " + " | ".join(str(row.get(mode, 0)) for row in counted.values()) + " |")
    lines.append("| **all failures** | " + " | ".join(str(sum(row.values())) for row in counted.values()) + " |")
    return lines


def _probe_table(methods: Mapping[str, Any], probe_states: int | None) -> list[str]:
    """Per action class recall on the probe states, and the share of actions changed vs the base actor."""
    probed = {m: row["probe"] for m, row in methods.items() if "probe" in row}
    if not probed:
        return []
    classes = sorted({c for probe in probed.values() for c in probe["recall"]})
    lines = ["", "## Forgetting probe", "",
             f"Greedy actions on {probe_states} probe states (in the simulator, states a noisy expert visits, "
             "labelled with the expert's action; for a given dataset, its test split's logged actions): recall of "
             "each action class (the share of states whose reference action has that class where the actor's "
             "action has it too) and the share of actions that differ from the base actor's.", "",
             "| action class (states) | " + " | ".join(METHOD_LABELS.get(m, m) for m in probed) + " |",
             "|---|" + "---|" * len(probed)]
    for action_class in classes:
        counts = [p["recall"][action_class]["count"] for p in probed.values() if action_class in p["recall"]]
        cells = [f"{100 * p['recall'][action_class]['recall']:.0f} %" if action_class in p["recall"] else "-"
                 for p in probed.values()]
        lines.append(f"| {action_class} ({counts[0]}) | " + " | ".join(cells) + " |")
    lines.append("| changed vs base | " + " | ".join(f"{100 * p['changed_vs_base']:.0f} %" for p in probed.values()) + " |")
    return lines


def _best_of_n_section(stats: Mapping[int, Mapping[str, float]] | None, config: Mapping[str, Any],
                       plots: Mapping[str, str | Path]) -> list[str]:
    """What the critic made of Digi-Q's training states: one table row per actor training seed."""
    if not stats:
        return []
    threshold = config.get("advantage_threshold")
    rule = f"A > a_min = {threshold:g}" if threshold is not None else "above the threshold"
    anchor = ANCHOR_TEXT.get(config.get("anchor", ""), "are trained on their anchor")
    lines = ["", "## Best-of-N policy extraction (Digi-Q)", "",
             f"In every training state the actor proposed {config.get('num_candidates', 'N')} candidates (the logged "
             f"action among them); the critic scored each by its advantage A = {_formula(config)}. A state is "
             f"kept, i.e. imitates its best candidate, when {rule} and that action parses; the other states {anchor}.",
             "", "| training seed | states | kept | chosen = logged | mean A, chosen | mean A, logged | "
             "distinct candidates per state |", "|---|---|---|---|---|---|---|"]
    for seed, row in stats.items():
        lines.append(f"| {seed} | {row['states']} | {row['kept']} ({100 * row['share_kept']:.1f} %) | "
                     f"{_pct(row.get('share_chosen_is_logged'))} | {row['mean_chosen_advantage']:.3f} | "
                     f"{_number(row.get('mean_logged_advantage'), '.3f')} | "
                     f"{_number(row.get('mean_candidates'), '.1f')} |")
    return lines + _images(plots, ("advantages", "Advantage of the chosen candidate, kept and dropped states"))


def _formula(config: Mapping[str, Any]) -> str:
    """The advantage the run's critic computes (:func:`~digiq_trl.targets.advantage_formula`)."""
    from .targets import advantage_formula

    return advantage_formula(config.get("critic_v_target_combine", "min"))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _critic_section(critic: Mapping[str, Any] | None, v0: tuple[Sequence[float], Sequence[bool]] | None,
                    plots: Mapping[str, str | Path]) -> list[str]:
    """The critic's held-out figures (held-out = the offline data's test split, whole episodes it
    never trained on), V(s0) of successful vs failed episodes, and its plots."""
    if not critic and v0 is None:
        return []
    lines = ["", "## Critic", "",
             "Held-out: the offline data's test split, whole episodes the critic never trained on.", ""]
    lines += _figure_lines(critic or {}, _with_state_count(CRITIC_FIGURES, (critic or {}).get("num_states")))
    if v0 is not None and len(v0[0]):
        s = v0_summary(*v0)
        lines.append(f"- V(s0) of the {s['successful'] + s['failed']} held-out episodes: mean "
                     f"{s['mean_successful']:.3f} over the {s['successful']} successful, {s['mean_failed']:.3f} over "
                     f"the {s['failed']} failed (AUROC {s['auroc']:.2f})")
    return lines + _images(plots, ("critic_losses", "Critic losses"), ("v0", "V(s0) of successful and failed episodes"),
                           ("critic_values", "Critic values along held-out episodes"))


def _with_state_count(names: Mapping[str, Figure], states: int | None) -> dict[str, Figure]:
    """``names`` with the number of states the expert ranking was measured on added to its name."""
    if states is None:
        return dict(names)
    name, unit = names["expert_vs_random_ranking"]
    return {**names, "expert_vs_random_ranking": (f"{name[:-1]}, {states} states)", unit)}


def _figures_section(title: str, figures: Mapping[str, Any] | None, names: Mapping[str, Figure]) -> list[str]:
    if not figures:
        return []
    return ["", f"## {title}", "", *_figure_lines(figures, names)]


def _figure_lines(figures: Mapping[str, Any], names: Mapping[str, Figure]) -> list[str]:
    """One bullet per shown figure: known ones in the order of ``names``, then the others under a
    name made from their key; bookkeeping entries (:data:`HIDDEN_SUFFIXES`) are left out."""
    known = [key for key in names if key in figures]
    others = [key for key in figures if key not in names and not key.endswith(HIDDEN_SUFFIXES)]
    return [f"- {names[k][0] if k in names else _readable(k)}: {_format(figures[k], names.get(k, ('', ''))[1])}"
            for k in known + others]


def _readable(key: str) -> str:
    """A name for an entry the report does not know: ``eval_`` becomes "held-out", underscores spaces."""
    name = key.replace("/", " ").replace("_", " ")
    return "held-out " + name[len("eval "):] if name.startswith("eval ") else name


def _format(value: Any, unit: str) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if unit == "%":
        return f"{100 * value:.1f} %"
    if unit == "count":
        return f"{int(value)}"
    if unit == "auroc":
        return f"{value:.2f}"
    return f"{value:.4g}"


def _timings_section(timings: Mapping[str, float] | None) -> list[str]:
    if not timings:
        return []
    lines = ["", "## Time per stage", "", "Stages that took 0 s were reused from an earlier run in this folder.", "",
             "| stage | time |", "|---|---|"]
    lines += [f"| {stage.replace('_', ' ')} | {_duration(seconds)} |" for stage, seconds in timings.items()]
    return lines + [f"| total | {_duration(sum(timings.values()))} |"]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" + (f" ({seconds / 60:.1f} min)" if seconds >= 60 else "")


# --------------------------------------------------------------------------- the run's report
def write_run_report(
    results: Mapping[str, Any],
    output_dir: str | Path,
    critic_values: CriticValues | None = None,
    preparations: Mapping[int, str | Path] | None = None,
) -> Path:
    """Everything a run leaves for a person in ``output_dir``: ``results.json``, the plots and
    ``report.md`` (which links the trajectory viewer, ``viewer.html``).

    Args:
        results: the run's results (:func:`digiq_trl.evaluation.evaluate_run` plus settings; the
            ``config`` entry gives the conservative weight, the advantage threshold and the anchor).
        output_dir: the run's folder; the critic's ``critic/log_history.json`` is read from it.
        critic_values: :data:`CriticValues` of the held-out steps, for the values and V(s0) plots;
            None leaves them out.
        preparations: the folders of Digi-Q's saved Best-of-N preparations by actor training seed;
            the advantage histogram shows the first. None leaves the Best-of-N section out.

    Returns:
        The path of ``report.md``.
    """
    out = Path(output_dir)
    config = results.get("config", {})
    metric = results["metric"]
    plots = {"success": plot_success_rates(results["methods"], out / f"{metric}.png", metric,
                                           results.get("eval_split", "evaluation"),
                                           results.get("generalization_split"))}
    if any(row.get("by_kind") for row in results["methods"].values()):
        plots["success_by_kind"] = plot_success_by_kind(results["methods"], out / "success_by_kind.png")
    history_file = out / "critic" / "log_history.json"
    if history_file.exists():
        plots["critic_losses"] = plot_critic_losses(json.loads(history_file.read_text()), out / "critic_losses.png",
                                                    config.get("critic_conservative_weight"))
    v0 = first_step_values(critic_values) if critic_values is not None else None
    if critic_values is not None:
        plots["critic_values"] = plot_values_by_step(*critic_values, out / "critic_values.png")
        plots["v0"] = plot_first_step_values(*v0, out / "critic_v0.png")
    best_of_n = _best_of_n(preparations or {}, config.get("advantage_threshold"), out, plots)
    write_results(out / "results.json", results)
    report = out / "report.md"
    report.write_text(render_report(results, plots, best_of_n, v0))
    return report


def _best_of_n(preparations: Mapping[int, str | Path], threshold: float | None, out: Path,
               plots: dict[str, Path]) -> dict[int, dict[str, float]]:
    """:func:`best_of_n_stats` per training seed; the first seed's advantage histogram into ``plots``."""
    stats = {}
    for seed, folder in preparations.items():
        preparation = load_preparation(folder)
        stats[seed] = best_of_n_stats(preparation, threshold)
        if "advantages" not in plots:
            plots["advantages"] = plot_advantage_histogram(preparation, threshold, out / "best_of_n_advantages.png",
                                                           f"Digi-Q, training seed {seed}")
    return stats
