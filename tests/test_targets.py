"""Hand-computed checks of the critic's pure math (digiq_trl.targets)."""

import math

import pytest
import torch
from torch import nn

from digiq_trl.targets import (
    ADVANTAGE_FORMULAS,
    advantage,
    advantage_formula,
    auroc,
    mc_targets,
    polyak_update,
    ranking_accuracy,
    ranking_scores,
    td_targets,
    v_targets,
)


def test_td_targets_hand_computed() -> None:
    reward = torch.tensor([0.0, 1.0, 0.5])
    done = torch.tensor([False, True, False])
    next_v1 = torch.tensor([0.8, 5.0, -0.2])
    next_v2 = torch.tensor([0.6, 5.0, 0.4])
    q1, q2 = td_targets(reward, done, next_v1, next_v2, gamma=0.95)
    # 0 + 0.95*0.8 ; done row ignores V(s') ; 0.5 + 0.95*(-0.2)
    assert q1.tolist() == pytest.approx([0.76, 1.0, 0.31])
    assert q2.tolist() == pytest.approx([0.57, 1.0, 0.88])
    assert not q1.requires_grad


def test_td_targets_accept_float_done_and_carry_no_grad() -> None:
    next_v = torch.tensor([2.0], requires_grad=True)
    q1, _ = td_targets(torch.tensor([1.0]), torch.tensor([0.0]), next_v, next_v, gamma=0.5)
    assert q1.item() == pytest.approx(2.0)
    assert not q1.requires_grad


def test_v_targets_min_and_independent() -> None:
    tq1, tq2 = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    v1, v2 = v_targets(tq1, tq2, "min")
    assert v1.tolist() == [0.5, -2.0] and v2.tolist() == [0.5, -2.0]
    v1, v2 = v_targets(tq1, tq2, "independent")
    assert v1.tolist() == [1.0, -2.0] and v2.tolist() == [0.5, 3.0]
    with pytest.raises(ValueError, match="combine"):
        v_targets(tq1, tq2, "mean")


def test_mc_targets_is_the_return_as_float() -> None:
    target = mc_targets(torch.tensor([0.9025, 0.0], dtype=torch.float16))
    assert target.dtype == torch.float32
    assert target.tolist() == pytest.approx([0.9025, 0.0], abs=1e-3)


def test_polyak_moves_target_by_exactly_tau() -> None:
    target, online = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        target.weight.copy_(torch.tensor([[1.0, 2.0]]))
        target.bias.fill_(0.0)
        online.weight.copy_(torch.tensor([[3.0, -2.0]]))
        online.bias.fill_(1.0)
    polyak_update(target, online, tau=0.1)
    assert target.weight[0].tolist() == pytest.approx([1.2, 1.6])
    assert target.bias.tolist() == pytest.approx([0.1])
    assert online.weight.tolist() == [[3.0, -2.0]]


def test_polyak_edge_cases_and_errors() -> None:
    target, online = nn.Linear(2, 1), nn.Linear(2, 1)
    before = target.weight.clone()
    polyak_update(target, online, tau=0.0)
    assert torch.equal(target.weight, before)
    polyak_update(target, online, tau=1.0)
    assert torch.equal(target.weight, online.weight)
    with pytest.raises(ValueError, match="tau"):
        polyak_update(target, online, tau=1.5)
    with pytest.raises(ValueError, match="shapes"):
        polyak_update(nn.Linear(3, 1), online, tau=0.1)


def test_advantage_is_max_q_minus_max_v() -> None:
    result = advantage(
        torch.tensor([1.0, 0.2]), torch.tensor([0.5, 0.4]),
        torch.tensor([0.3, 0.9]), torch.tensor([0.6, 0.1]),
    )
    assert result.tolist() == pytest.approx([0.4, -0.5])
    # V heads trained on min(Qbar1, Qbar2): the Q heads are combined by min, so their disagreement
    # (1.0 vs 0.5 in the first state) adds nothing
    pessimistic = advantage(
        torch.tensor([1.0, 0.2]), torch.tensor([0.5, 0.4]),
        torch.tensor([0.3, 0.9]), torch.tensor([0.6, 0.1]), combine="min",
    )
    assert pessimistic.tolist() == pytest.approx([-0.1, -0.7])
    with pytest.raises(ValueError, match="combine"):
        advantage(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), combine="mean")


@pytest.mark.parametrize("combine", sorted(ADVANTAGE_FORMULAS))
def test_advantage_formula_says_what_advantage_computes(combine: str) -> None:
    """The text cards and reports print is the formula :func:`advantage` computes, for every combine."""
    heads = {"Q1": 1.0, "Q2": 0.5, "V1": 0.3, "V2": 0.6}
    printed = eval(advantage_formula(combine), {"min": min, "max": max}, heads)
    computed = advantage(*(torch.tensor([value]) for value in heads.values()), combine=combine).item()
    assert printed == pytest.approx(computed)
    with pytest.raises(ValueError, match="combine"):
        advantage_formula("mean")


def test_auroc_hand_computed_with_ties() -> None:
    # positives {0.4, 0.8} vs negatives {0.1, 0.4}: pairs won 1 + 0.5 + 1 + 1 of 4
    assert auroc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert auroc([3.0, 2.0, 1.0], [1, 0, 0]) == 1.0
    assert auroc([1.0, 2.0, 3.0], [1, 0, 0]) == 0.0
    assert auroc([1.0, 1.0, 1.0, 1.0], [1, 0, 1, 0]) == 0.5
    assert math.isnan(auroc([1.0, 2.0], [1, 1]))
    with pytest.raises(ValueError):
        auroc([1.0, 2.0], [1])


def test_ranking_accuracy_with_ties_and_mask() -> None:
    logged = torch.tensor([1.0, 0.0, 5.0])
    alternatives = torch.tensor([[0.5, 2.0], [0.0, -1.0], [9.0, 9.0]])
    mask = torch.tensor([[True, True], [True, True], [False, False]])
    scores = ranking_scores(logged, alternatives, mask)
    assert scores[:2].tolist() == pytest.approx([0.5, 0.75])
    assert math.isnan(scores[2].item())
    assert ranking_accuracy(logged, alternatives, mask) == pytest.approx(0.625)
    assert math.isnan(ranking_accuracy(logged[2:], alternatives[2:], mask[2:]))


def test_conservative_penalty_by_hand() -> None:
    from digiq_trl.targets import conservative_penalty

    penalty = conservative_penalty(
        torch.tensor([1.0, 0.0, 3.0]),
        torch.tensor([[2.0, 0.0], [5.0, 9.0], [7.0, 7.0]]),
        torch.tensor([[True, True], [True, False], [False, False]]),
    )
    by_hand = (math.log(math.e**1 + math.e**2 + 1.0) - 1.0) + math.log(1.0 + math.e**5) + 0.0
    assert penalty.item() == pytest.approx(by_hand / 3, rel=1e-6)
