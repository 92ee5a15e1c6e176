"""The report's PNG plots, drawn with matplotlib from the numbers of :mod:`digiq_trl.report.tables`.

Plots use matplotlib's non-interactive Agg backend, so they work on headless machines and in CI.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from .tables import (
    METHOD_LABELS,
    METRIC_LABELS,
    Bar,
    advantage_histogram,
    kept_states,
    kind_rates,
    loss_curves,
    mean_by_step,
    success_bars,
    v0_summary,
)


matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


METHOD_COLORS = {"behavior": "#9e9e9e", "base": "#64b5f6", "filtered_bc": "#ffb74d", "digiq": "#66bb6a"}
"""Bar colour of each method (a method without one is grey-blue)."""

LOSS_COLORS = {"loss": "#212121", "q_loss": "#1e88e5", "v_loss": "#fb8c00", "penalty": "#e53935"}
"""Colour of each loss curve; the held-out curve of a loss shares its training curve's colour."""


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


def plot_critic_losses(log_history: Sequence[Mapping[str, Any]], path: str | Path,
                       conservative_weight: float | None = None) -> Path:
    """Training (solid) and held-out (dashed, dots) loss curves of :func:`~digiq_trl.report.critic_loss_curves`."""
    curves = loss_curves(log_history, conservative_weight)
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
            means = mean_by_step(step_ids, series, [s == outcome for s in success])
            if means:
                label = f"{name}, {'successful' if outcome else 'failed'} episodes"
                ax.plot(*zip(*means), style, marker="o", markersize=3, label=label)
    ax.set_xlabel("episode step")
    ax.set_ylabel("value")
    ax.legend(fontsize=7)
    ax.set_title("Critic values along held-out episodes")
    return _save(fig, path)


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
