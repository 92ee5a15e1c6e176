"""What the simulator expert says about a critic and Best-of-N policy extraction.

In the simulated phone every state has an expert action, so the critic's rankings and the
candidates Best-of-N extraction chooses from can be checked against it: does the critic rank the
expert's action above random ones (:func:`critic_expert_ranking`) or a right typed query above
wrong ones (:func:`typed_query_ranking`), can Best-of-N improve an actor at all
(:func:`best_of_n_headroom`), and what would a perfect critic teach (:func:`oracle_targets`).
``digiq-trl diagnose`` runs them on a pipeline run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .actions import ActionType, DeviceAction, actions_match, format_action, parse_action, try_parse_action
from .envs.collect import Step, run_episodes
from .envs.device import dismisses
from .envs.phone import PhoneEnv
from .envs.policies import Policy
from .envs.tasks import query_matches


if TYPE_CHECKING:
    from datasets import Dataset

RELABELED_COLUMN = "relabeled"
"""Column of :func:`oracle_targets`' datasets: whether the oracle gave the state an action to imitate."""


def critic_expert_ranking(
    scorer: Any,
    suite: str,
    policy: Policy,
    split: str = "heldout",
    num_episodes: int = 50,
    num_alternatives: int = 4,
    seed: int = 0,
    **env_kwargs: Any,
) -> dict[str, float]:
    """How often the critic ranks the simulator expert's action above random actions.

    The states are those ``policy`` visits (e.g. the behavior policy, so they look like the
    critic's data); in each, ``Q = max(Q1, Q2)`` of the expert's next action is compared with that
    of ``num_alternatives`` uniformly random actions (ties count half). ``scorer`` is a
    :class:`~digiq_trl.models.scoring.CriticScorer` (or anything with its ``score``).

    Returns:
        ``expert_vs_random_ranking`` (mean over states) and ``num_states``.
    """
    import numpy as np
    import torch

    from .envs.policies import random_action
    from .targets import ranking_scores

    rng = np.random.default_rng(seed)
    env = PhoneEnv(suite=suite, split=split, **env_kwargs)
    steps = [s for s in run_episodes(env, policy, num_episodes, seed=seed) if not s.info.get("success")]
    scores: list[torch.Tensor] = []
    for start in range(0, len(steps), 16):
        chunk = steps[start : start + 16]
        actions = [
            [s.info["expert_action"]]
            + [format_action(random_action(rng, s.observation["goal"])) for _ in range(num_alternatives)]
            for s in chunk
        ]
        q = torch.as_tensor(np.stack([state.q for state in _score_steps(scorer, chunk, actions)]))
        scores.append(ranking_scores(q[:, 0], q[:, 1:]))
    ranking = torch.cat(scores)
    return {"expert_vs_random_ranking": float(ranking.mean()), "num_states": int(ranking.numel())}


def _score_steps(scorer: Any, steps: Sequence[Step], actions: Sequence[Sequence[str]]) -> list[Any]:
    """The scorer's :class:`~digiq_trl.models.scoring.Scores` of ``actions`` in the states of ``steps``."""
    observations = [s.observation for s in steps]
    return scorer.score([o["image"] for o in observations], [o["goal"] for o in observations],
                        [o["history"] for o in observations], actions)


def expert_agrees(action: DeviceAction | None, expert: DeviceAction, ui_boxes: Sequence[Sequence[float]],
                  overlay: str = "") -> bool:
    """Whether ``action`` does what the simulator expert's ``expert`` action does on this screen.

    :func:`~digiq_trl.actions.actions_match` with the screen's element boxes, except for TYPE: there
    the simulator's own query test (:func:`~digiq_trl.envs.tasks.query_matches`, every key term of
    the expert's text) replaces the AitW containment rule, which would accept a typed prefix such
    as ``"capital"`` for ``"capital Panama"``. While an interruption (``overlay``) is shown, exactly
    the actions that close it (:func:`~digiq_trl.envs.device.dismisses`) do what the expert does (the
    box rule would accept any tap on an ad, which opens the ad's page instead).
    """
    if overlay:
        return dismisses(action, overlay)
    if action is not None and action.action_type == expert.action_type == ActionType.TYPE:
        return query_matches(action.typed_text, expert.typed_text)
    return actions_match(action, expert, ui_boxes)


STATE_CLASSES = {"overlay shown": "overlay", "moved element": "expert_target_moved"}
"""The target phone's state classes and the ``info`` field that marks each."""


def state_classes(info: dict[str, Any]) -> list[str]:
    """The target-phone state classes a state belongs to: an interruption on screen
    (``overlay shown``), the expert's next tap on an element the drift moved (``moved element``).

    Example:
        >>> state_classes({"overlay": "consent", "expert_target_moved": False})
        ['overlay shown']
    """
    return [name for name, key in STATE_CLASSES.items() if info.get(key)]


@dataclass
class SampledState:
    """A state the actor visited, its candidate actions (its own first), and which are right."""

    step: Step
    candidates: list[str]
    parsed: list[DeviceAction | None]
    expert: DeviceAction
    right: list[bool]


def sampled_states(
    actor: Any,
    suite: str,
    num_candidates: int,
    temperature: float,
    split: str,
    num_episodes: int,
    every: int = 1,
    seed: int = 0,
    chunk_size: int = 8,
    **env_kwargs: Any,
) -> Iterator[list[SampledState]]:
    """Let ``actor`` play and draw Best-of-N candidates on every ``every``-th state it visits.

    The actor plays with its ``act``; candidates are its own action followed by
    ``num_candidates`` draws of its ``sample`` (as :class:`~digiq_trl.models.policy.VLMPolicy`
    does), and each is checked against the simulator expert with :func:`expert_agrees`. Yields
    chunks of ``chunk_size`` states, so a VLM samples and a critic scores in batches.
    """
    env = PhoneEnv(suite=suite, split=split, **env_kwargs)
    steps = list(run_episodes(env, actor, num_episodes, seed=seed))[::every]
    for start in range(0, len(steps), chunk_size):
        chunk = steps[start : start + chunk_size]
        samples = actor.sample([s.observation for s in chunk], num_candidates, temperature)
        states = []
        for step, more in zip(chunk, samples):
            candidates = [step.action, *more]
            parsed = [try_parse_action(a) for a in candidates]
            expert = parse_action(step.info["expert_action"])
            right = [expert_agrees(p, expert, step.info["ui_boxes"], step.info.get("overlay", "")) for p in parsed]
            states.append(SampledState(step, candidates, parsed, expert, right))
        yield states


def best_of_n_headroom(
    scorer: Any,
    suite: str,
    actor: Any,
    num_candidates: int = 16,
    temperature: float = 1.0,
    split: str = "heldout",
    num_episodes: int = 50,
    every: int = 3,
    seed: int = 0,
    **env_kwargs: Any,
) -> dict[str, dict[str, float]]:
    """Can Best-of-N improve this actor? Greedy vs best-possible vs critic-chosen candidates.

    The actor plays ``num_episodes`` episodes; on every ``every``-th state visited it draws
    ``num_candidates`` samples and its own action is added first, as the trainer adds the logged
    one (:func:`sampled_states`). Each state then counts whether the simulator expert agrees
    (:func:`expert_agrees`) with the actor's own action (``greedy``), any candidate (``any``: the
    most Best-of-N can reach) and the candidate of highest advantage (``critic``: what Digi-Q
    imitates; :func:`~digiq_trl.best_of_n.select_best`). ``critic`` well below ``any`` says the
    critic is the bottleneck; ``any`` close to ``greedy`` says the candidates are.

    Returns:
        Per expert action type, per state class of the target phone (:func:`state_classes`:
        ``overlay shown``, ``moved element``) and ``"all"``: ``greedy``, ``any``, ``critic`` (fractions
        of states) and ``num_states``.
    """
    import numpy as np

    from .best_of_n import select_best

    hits: dict[str, list[tuple[bool, bool, bool]]] = {}
    everything = []
    for chunk in sampled_states(actor, suite, num_candidates, temperature, split, num_episodes, every, seed,
                                **env_kwargs):
        scored = _score_steps(scorer, [s.step for s in chunk], [s.candidates for s in chunk])
        for sampled, state in zip(chunk, scored):
            best = select_best(state.advantage, [p is not None for p in sampled.parsed]).index
            right = sampled.right
            row = (right[0], any(right), right[best])
            everything.append(row)
            for name in (sampled.expert.action_type.name, *state_classes(sampled.step.info)):
                hits.setdefault(name, []).append(row)
    hits["all"] = everything
    return {
        name: {**dict(zip(("greedy", "any", "critic"), np.mean(rows, axis=0).tolist())), "num_states": len(rows)}
        for name, rows in hits.items() if rows
    }


def typed_query_ranking(
    scorer: Any,
    suite: str,
    actor: Any,
    num_candidates: int = 16,
    temperature: float = 1.0,
    split: str = "test",
    num_episodes: int = 100,
    seed: int = 0,
    **env_kwargs: Any,
) -> dict[str, float]:
    """Can the critic tell a right typed query from a wrong one? On the typing states the actor
    visits (the expert's next action is TYPE), the expert's query is scored beside the actor's
    candidates; each wrong typed candidate (:func:`expert_agrees` false) is a comparison.

    Returns:
        ``expert_above_wrong``: per state, the share of wrong typed candidates whose ``max(Q1, Q2)``
        the expert's query beats (ties half), averaged over states with at least one;
        ``expert_above_all_wrong``: the share of those states where it beats every one of them;
        ``states`` and ``comparisons``.
    """
    per_state, best = [], []
    comparisons = 0
    for chunk in sampled_states(actor, suite, num_candidates, temperature, split, num_episodes, 1, seed,
                                **env_kwargs):
        typing = [s for s in chunk if s.expert.action_type == ActionType.TYPE]
        wrong = [[c for c, p, ok in zip(s.candidates, s.parsed, s.right)
                  if p is not None and p.action_type == ActionType.TYPE and not ok] for s in typing]
        kept = [(s, w) for s, w in zip(typing, wrong) if w]
        if not kept:
            continue
        actions = [[format_action(s.expert), *w] for s, w in kept]
        for scores in _score_steps(scorer, [s.step for s, _ in kept], actions):
            wins = (scores.q[0] > scores.q[1:]) + 0.5 * (scores.q[0] == scores.q[1:])
            per_state.append(float(wins.mean()))
            best.append(bool(wins.min() == 1.0))
            comparisons += len(wins)
    return {"expert_above_wrong": float(sum(per_state) / len(per_state)) if per_state else float("nan"),
            "expert_above_all_wrong": float(sum(best) / len(best)) if best else float("nan"),
            "states": len(per_state), "comparisons": comparisons}


def oracle_targets(
    states: Dataset, candidates: Sequence[Sequence[str]], infos: Sequence[dict[str, Any]]
) -> dict[str, Dataset]:
    """What policy extraction could teach with a perfect critic, on the actor stage's own states.

    Returns two relabeled copies of ``states`` (the actor stage's training transitions, with
    ``ui_boxes``) to train with the actor stage's trainer, ``weighting="filtered_bc"`` and its
    anchor. Each has a boolean :data:`RELABELED_COLUMN`: whether the oracle found an action for the
    state. ``filtered_bc`` imitates the ``action`` of rows whose ``trajectory_reward`` is positive
    and the anchor elsewhere, so ``trajectory_reward`` is set from that flag (1 relabeled, 0 not):
    in these copies it is the trainer's filter, not a trajectory's reward.

    * ``"best_of_n"``: ``action`` is the first of the state's ``candidates`` (its Best-of-N
      candidates, logged action first) that the simulator expert agrees with
      (:func:`expert_agrees`, with the state's interruption); states with no such candidate are
      not relabeled. What Digi-Q imitates with a perfect critic.
    * ``"expert"``: ``action`` is the expert's in every state (all relabeled): what any critic over
      any number of candidates could at most teach from these states.

    ``infos`` are the simulator's infos of the states (:func:`~digiq_trl.envs.collect.replay_infos`):
    their ``expert_action`` and ``overlay``.

    If the actor trained on ``"expert"`` is no better than the base actor, no critic can make
    Best-of-N extraction beat it from these states.
    """
    if not len(states) == len(candidates) == len(infos):
        raise ValueError(f"{len(states)} states, {len(candidates)} candidate lists and {len(infos)} infos")
    experts = [info["expert_action"] for info in infos]
    picks: list[str] = []
    found: list[bool] = []
    for cands, info, row_boxes in zip(candidates, infos, states["ui_boxes"]):
        wanted = parse_action(info["expert_action"])
        right = [c for c in cands if expert_agrees(try_parse_action(c), wanted, row_boxes, info.get("overlay", ""))]
        picks.append(right[0] if right else info["expert_action"])
        found.append(bool(right))
    base = states.remove_columns(["action", "trajectory_reward"])

    def relabel(actions: list[str], flags: list[bool]) -> Dataset:
        with_action = base.add_column("action", actions)
        filtered = with_action.add_column("trajectory_reward", [1.0 if flag else 0.0 for flag in flags])
        return filtered.add_column(RELABELED_COLUMN, flags)

    return {"best_of_n": relabel(picks, found), "expert": relabel(list(experts), [True] * len(experts))}
