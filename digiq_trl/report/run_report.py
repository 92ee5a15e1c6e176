"""Everything a run leaves for a person: ``results.json``, the plots and ``report.md``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .markdown import render_report
from .plots import (
    plot_advantage_histogram,
    plot_critic_losses,
    plot_first_step_values,
    plot_success_by_kind,
    plot_success_rates,
    plot_values_by_step,
)
from .tables import CriticValues, best_of_n_stats, first_step_values, load_preparation, write_results


def write_run_report(
    results: Mapping[str, Any],
    output_dir: str | Path,
    critic_values: CriticValues | None = None,
    preparations: Mapping[int, str | Path] | None = None,
) -> Path:
    """Everything a run leaves for a person in ``output_dir``: ``results.json``, the plots and
    ``report.md`` (which links the trajectory viewer, ``viewer.html``).

    Args:
        results: the run's results (:func:`digiq_trl.run_scoring.evaluate_run` plus settings; the
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
