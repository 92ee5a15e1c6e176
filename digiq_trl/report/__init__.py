"""Pipeline outputs a person reads: ``results.json``, ``report.md`` and PNG plots.

Three parts: the numbers behind every figure (:mod:`~digiq_trl.report.tables`: small pure
functions such as :func:`success_bars`, :func:`kind_rates`, :func:`critic_loss_curves`,
:func:`advantage_histogram`, :func:`best_of_n_stats`, :func:`first_step_values`, so they can be
checked on hand-made inputs), the matplotlib plots (:mod:`~digiq_trl.report.plots`, Agg backend, so
they work on headless machines and in CI) and ``report.md`` (:mod:`~digiq_trl.report.markdown`).
:func:`write_run_report` (:mod:`~digiq_trl.report.run_report`) writes them all for a run.

Example:
    >>> from digiq_trl.report import write_run_report  # doctest: +SKIP
    >>> write_run_report(results, "outputs/digiq-default")  # doctest: +SKIP
"""

from .markdown import render_report
from .plots import (
    plot_advantage_histogram,
    plot_critic_losses,
    plot_first_step_values,
    plot_success_by_kind,
    plot_success_rates,
    plot_values_by_step,
)
from .run_report import write_run_report
from .tables import (
    CriticValues,
    advantage_histogram,
    best_of_n_stats,
    critic_loss_curves,
    episode_count,
    first_step_values,
    kept_states,
    kind_rates,
    load_preparation,
    success_bars,
    v0_summary,
    write_results,
)


__all__ = [
    "CriticValues",
    "advantage_histogram",
    "best_of_n_stats",
    "critic_loss_curves",
    "episode_count",
    "first_step_values",
    "kept_states",
    "kind_rates",
    "load_preparation",
    "plot_advantage_histogram",
    "plot_critic_losses",
    "plot_first_step_values",
    "plot_success_by_kind",
    "plot_success_rates",
    "plot_values_by_step",
    "render_report",
    "success_bars",
    "v0_summary",
    "write_results",
    "write_run_report",
]
