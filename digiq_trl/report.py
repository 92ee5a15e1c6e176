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
    """``report.md``: the results table (with the generalization column), success per task kind, the
    forgetting probe, the critic's quality, timings, and the plots."""
    metric = results.get("metric", "success_rate")
    methods = results.get("methods", {})
    lines = [
        f"# Digi-Q run: {results.get('suite', '?')} suite",
        "",
        f"Evaluation: {results.get('num_eval_episodes', '?')} episodes per evaluation seed on "
        f"`{results.get('eval_split', '?')}` goals, evaluation seeds {results.get('seeds', [])}, "
        f"actor training seeds {results.get('actor_seeds', [])}. The standard error is across evaluation "
        "seeds (binomial with one seed; across training seeds when there are several); the pooled one is "
        "binomial over all episodes.",
        "",
        *_methods_table(methods, metric, results.get("generalization_split")),
        "",
        "Every episode, step, critic value and Best-of-N candidate: [viewer.html](viewer.html) (open it in a browser).",
        *_kind_table(methods),
        *_probe_table(methods, results.get("probe_states")),
    ]
    for section in ("critic", "representation", "behavior_data", "timings_s"):
        if results.get(section):
            lines += ["", f"## {section.replace('_', ' ')}", ""]
            lines += [f"- {key}: {_fmt(value)}" for key, value in results[section].items()]
    lines += [""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def _methods_table(methods: Mapping[str, Any], metric: str, generalization: str | None) -> list[str]:
    name = metric.replace("_", " ")
    extra = f" {generalization} goals (%) |" if generalization else ""
    lines = [f"| method | {name} (%) | std. error (%) | pooled s.e. (%) | per seed (%) |{extra}",
             "|---|---|---|---|---|" + ("---|" if generalization else "")]
    for method, row in methods.items():
        per_seed = ", ".join(f"{100 * r:.1f}" for r in row.get("per_seed", []))
        cells = [METHOD_LABELS.get(method, method), f"{100 * row[metric]:.1f}", f"{100 * row.get('stderr', 0.0):.1f}",
                 f"{100 * row['pooled_stderr']:.1f}" if "pooled_stderr" in row else "-", per_seed]
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


def _probe_table(methods: Mapping[str, Any], probe_states: int | None) -> list[str]:
    """Per action class recall on the probe states, and the share of actions changed vs the base actor."""
    probed = {m: row["probe"] for m, row in methods.items() if "probe" in row}
    if not probed:
        return []
    classes = sorted({c for probe in probed.values() for c in probe["recall"]})
    lines = ["", "## Forgetting probe", "",
             f"Greedy actions on {probe_states} states of the critic's test split: recall of each action class "
             "(the share of states whose reference action has that class where the actor's action has it too) "
             "and the share of actions that differ from the base actor's.", "",
             "| action class (states) | " + " | ".join(METHOD_LABELS.get(m, m) for m in probed) + " |",
             "|---|" + "---|" * len(probed)]
    for action_class in classes:
        counts = [p["recall"][action_class]["count"] for p in probed.values() if action_class in p["recall"]]
        cells = [f"{100 * p['recall'][action_class]['recall']:.0f} %" if action_class in p["recall"] else "-"
                 for p in probed.values()]
        lines.append(f"| {action_class} ({counts[0]}) | " + " | ".join(cells) + " |")
    lines.append("| changed vs base | " + " | ".join(f"{100 * p['changed_vs_base']:.0f} %" for p in probed.values()) + " |")
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_run_report(
    results: Mapping[str, Any],
    output_dir: str | Path,
    critic_values: tuple[Sequence[int], Mapping[str, Sequence[float]], Sequence[bool]] | None = None,
) -> Path:
    """Everything a run leaves for a person in ``output_dir``: ``results.json``, the plots and
    ``report.md`` (which links the trajectory viewer, ``viewer.html``).

    Args:
        results: the run's results (:func:`digiq_trl.evaluation.evaluate_run` plus settings).
        output_dir: the run's folder; the critic's ``critic/log_history.json`` is read from it.
        critic_values: ``(step_ids, {"Q": ..., "V": ...}, success)`` of held-out steps, for the
            values plot (:func:`plot_values_by_step`); None leaves that plot out.

    Returns:
        The path of ``report.md``.
    """
    out = Path(output_dir)
    metric = results["metric"]
    plots = [plot_success_rates(results["methods"], out / f"{metric}.png", metric)]
    history_file = out / "critic" / "log_history.json"
    if history_file.exists():
        plots.append(plot_critic_losses(json.loads(history_file.read_text()), out / "critic_losses.png"))
    if critic_values is not None:
        plots.append(plot_values_by_step(*critic_values, out / "critic_values.png"))
    write_results(out / "results.json", results)
    report = out / "report.md"
    report.write_text(render_report(results, plots))
    return report
