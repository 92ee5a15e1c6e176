"""Pure math of the Digi-Q critic: TD and MC targets, Polyak averaging, advantages, quality metrics.

Everything here is a plain function of tensors (or sequences), with no model or trainer state, so
each formula can be checked on hand-computed numbers. The critic trainer and the Best-of-N actor
trainer both build on these.

Example:
    >>> import torch
    >>> q1, q2 = td_targets(torch.tensor([0.0, 1.0]), torch.tensor([False, True]),
    ...                     torch.tensor([0.5, 0.9]), torch.tensor([0.25, 0.9]), gamma=0.5)
    >>> q1.tolist(), q2.tolist()
    ([0.25, 1.0], [0.125, 1.0])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn


VTargetCombine = Literal["min", "independent"]
"""How V targets are built from the two target Q heads: their minimum, or one per head."""


def td_targets(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_v_target_1: torch.Tensor,
    next_v_target_2: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-step TD targets of the two Q heads: ``Q_i(s, a) <- r + gamma * (1 - done) * Vbar_i(s')``.

    Each Q head bootstraps from its own target V head, as in Digi-Q. ``done`` masks out the next
    state, so whatever features a terminal row carries for ``s'`` never leak into its target.
    The result carries no gradient.

    Args:
        reward: ``(B,)`` rewards of the transitions.
        done: ``(B,)`` bool or 0/1 tensor, true on the last step of an episode.
        next_v_target_1: ``(B,)`` first target V head evaluated on ``s'``.
        next_v_target_2: ``(B,)`` second target V head evaluated on ``s'``.
        gamma: discount factor in ``[0, 1]``.
    """
    not_done = 1.0 - done.to(reward.dtype)
    q1 = reward + gamma * not_done * next_v_target_1
    q2 = reward + gamma * not_done * next_v_target_2
    return q1.detach(), q2.detach()


def v_targets(
    target_q1: torch.Tensor, target_q2: torch.Tensor, combine: VTargetCombine = "min"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the two V heads from the target Q heads on the logged action: ``V_i(s) <- Qbar(s, a)``.

    Args:
        target_q1: ``(B,)`` first target Q head on ``(s, a_data)``.
        target_q2: ``(B,)`` second target Q head on ``(s, a_data)``.
        combine: ``"min"`` regresses both V heads to ``min(Qbar_1, Qbar_2)`` (pessimistic, fights
            over-estimation); ``"independent"`` regresses ``V_i`` to ``Qbar_i``.
    """
    if combine == "min":
        both = torch.minimum(target_q1, target_q2).detach()
        return both, both
    if combine == "independent":
        return target_q1.detach(), target_q2.detach()
    raise ValueError(f"combine must be 'min' or 'independent', got {combine!r}")


def mc_targets(mc_return: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo regression target shared by all four heads: the discounted return, as float.

    The alternative to TD in Digi-Q: no bootstrapping, so no target networks are needed, at the price
    of the behavior policy's variance in the targets.
    """
    return mc_return.float().detach()


@torch.no_grad()
def polyak_update(
    target: nn.Module | Iterable[torch.Tensor],
    online: nn.Module | Iterable[torch.Tensor],
    tau: float,
) -> None:
    """Move ``target`` towards ``online`` in place: ``target <- (1 - tau) * target + tau * online``.

    ``tau = 1`` copies ``online``; ``tau = 0`` leaves ``target`` unchanged. Modules are matched
    parameter by parameter in registration order and must have the same structure.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    target_params = list(target.parameters() if isinstance(target, nn.Module) else target)
    online_params = list(online.parameters() if isinstance(online, nn.Module) else online)
    if len(target_params) != len(online_params):
        raise ValueError(
            f"target has {len(target_params)} parameters but online has {len(online_params)}"
        )
    for target_param, online_param in zip(target_params, online_params):
        if target_param.shape != online_param.shape:
            raise ValueError(
                f"parameter shapes differ: target {tuple(target_param.shape)} vs online "
                f"{tuple(online_param.shape)}"
            )
        target_param.lerp_(online_param.to(target_param.dtype), tau)


def advantage(
    q1: torch.Tensor, q2: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor, combine: VTargetCombine = "independent"
) -> torch.Tensor:
    """Digi-Q's advantage of an action, used to pick Best-of-N actions, on the scale the V heads learned.

    ``combine`` is how the V heads were trained (:func:`v_targets`). With ``"independent"`` targets
    (``V_i <- Qbar_i(s, a_data)``) it is the paper's ``max(Q1, Q2) - max(V1, V2)``. With ``"min"``
    targets both V heads learn ``min(Qbar1, Qbar2)(s, a_data)``, so the Q heads are combined the
    same way: ``min(Q1, Q2) - max(V1, V2)``. Either way the logged action's advantage is centred on
    0, and a disagreement between the two Q heads (large where the data says little, e.g. on
    actions no logged state resembles) never counts as an advantage.

    Example:
        >>> q1, q2, v = torch.tensor([0.5]), torch.tensor([0.3]), torch.tensor([0.3])
        >>> advantage(q1, q2, v, v).item(), round(advantage(q1, q2, v, v, "min").item(), 6)
        (0.2, 0.0)
    """
    if combine == "min":
        return torch.minimum(q1, q2) - torch.maximum(v1, v2)
    if combine == "independent":
        return torch.maximum(q1, q2) - torch.maximum(v1, v2)
    raise ValueError(f"combine must be 'min' or 'independent', got {combine!r}")


ADVANTAGE_FORMULAS: dict[str, str] = {
    "min": "min(Q1, Q2) - max(V1, V2)",
    "independent": "max(Q1, Q2) - max(V1, V2)",
}
"""The advantage :func:`advantage` computes, as text, for each way the V heads were trained."""


def advantage_formula(combine: VTargetCombine) -> str:
    """The advantage formula for V heads trained with ``combine`` (what cards and reports print).

    Example:
        >>> advantage_formula("independent")
        'max(Q1, Q2) - max(V1, V2)'
    """
    if combine not in ADVANTAGE_FORMULAS:
        raise ValueError(f"combine must be 'min' or 'independent', got {combine!r}")
    return ADVANTAGE_FORMULAS[combine]


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    group_ranks = starts + (counts + 1) / 2.0
    return group_ranks[inverse.reshape(-1)]


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U, ties count half).

    Equals the probability that a random positive scores above a random negative. Returns ``nan``
    when only one class is present, since the AUROC is undefined then.

    Example:
        >>> auroc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1])
        0.875
    """
    scores_arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels_arr = np.asarray(labels).astype(bool).reshape(-1)
    if scores_arr.shape != labels_arr.shape:
        raise ValueError(f"scores has {scores_arr.size} items but labels has {labels_arr.size}")
    n_pos = int(labels_arr.sum())
    n_neg = labels_arr.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores_arr)
    u_statistic = ranks[labels_arr].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def ranking_scores(
    q_logged: torch.Tensor, q_alternatives: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Per state, the fraction of alternatives whose Q the logged action's Q beats (ties count half).

    Args:
        q_logged: ``(N,)`` Q of the logged action in each state.
        q_alternatives: ``(N, K)`` Q of K alternative actions per state (padded).
        mask: ``(N, K)`` bool, true where an alternative exists; all true when omitted.

    Returns:
        ``(N,)`` scores in ``[0, 1]``; ``nan`` for states without any alternative.
    """
    if mask is None:
        mask = torch.ones_like(q_alternatives, dtype=torch.bool)
    logged = q_logged.unsqueeze(-1)
    wins = (logged > q_alternatives).float() + 0.5 * (logged == q_alternatives).float()
    wins = wins * mask.float()
    counts = mask.float().sum(-1)
    scores = wins.sum(-1) / counts.clamp(min=1.0)
    return torch.where(counts > 0, scores, torch.full_like(scores, float("nan")))


def ranking_accuracy(
    q_logged: torch.Tensor, q_alternatives: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """How often the critic ranks the logged action above the alternatives, averaged over states.

    The mean of :func:`ranking_scores` over the states that have at least one alternative; with one
    alternative per state this is the fraction of states where ``Q(s, logged) > Q(s, alternative)``.
    Returns ``nan`` when no state has an alternative.

    Example:
        >>> import torch
        >>> ranking_accuracy(torch.tensor([1.0, 0.0]), torch.tensor([[0.5, 2.0], [-1.0, -1.0]]))
        0.75
    """
    scores = ranking_scores(q_logged, q_alternatives, mask)
    valid = ~torch.isnan(scores)
    if not bool(valid.any()):
        return float("nan")
    return float(scores[valid].mean())


def conservative_penalty(q_logged: torch.Tensor, q_alternatives: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over states of ``logsumexp(Q(s, a_data), Q(s, alt_1..K)) - Q(s, a_data)`` (CQL-style).

    Non-negative, and near 0 once the logged action's Q clearly exceeds every alternative's, so it
    pushes down actions the data never took without driving them to minus infinity; only valid
    alternatives count (a state without any contributes 0).

    Args:
        q_logged: ``(B,)`` or ``(B, 1)`` values of the logged actions.
        q_alternatives: ``(B, K)`` or ``(B, K, 1)`` values of alternative actions.
        mask: ``(B, K)``, True where an alternative exists.

    Example:
        >>> round(conservative_penalty(torch.tensor([0.0]), torch.tensor([[0.0]]),
        ...                            torch.tensor([[True]])).item(), 4)  # log 2
        0.6931
    """
    logged = q_logged.reshape(-1, 1)
    alternatives = q_alternatives.reshape(mask.shape).masked_fill(~mask, float("-inf"))
    return (torch.logsumexp(torch.cat([logged, alternatives], dim=1), dim=1) - logged.squeeze(1)).mean()
