"""Report outputs: JSON written atomically, plots are real PNGs, the table lists every method."""

import json

from PIL import Image

from digiq_trl.report import (
    plot_critic_losses,
    plot_success_rates,
    plot_values_by_step,
    render_report,
    write_results,
)

RESULTS = {
    "suite": "general",
    "eval_split": "heldout",
    "num_eval_episodes": 200,
    "seeds": [0, 1],
    "methods": {
        "base": {"success_rate": 0.3, "stderr": 0.02, "pooled_stderr": 0.023, "per_seed": [0.28, 0.32],
                 "by_kind": {"search": {"successes": 3, "episodes": 10}},
                 "generalization": {"success_rate": 0.1},
                 "probe": {"changed_vs_base": 0.0, "recall": {"enter": {"recall": 0.95, "count": 20}}}},
        "digiq": {"success_rate": 0.5, "stderr": 0.03, "pooled_stderr": 0.025, "per_seed": [0.47, 0.53],
                  "by_kind": {"search": {"successes": 5, "episodes": 10}, "open_app": {"successes": 1, "episodes": 2}},
                  "generalization": {"success_rate": 0.12},
                  "probe": {"changed_vs_base": 0.25, "recall": {"enter": {"recall": 0.9, "count": 20}}}},
    },
    "generalization_split": "heldout",
    "probe_states": 40,
    "critic": {"auroc_v_s0": 0.81},
}


def test_write_results_round_trips(tmp_path) -> None:
    path = write_results(tmp_path / "results.json", RESULTS)
    assert json.loads(path.read_text()) == RESULTS
    assert not list(tmp_path.glob("*.tmp"))


def test_plots_are_pngs(tmp_path) -> None:
    paths = [
        plot_success_rates(RESULTS["methods"], tmp_path / "success.png"),
        plot_critic_losses(
            [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}, {"step": 2, "eval_loss": 0.6}],
            tmp_path / "losses.png",
        ),
        plot_values_by_step([0, 1, 0, 1], {"V": [0.2, 0.5, 0.1, 0.0]}, [True, True, False, False],
                            tmp_path / "values.png"),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 100


def test_report_table_has_every_method_and_plot() -> None:
    text = render_report(RESULTS, ["success.png"])
    assert "| base actor | 30.0 | 2.0 | 2.3 | 28.0, 32.0 | 10.0 |" in text
    assert "| Digi-Q (Best-of-N) | 50.0 |" in text
    assert "| search | 3/10 (30 %) | 5/10 (50 %) |" in text and "| open_app | - | 1/2 (50 %) |" in text
    assert "| enter (20) | 95 % | 90 % |" in text and "| changed vs base | 0 % | 25 % |" in text
    assert "auroc_v_s0: 0.81" in text and "![success](success.png)" in text
