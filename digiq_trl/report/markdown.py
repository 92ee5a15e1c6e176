"""``report.md``: a run's results written for a person.

Every figure carries a readable name and unit, internal metric keys (``eval_runtime``,
``epoch``...) never appear, and each plot sits in the section it illustrates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .tables import METHOD_LABELS, METRIC_LABELS, episode_count, v0_summary


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
        results: the run's results (see :func:`~digiq_trl.report.write_run_report`).
        plots: plot files by role: ``success``, ``success_by_kind``, ``advantages``,
            ``critic_losses``, ``v0``, ``critic_values``; each is shown in its section.
        best_of_n: :func:`~digiq_trl.report.best_of_n_stats` per actor training seed of Digi-Q's preparation.
        v0: ``(V(s0) per held-out episode, success)``, from :func:`~digiq_trl.report.first_step_values`.
    """
    plots = plots or {}
    metric = results.get("metric", "success_rate")
    methods = results.get("methods", {})
    lines = [
        f"# Digi-Q run: {results.get('suite', '?')} suite",
        "",
        *(_offline_lines(results) if "offline_evaluation" in results else [
            f"Evaluation: {results.get('num_eval_episodes', '?')} episodes per evaluation seed on "
            f"`{results.get('eval_split', '?')}` goals, evaluation seeds {_join(results.get('seeds', []))}, "
            f"actor training seeds {_join(results.get('actor_seeds', []))}. The standard error is across evaluation "
            "seeds (binomial with one seed; across training seeds when there are several); the pooled one is "
            "binomial over all episodes."]),
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


def _offline_lines(results: Mapping[str, Any]) -> list[str]:
    """What the offline metric measures, on which steps, and the behavior policy's own score."""
    used = results["offline_evaluation"]
    return [
        f"Evaluation (offline, no device): how often each actor's action matches the logged one on the "
        f"{used['steps']} steps of the {used['episodes']} successful test episodes (of {used['of_episodes']}; "
        f"steps of failed episodes are left out: matching them would reward copying a failing policy). The "
        f"behavior policy that logged the data completed {100 * used['behavior_success_rate']:.1f} % of the test "
        f"episodes. Actor training seeds {_join(results.get('actor_seeds', []))}; the standard error is binomial "
        "over steps (across training seeds when there are several)."]


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
    from ..targets import advantage_formula

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
