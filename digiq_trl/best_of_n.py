"""Pure math of Best-of-N policy extraction: candidate lists, argmax selection, sample weights.

Stage 4 of Digi-Q: for each logged state, N candidate actions are scored by the critic's advantage
``A(s, a)`` (the formula its V heads were trained for: :func:`digiq_trl.targets.advantage_formula`);
the argmax becomes the imitation target, weighted by one of the schemes below. Everything here is a
plain function of lists and arrays (no model, no trainer), so each rule can be checked on hand-made
numbers.

Example:
    >>> choice = select_best([0.2, -0.1, 0.5], [True, True, False])
    >>> choice.index, choice.advantage, choice.num_invalid
    (0, 0.2, 1)
    >>> sample_weights("threshold", [0.2, 0.05], advantage_threshold=0.1).tolist()
    [1.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


WEIGHTINGS: tuple[str, ...] = ("threshold", "awr", "pg", "filtered_bc", "sft")
"""All weighting schemes; the first three use the critic, the last two are the paper's baselines."""

CRITIC_WEIGHTINGS: tuple[str, ...] = ("threshold", "awr", "pg")
"""Schemes that imitate the critic's Best-of-N choice; the others imitate the logged action."""


def uses_critic(weighting: str) -> bool:
    """Whether ``weighting`` needs candidates scored by a critic (else it imitates logged actions)."""
    return weighting in CRITIC_WEIGHTINGS


def check_weighting(weighting: str) -> None:
    """Raise a ``ValueError`` naming the allowed schemes when ``weighting`` is unknown."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def candidate_list(logged: str | None, *sources: Sequence[str]) -> list[str]:
    """One state's candidates, duplicates removed, in first-seen order.

    The logged action (when given) comes first, so argmax ties (e.g. several candidates at A = 0)
    resolve to it rather than to an unseen action. Scoring each distinct string once also saves
    critic features: a sharp policy samples the same action many times.
    """
    ordered = ([logged] if logged is not None else []) + [a for source in sources for a in source]
    return list(dict.fromkeys(ordered))


def supported(samples: Sequence[str], min_count: int) -> list[str]:
    """The samples drawn at least ``min_count`` times, each once, in first-seen order.

    A policy's rare samples (a garbled typed text, a tap nowhere near an element) are actions the
    offline data hardly shows, so a critic's value for them is a guess; asking for ``min_count``
    draws out of N keeps Best-of-N among the actions the policy itself stands behind.

    Example:
        >>> supported(["back", "tap", "back", "type x"], 2)
        ['back']
    """
    counts: dict[str, int] = {}
    for sample in samples:
        counts[sample] = counts.get(sample, 0) + 1
    return [sample for sample, count in counts.items() if count >= min_count]


@dataclass(frozen=True)
class Choice:
    """The Best-of-N choice for one state.

    Attributes:
        index: position of the chosen candidate in the state's candidate list.
        advantage: its advantage (0.0 for an unparsable candidate).
        valid: whether the chosen candidate parses as an action.
        num_invalid: how many candidates of the state did not parse.
    """

    index: int
    advantage: float
    valid: bool
    num_invalid: int


def masked_advantages(advantages: Sequence[float], valid: Sequence[bool]) -> np.ndarray:
    """The advantages with every unparsable candidate's set to 0, as in the reference."""
    adv = np.asarray(advantages, dtype=np.float64).reshape(-1)
    mask = np.asarray(valid, dtype=bool).reshape(-1)
    if adv.shape != mask.shape:
        raise ValueError(f"{adv.size} advantages but {mask.size} validity flags")
    return np.where(mask, adv, 0.0)


def select_best(advantages: Sequence[float], valid: Sequence[bool]) -> Choice:
    """Pick the candidate with the highest advantage; unparsable candidates count as A = 0.

    Ties go to the earliest candidate. An unparsable candidate can win (when every valid one has
    A < 0, or none is valid); :func:`sample_weights` callers should then give the sample weight 0
    (see :func:`zero_invalid`), since imitating an unparsable string teaches nothing useful.

    Raises:
        ValueError: the state has no candidate at all.
    """
    adv = masked_advantages(advantages, valid)
    if adv.size == 0:
        raise ValueError("a state needs at least one candidate action")
    index = int(np.argmax(adv))
    mask = np.asarray(valid, dtype=bool).reshape(-1)
    return Choice(index, float(adv[index]), bool(mask[index]), int((~mask).sum()))


def sample_weights(
    weighting: str,
    advantages: Sequence[float] | np.ndarray | None = None,
    trajectory_rewards: Sequence[float] | np.ndarray | None = None,
    *,
    advantage_threshold: float = 0.1,
    awr_beta: float = 0.1,
    awr_max_weight: float = 20.0,
) -> np.ndarray:
    """Per-sample loss weights of the imitated actions.

    * ``threshold``: ``1[A > advantage_threshold]`` (Digi-Q's default).
    * ``awr``: ``min(exp(A / awr_beta), awr_max_weight)`` (advantage-weighted regression).
    * ``pg``: ``A`` (a policy-gradient-like weight; negative A pushes the action's likelihood down).
    * ``filtered_bc``: ``1`` when the logged action's trajectory succeeded (reward > 0), else 0.
    * ``sft``: ``1`` for every logged action.

    Args:
        weighting: one of :data:`WEIGHTINGS`.
        advantages: advantages of the chosen actions (needed by the critic schemes).
        trajectory_rewards: total rewards of the trajectories (needed by ``filtered_bc``; for
            ``sft`` only their count is used when ``advantages`` is absent).
        advantage_threshold: ``a_min`` of ``threshold``.
        awr_beta: temperature of ``awr``; must be positive.
        awr_max_weight: clip of ``awr`` weights; must be positive.
    """
    if weighting in CRITIC_WEIGHTINGS:
        if advantages is None:
            raise ValueError(f"weighting {weighting!r} needs advantages")
        adv = np.asarray(advantages, dtype=np.float64).reshape(-1)
        if weighting == "threshold":
            return (adv > advantage_threshold).astype(np.float64)
        if weighting == "awr":
            if awr_beta <= 0 or awr_max_weight <= 0:
                raise ValueError(f"awr_beta and awr_max_weight must be > 0, got {awr_beta}, {awr_max_weight}")
            return np.exp(np.minimum(adv / awr_beta, np.log(awr_max_weight)))
        return adv.copy()
    if weighting == "filtered_bc":
        if trajectory_rewards is None:
            raise ValueError("weighting 'filtered_bc' needs trajectory_rewards")
        return (np.asarray(trajectory_rewards, dtype=np.float64).reshape(-1) > 0).astype(np.float64)
    check_weighting(weighting)  # "sft", or a name that is none of them
    count = trajectory_rewards if trajectory_rewards is not None else advantages
    if count is None:
        raise ValueError("weighting 'sft' needs trajectory_rewards (or advantages) to count the samples")
    return np.ones(len(count), dtype=np.float64)


def zero_invalid(weights: np.ndarray, valid: Sequence[bool]) -> np.ndarray:
    """``weights`` with the samples whose imitated action does not parse set to 0."""
    return np.where(np.asarray(valid, dtype=bool).reshape(-1), weights, 0.0)


def selection_stats(
    chosen_advantages: Sequence[float],
    logged_advantages: Sequence[float],
    chosen_is_logged: Sequence[bool],
    num_proposals: Sequence[int],
    num_invalid: Sequence[int],
    advantage_threshold: float,
) -> dict[str, float]:
    """Summary of a Best-of-N preparation, for the trainer's logs.

    Returns:
        ``chosen_advantage`` and ``logged_advantage`` (means), ``frac_above_threshold`` (states
        whose chosen A exceeds the threshold), ``frac_invalid_candidates`` (over all candidates,
        duplicates included), ``frac_chosen_is_logged``.
    """
    chosen = np.asarray(chosen_advantages, dtype=np.float64)
    total = int(np.sum(num_proposals))
    return {
        "chosen_advantage": float(chosen.mean()) if chosen.size else float("nan"),
        "logged_advantage": float(np.mean(logged_advantages)) if len(logged_advantages) else float("nan"),
        "frac_above_threshold": float((chosen > advantage_threshold).mean()) if chosen.size else float("nan"),
        "frac_invalid_candidates": float(np.sum(num_invalid) / total) if total else float("nan"),
        "frac_chosen_is_logged": float(np.mean(chosen_is_logged)) if len(chosen_is_logged) else float("nan"),
    }


ANCHORS: tuple[str, ...] = ("none", "logged", "greedy")
"""What a state imitates when its own target has weight 0 (see :func:`anchor_targets`)."""


def check_anchor(anchor: str) -> None:
    """Raise a ``ValueError`` naming the allowed anchors when ``anchor`` is unknown."""
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")


def anchor_targets(
    chosen: Sequence[str],
    weights: Sequence[float] | np.ndarray,
    anchors: Sequence[str] | None,
    anchor_weight: float,
    anchor_valid: Sequence[bool] | None = None,
) -> tuple[list[str], np.ndarray]:
    """The action every state is trained on, and its loss weight.

    A state whose imitation weight is non-zero (a Best-of-N choice above the threshold, a logged
    action of a successful trajectory) keeps it. Every other state imitates its ``anchors`` action
    (the logged action, or the starting policy's greedy one) with ``anchor_weight``, so training
    sees the whole offline dataset and keeps what the imitated states rarely show (e.g. the ENTER
    press that submits every search). ``anchors=None`` leaves the weights as they are. An anchor
    flagged invalid in ``anchor_valid`` gets weight 0.

    Example:
        >>> targets, w = anchor_targets(["a", "b", "c"], [1.0, 0.0, 0.0], ["x", "y", "z"], 0.5, [True, True, False])
        >>> targets, w.tolist()
        (['a', 'y', 'z'], [1.0, 0.5, 0.0])
    """
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(chosen) != weights.size:
        raise ValueError(f"{len(chosen)} chosen actions but {weights.size} weights")
    if anchors is None:
        return list(chosen), weights.copy()
    if len(anchors) != weights.size:
        raise ValueError(f"{len(anchors)} anchor actions but {weights.size} weights")
    if anchor_weight < 0:
        raise ValueError(f"anchor_weight must be >= 0, got {anchor_weight}")
    valid = np.ones(weights.size, bool) if anchor_valid is None else np.asarray(anchor_valid, dtype=bool)
    own = weights != 0
    targets = [c if keep else a for c, a, keep in zip(chosen, anchors, own)]
    return targets, np.where(own, weights, np.where(valid, anchor_weight, 0.0))
