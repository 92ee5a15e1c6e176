"""Best-of-N selection and weighting math on hand-made advantages."""

import math

import numpy as np
import pytest

from digiq_trl.best_of_n import (
    anchor_targets,
    candidate_list,
    check_anchor,
    masked_advantages,
    sample_weights,
    select_best,
    selection_stats,
    uses_critic,
    zero_invalid,
)


def test_select_best_is_argmax_of_advantage():
    adv = [0.1, 0.7, -0.3, 0.69]
    choice = select_best(adv, [True] * 4)
    assert choice.index == int(np.argmax(adv)) == 1
    assert choice.advantage == pytest.approx(0.7)
    assert choice.valid and choice.num_invalid == 0


def test_invalid_candidates_get_zero_advantage_and_are_counted():
    choice = select_best([0.9, -0.2, 0.3], [False, True, True])
    assert choice.index == 2
    assert choice.num_invalid == 1
    assert masked_advantages([0.9, -0.2], [False, True]).tolist() == [0.0, -0.2]


def test_invalid_wins_when_all_valid_are_negative():
    choice = select_best([-0.4, 5.0, -0.1], [True, False, True])
    assert (choice.index, choice.advantage, choice.valid) == (1, 0.0, False)


def test_all_invalid_candidates_do_not_crash():
    choice = select_best([3.0, -1.0, float("nan")], [False, False, False])
    assert choice.index == 0 and choice.advantage == 0.0
    assert not choice.valid and choice.num_invalid == 3
    assert zero_invalid(np.array([1.0]), [choice.valid]).tolist() == [0.0]


def test_ties_go_to_first_candidate_and_empty_raises():
    assert select_best([0.2, 0.2], [True, True]).index == 0
    with pytest.raises(ValueError, match="at least one"):
        select_best([], [])
    with pytest.raises(ValueError, match="validity"):
        select_best([0.1, 0.2], [True])


def test_candidate_list_puts_logged_first_and_dedupes():
    assert candidate_list("b", ["a", "b"], ["c", "a"]) == ["b", "a", "c"]
    assert candidate_list(None, ["a", "a"]) == ["a"]


def test_threshold_weights():
    w = sample_weights("threshold", [0.2, 0.1, 0.05, -1.0], advantage_threshold=0.1)
    assert w.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_awr_weights_are_exponential_and_clipped():
    w = sample_weights("awr", [0.0, 0.1, -0.2, 5.0, 1e6], awr_beta=0.1, awr_max_weight=20.0)
    expected = [1.0, math.e, math.exp(-2.0), 20.0, 20.0]
    assert w.tolist() == pytest.approx(expected)
    with pytest.raises(ValueError):
        sample_weights("awr", [0.0], awr_beta=0.0)


def test_pg_weights_are_the_advantages():
    assert sample_weights("pg", [0.3, -0.2]).tolist() == pytest.approx([0.3, -0.2])


def test_baseline_weights_need_no_advantages():
    rewards = [1.0, 0.0, 0.5]
    assert sample_weights("filtered_bc", trajectory_rewards=rewards).tolist() == [1.0, 0.0, 1.0]
    assert sample_weights("sft", trajectory_rewards=rewards).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="trajectory_rewards"):
        sample_weights("filtered_bc", advantages=[0.1])
    with pytest.raises(ValueError, match="advantages"):
        sample_weights("threshold", trajectory_rewards=rewards)


def test_unknown_weighting_and_uses_critic():
    with pytest.raises(ValueError, match="weighting must be one of"):
        sample_weights("best", [0.1])
    assert uses_critic("awr") and not uses_critic("filtered_bc") and not uses_critic("sft")


def test_selection_stats():
    stats = selection_stats(
        chosen_advantages=[0.3, 0.0],
        logged_advantages=[0.1, -0.1],
        chosen_is_logged=[False, True],
        num_proposals=[4, 6],
        num_invalid=[1, 4],
        advantage_threshold=0.1,
    )
    assert stats == pytest.approx(
        {
            "chosen_advantage": 0.15,
            "logged_advantage": 0.0,
            "frac_above_threshold": 0.5,
            "frac_invalid_candidates": 0.5,
            "frac_chosen_is_logged": 0.5,
        }
    )


def test_anchor_targets_replace_only_weight_zero_states():
    targets, weights = anchor_targets(["a", "b", "c", "d"], [1.0, 0.0, 0.5, 0.0], ["w", "x", "y", "z"], 0.25,
                                      [True, True, True, False])
    assert targets == ["a", "x", "c", "z"]
    assert weights.tolist() == [1.0, 0.25, 0.5, 0.0]  # an invalid anchor teaches nothing
    none_targets, none_weights = anchor_targets(["a", "b"], [1.0, 0.0], None, 1.0)
    assert none_targets == ["a", "b"] and none_weights.tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="anchor actions"):
        anchor_targets(["a"], [0.0], ["x", "y"], 1.0)
    with pytest.raises(ValueError, match="anchor_weight"):
        anchor_targets(["a"], [0.0], ["x"], -1.0)
    with pytest.raises(ValueError, match="anchor must be one of"):
        check_anchor("kl")
