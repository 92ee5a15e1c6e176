"""Pipeline outputs a person reads: ``results.json``, ``report.md`` and PNG plots.

Plots use matplotlib's non-interactive Agg backend, so they work on headless machines and in CI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METHOD_LABELS = {
    "behavior": "behavior data",
    "base": "base actor",
    "filtered_bc": "filtered BC",
    "digiq": "Digi-Q (Best-of-N)",
}


def write_results(path: str | Path, results: Mapping[str, Any]) -> Path:
    """Write ``results`` as indented JSON (atomically: a crash never leaves half a file)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def plot_success_rates(
    methods: Mapping[str, Mapping[str, float]], path: str | Path, metric: str = "success_rate"
) -> Path:
    """Bar chart of ``metric`` (a rate) per method, with standard-error bars."""
    names = list(methods)
    rates = [100 * methods[n][metric] for n in names]
    errors = [100 * methods[n].get("stderr", 0.0) for n in names]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar([METHOD_LABELS.get(n, n) for n in names], rates, yerr=errors, capsize=4,
                  color=["#9e9e9e", "#64b5f6", "#ffb74d", "#66bb6a"][: len(names)])
    ax.bar_label(bars, fmt="%.1f", padding=2)
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.set_ylim(0, max(rates + [1.0]) * 1.25)
    ax.set_title("Held-out evaluation")
    return _save(fig, path)


def plot_critic_losses(log_history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Training (and eval) loss curves of the critic from ``trainer.state.log_history``."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("loss", "train TD loss"), ("eval_loss", "eval TD loss")):
        points = [(row["step"], row[key]) for row in log_history if key in row]
        if points:
            ax.plot(*zip(*points), marker="." if key == "eval_loss" else None, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MSE")
    ax.set_yscale("log")
    ax.legend()
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
            means = _mean_by_step(step_ids, series, [s == outcome for s in success])
            if means:
                label = f"{name}, {'successful' if outcome else 'failed'} episodes"
                ax.plot(*zip(*means), style, marker="o", markersize=3, label=label)
    ax.set_xlabel("episode step")
    ax.set_ylabel("value")
    ax.legend(fontsize=7)
    ax.set_title("Critic values along episodes")
    return _save(fig, path)


def _mean_by_step(
    step_ids: Sequence[int], series: Sequence[float], keep: Sequence[bool]
) -> list[tuple[int, float]]:
    sums: dict[int, list[float]] = {}
    for step, value, kept in zip(step_ids, series, keep):
        if kept:
            sums.setdefault(step, []).append(value)
    return [(step, sum(v) / len(v)) for step, v in sorted(sums.items())]


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_report(results: Mapping[str, Any], plots: Sequence[str | Path]) -> str:
    """``report.md``: the results table, the critic's quality, timings, and the plots."""
    metric = results.get("metric", "success_rate")
    lines = [
        f"# Digi-Q run: {results.get('suite', '?')} suite",
        "",
        f"Evaluation: {results.get('num_eval_episodes', '?')} episodes per evaluation seed on "
        f"`{results.get('eval_split', '?')}` goals, evaluation seeds {results.get('seeds', [])}, "
        f"actor training seeds {results.get('actor_seeds', [])}. With several training seeds, "
        "'per seed' lists one value per training seed and the standard error is across them; "
        "otherwise across evaluation seeds.",
        "",
        f"| method | {metric.replace('_', ' ')} (%) | std. error (%) | per seed (%) |",
        "|---|---|---|---|",
    ]
    for name, row in results.get("methods", {}).items():
        per_seed = ", ".join(f"{100 * r:.1f}" for r in row.get("per_seed", []))
        lines.append(
            f"| {METHOD_LABELS.get(name, name)} | {100 * row[metric]:.1f} | "
            f"{100 * row.get('stderr', 0.0):.1f} | {per_seed} |"
        )
    for section in ("critic", "representation", "behavior_data", "timings_s"):
        if results.get(section):
            lines += ["", f"## {section.replace('_', ' ')}", ""]
            lines += [f"- {key}: {_fmt(value)}" for key, value in results[section].items()]
    lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
