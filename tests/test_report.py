"""Report outputs: JSON written atomically, plots are real PNGs, the numbers behind each plot match
hand-made inputs, and report.md names every figure for a person (no raw metric keys)."""

import json
import math
import re

import pytest
from datasets import Dataset
from PIL import Image

from digiq_trl.report import (
    advantage_histogram,
    best_of_n_stats,
    critic_loss_curves,
    episode_count,
    first_step_values,
    kind_rates,
    load_preparation,
    plot_advantage_histogram,
    plot_critic_losses,
    plot_first_step_values,
    plot_success_by_kind,
    plot_success_rates,
    plot_values_by_step,
    render_report,
    success_bars,
    v0_summary,
    write_results,
    write_run_report,
)


RESULTS = {
    "suite": "general",
    "metric": "success_rate",
    "eval_split": "test",
    "num_eval_episodes": 200,
    "seeds": [0, 1],
    "actor_seeds": [0],
    "methods": {
        "base": {"success_rate": 0.3, "stderr": 0.02, "pooled_stderr": 0.023, "per_seed": [0.28, 0.32],
                 "num_episodes": 400,
                 "by_kind": {"search": {"successes": 3, "episodes": 10}},
                 "generalization": {"success_rate": 0.1, "stderr": 0.03,
                                    "by_kind": {"search": {"successes": 2, "episodes": 20}}},
                 "probe": {"changed_vs_base": 0.0, "recall": {"enter": {"recall": 0.95, "count": 20}}}},
        "digiq": {"success_rate": 0.5, "stderr": 0.03, "per_seed": [0.47, 0.53],
                  "runs": [{"num_episodes": 400}, {"num_episodes": 400}],
                  "by_kind": {"search": {"successes": 5, "episodes": 10}, "open_app": {"successes": 1, "episodes": 2}},
                  "generalization": {"success_rate": 0.12, "stderr": 0.03},
                  "probe": {"changed_vs_base": 0.25, "recall": {"enter": {"recall": 0.9, "count": 20}}}},
    },
    "generalization_split": "heldout",
    "probe_states": 40,
    "config": {"advantage_threshold": 0.02, "anchor": "greedy", "num_candidates": 16,
               "critic_conservative_weight": 1.0},
    "critic": {"eval_loss": 1.12, "eval_ranking_accuracy": 0.979, "eval_v0_auroc": 0.566, "eval_runtime": 0.08,
               "eval_samples_per_second": 8526.4, "epoch": 33.33, "eval_q_loss": 0.5, "eval_new_metric": 0.25,
               "expert_vs_random_ranking": 0.952, "num_states": 467},
    "representation": {"eval_yes_no_accuracy": 0.8006, "eval_majority_rate": 0.519, "train_runtime": 109.6,
                       "total_flos": 3.1e12, "eval_entropy": 1.83, "labels_num_examples": 1480},
    "behavior_data": {"episodes": 400, "transitions": 3446, "success_rate": 0.2125},
    "timings_s": {"base_actor": 443.0, "critic": 21.0},
}

LOG_HISTORY = [
    {"loss": 2.0, "q_loss": 0.5, "v_loss": 0.3, "step": 10},
    {"loss": 1.0, "q_loss": 0.4, "v_loss": 0.1, "step": 20},
    {"eval_loss": 0.9, "eval_q_loss": 0.5, "eval_v_loss": 0.4, "step": 20},
    {"train_loss": 1.5, "train_runtime": 4.0, "step": 20},
    {"eval_loss": 0.8, "eval_q_loss": 0.5, "eval_v_loss": 0.3, "step": 20},
]

# Threshold 0.02: rows 0 and 2 are kept; row 1 and 5 are not above it, row 3 is negative, and row 4
# is above it but its chosen action did not parse (weight 0).
PREPARATION = {
    "chosen_advantage": [0.5, 0.01, 0.03, -0.2, 0.04, 0.02],
    "logged_advantage": [0.1, 0.01, 0.03, -0.3, 0.0, 0.02],
    "chosen_is_logged": [False, True, True, False, False, True],
    "weight": [1.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    "candidates": [["a", "b"], ["a"], ["a", "b", "c"], ["a", "b"], ["a", "b"], ["a"]],
}

CRITIC_VALUES = ([0, 1, 0, 1, 0], {"Q": [0.0] * 5, "V": [0.9, 0.5, 0.1, 0.0, 0.7]}, [True, True, False, False, True])


def test_write_results_round_trips(tmp_path) -> None:
    path = write_results(tmp_path / "results.json", RESULTS)
    assert json.loads(path.read_text()) == RESULTS
    assert not list(tmp_path.glob("*.tmp"))


def test_every_plot_is_a_png(tmp_path) -> None:
    paths = [
        plot_success_rates(RESULTS["methods"], tmp_path / "success.png", "success_rate", "test", "heldout"),
        plot_success_by_kind(RESULTS["methods"], tmp_path / "kinds.png"),
        plot_critic_losses(LOG_HISTORY, tmp_path / "losses.png", conservative_weight=1.0),
        plot_values_by_step(*CRITIC_VALUES, tmp_path / "values.png"),
        plot_first_step_values(*first_step_values(CRITIC_VALUES), tmp_path / "v0.png"),
        plot_advantage_histogram(PREPARATION, 0.02, tmp_path / "advantages.png"),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            low, high = image.convert("L").getextrema()
            assert high - low > 100, f"{path.name} is blank"


def test_success_bars_count_episodes_per_method_and_split() -> None:
    methods = RESULTS["methods"]
    assert success_bars(methods) == [("base", 0.3, 0.02, 400), ("digiq", 0.5, 0.03, 800)]
    assert success_bars(methods, generalization=True) == [("base", 0.1, 0.03, 20), ("digiq", 0.12, 0.03, None)]
    assert episode_count({"action_matching_accuracy": 0.4}) is None


def test_kind_rates_have_binomial_errors_and_counts() -> None:
    table = kind_rates(RESULTS["methods"])
    assert list(table) == ["open_app", "search"]
    rate, stderr, episodes = table["search"]["base"]
    assert (rate, episodes) == (0.3, 10) and stderr == pytest.approx(math.sqrt(0.3 * 0.7 / 10))
    assert table["open_app"] == {"digiq": (0.5, pytest.approx(math.sqrt(0.25 / 2)), 2)}


def test_critic_loss_curves_are_named_for_what_they_contain() -> None:
    curves = critic_loss_curves(LOG_HISTORY, conservative_weight=1.0)
    assert set(curves) == {
        "train objective: Q + V loss + conservative penalty × 1",
        "train Q loss (TD, both Q heads)",
        "train V loss (to target Q, both V heads)",
        "train conservative penalty × 1 (= objective - Q - V)",
        "held-out loss: Q + V (no penalty)",
        "held-out Q loss (TD)",
        "held-out V loss",
    }
    penalty = curves["train conservative penalty × 1 (= objective - Q - V)"]
    assert [step for step, _ in penalty] == [10, 20] and [v for _, v in penalty] == pytest.approx([1.2, 0.5])
    assert curves["held-out loss: Q + V (no penalty)"] == [(20, 0.8)]
    without = critic_loss_curves(LOG_HISTORY, conservative_weight=0.0)
    assert "train objective: Q + V loss" in without and not any("penalty" in k for k in without if "train" in k)


def test_critic_loss_curves_infer_the_penalty_without_a_configuration() -> None:
    inferred = critic_loss_curves(LOG_HISTORY)
    assert "train objective: Q + V loss + conservative penalty weighted" in inferred
    assert "train conservative penalty weighted (= objective - Q - V)" in inferred
    plain = [{"loss": 0.8, "q_loss": 0.5, "v_loss": 0.3, "step": 10}]
    assert set(critic_loss_curves(plain)) == {"train objective: Q + V loss", "train Q loss (TD, both Q heads)",
                                              "train V loss (to target Q, both V heads)"}


def test_advantage_histogram_counts_match_a_hand_made_preparation() -> None:
    stats = best_of_n_stats(PREPARATION, 0.02)
    assert (stats["states"], stats["kept"]) == (6, 2) and stats["share_kept"] == pytest.approx(1 / 3)
    assert stats["share_chosen_is_logged"] == pytest.approx(0.5)
    assert stats["mean_chosen_advantage"] == pytest.approx(0.4 / 6)
    assert stats["mean_logged_advantage"] == pytest.approx(-0.14 / 6)
    assert stats["mean_candidates"] == pytest.approx(11 / 6)
    edges, kept, dropped = advantage_histogram(PREPARATION["chosen_advantage"], [w != 0 for w in PREPARATION["weight"]],
                                               [-0.25, 0.0, 0.025, 0.05, 0.55])
    assert kept.tolist() == [0, 0, 1, 1] and dropped.tolist() == [1, 2, 1, 0]
    without_weights = {k: v for k, v in PREPARATION.items() if k != "weight"}
    assert best_of_n_stats(without_weights, 0.02)["kept"] == 3
    with pytest.raises(ValueError, match="threshold"):
        best_of_n_stats(without_weights)


def test_v0_of_successful_and_failed_episodes() -> None:
    v0, success = first_step_values(CRITIC_VALUES)
    assert v0 == [0.9, 0.1, 0.7] and success == [True, False, True]
    summary = v0_summary(v0, success)
    assert (summary["successful"], summary["failed"]) == (2, 1)
    assert summary["mean_successful"] == pytest.approx(0.8) and summary["auroc"] == 1.0


def test_report_tables_keep_their_format() -> None:
    text = render_report(RESULTS, {"success": "success_rate.png"})
    assert "| base actor | 30.0 | 2.0 | 2.3 | 400 | 28.0, 32.0 | 10.0 |" in text
    assert "| Digi-Q (Best-of-N) | 50.0 | 3.0 | - | 800 | 47.0, 53.0 | 12.0 |" in text
    assert "| search | 3/10 (30 %) | 5/10 (50 %) |" in text and "| open_app | - | 1/2 (50 %) |" in text
    assert "| enter (20) | 95 % | 90 % |" in text and "| changed vs base | 0 % | 25 % |" in text
    assert "![Success per method](success_rate.png)" in text


def test_best_of_n_section_prints_the_advantage_of_the_runs_critic() -> None:
    """The formula comes from the run's ``critic_v_target_combine`` (``min`` by default)."""
    stats = {0: best_of_n_stats(PREPARATION, 0.02)}
    assert "advantage A = min(Q1, Q2) - max(V1, V2)." in render_report(RESULTS, best_of_n=stats)
    independent = {**RESULTS, "config": {**RESULTS["config"], "critic_v_target_combine": "independent"}}
    assert "advantage A = max(Q1, Q2) - max(V1, V2)." in render_report(independent, best_of_n=stats)


def test_report_names_every_figure_for_a_person() -> None:
    text = render_report(RESULTS, best_of_n={0: best_of_n_stats(PREPARATION, 0.02)},
                         v0=first_step_values(CRITIC_VALUES))
    assert not re.search(r"\b(eval|train)_\w+", text), re.findall(r"\b(?:eval|train)_\w+", text)
    for hidden in ("runtime", "epoch", "33.33", "samples per second", "flos", "entropy"):
        assert hidden not in text
    assert "- held-out ranking accuracy (a successful episode's logged action scores above a random " \
           "alternative): 97.9 %" in text
    assert "(states the behavior policy visits on evaluation goals, 467 states): 95.2 %" in text
    assert "- held-out AUROC of V(s0) for episode success (0.5 = chance): 0.57" in text
    assert "- held-out new metric: 0.25" in text
    assert "- held-out actionability Yes/No accuracy: 80.1 %" in text and "- training labels: 1480" in text
    assert "- success rate of the behavior policy: 21.2 %" in text
    assert "mean 0.800 over the 2 successful, 0.100 over the 1 failed (AUROC 1.00)" in text
    assert "| 0 | 6 | 2 (33.3 %) | 50.0 % | 0.067 | -0.023 | 1.8 |" in text
    assert "when A > a_min = 0.02" in text and "imitate the base actor's greedy action instead" in text
    assert "| base actor | 443 s (7.4 min) |" in text and "| total | 464 s (7.7 min) |" in text


def test_write_run_report_writes_every_plot_and_section(tmp_path) -> None:
    (tmp_path / "critic").mkdir()
    (tmp_path / "critic" / "log_history.json").write_text(json.dumps(LOG_HISTORY))
    Dataset.from_dict({**PREPARATION, "goal": ["g"] * 6}).save_to_disk(str(tmp_path / "prep"))
    assert load_preparation(tmp_path / "prep") == PREPARATION
    report = write_run_report(RESULTS, tmp_path, CRITIC_VALUES, {0: tmp_path / "prep"}).read_text()
    for name in ("success_rate", "success_by_kind", "critic_losses", "critic_values", "critic_v0",
                 "best_of_n_advantages"):
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.format == "PNG"
        assert f"]({name}.png)" in report
    assert "| 0 | 6 | 2 (33.3 %) |" in report and "eval_" not in report
    assert json.loads((tmp_path / "results.json").read_text()) == RESULTS
