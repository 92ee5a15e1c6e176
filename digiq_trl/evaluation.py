"""Evaluation: success rate of a policy in the simulated phone, per seed and across seeds (or on
devices, from the same per-episode records: :func:`episode_records`), and the offline AitW
action-matching accuracy on a transitions dataset (for real data, with no device).

Uses the same lockstep rollout loop as data collection (:func:`digiq_trl.envs.run_episodes`), so a
VLM policy is called on batches of ``batch_size`` screenshots.

Example:
    >>> from digiq_trl.envs import ExpertPolicy
    >>> from digiq_trl.evaluation import evaluate_policy
    >>> evaluate_policy(ExpertPolicy(), "general", num_episodes=20)["success_rate"]
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset

from .actions import (
    ActionType,
    DeviceAction,
    action_kind,
    actions_match,
    describe_action,
    format_action,
    parse_action,
    try_parse_action,
)
from .envs.collect import Step, run_episodes
from .envs.device import dismisses
from .envs.phone import PhoneEnv
from .envs.policies import Policy
from .envs.tasks import load_goals, query_matches


def evaluate_policy(
    policy: Policy,
    suite: str,
    split: str = "test",
    num_episodes: int = 200,
    seed: int = 0,
    batch_size: int = 64,
    goals: str = "random",
    **env_kwargs: Any,
) -> dict[str, Any]:
    """Play ``num_episodes`` episodes and report the success rate, overall and per task kind.

    Args:
        goals: ``"random"`` (each episode's goal drawn from its seed) or ``"first"`` (the split's first
            ``num_episodes`` goals in order, the paper's protocol).

    Returns:
        :func:`summarize_episodes` of the episodes' :func:`episode_records`.
    """
    if goals not in ("random", "first"):
        raise ValueError(f"goals must be 'random' or 'first', got {goals!r}")
    env = PhoneEnv(suite=suite, split=split, **env_kwargs)
    ordered = first_goals(suite, split, num_episodes) if goals == "first" else None
    steps = run_episodes(env, policy, num_episodes, seed=seed, batch_size=batch_size, goals=ordered)
    return summarize_episodes([record for _, record in sorted(episode_records(steps))])


def first_goals(suite: str, split: str, num_episodes: int) -> list[str]:
    """The split's first ``num_episodes`` goals in file order (the paper evaluates the first 96 test goals)."""
    goals = list(load_goals(suite, split)[:num_episodes])
    if len(goals) < num_episodes:
        raise ValueError(f"the {suite} {split} split has {len(goals)} goals, fewer than {num_episodes} episodes")
    return goals


def episode_records(steps: Iterable[Step]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(episode index, record)`` of each episode as soon as it ends, from :func:`run_episodes`' steps.

    A record holds the episode's ``goal``, ``kind`` (its task template), ``success``, ``steps``,
    ``failure_mode`` (``""`` on success or where the env names none), whether an
    ``interruption`` was shown, and its ``actions`` as the history describes them (``tap [0.52,
    0.31]``, ``type "news"``; an unparsable answer as it is); on a device also the last ``judge`` verdict (``success``,
    ``reasoning``, ``error``), ``judge_errors`` (the steps whose verdict was an error) and the
    device's ``error`` when it ended the episode.
    """
    open_records: dict[int, dict[str, Any]] = {}
    for step in steps:
        record = open_records.setdefault(step.episode, {"goal": step.observation["goal"], "kind": step.info["task"],
                                                        "interruption": False, "actions": []})
        parsed = try_parse_action(step.action)
        record["actions"].append(describe_action(parsed) if parsed is not None else step.action)
        record["interruption"] = record["interruption"] or bool(step.info.get("overlay") or step.next_info.get("overlay"))
        if "judge" in step.next_info:
            record["judge"] = step.next_info["judge"]
            record["judge_errors"] = record.get("judge_errors", 0) + bool(step.next_info["judge"]["error"])
        if step.done:
            error = step.next_info.get("error", "")
            record.update(success=step.reward > 0, steps=0 if step.info.get("error") else step.step + 1,
                          failure_mode=step.next_info.get("failure_mode", ""), **({"error": error} if error else {}))
            yield step.episode, open_records.pop(step.episode)


def summarize_episodes(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The figures of a run from its :func:`episode_records`, in episode order.

    Returns:
        ``success_rate``, ``stderr`` (binomial standard error ``sqrt(p (1 - p) / n)``),
        ``num_episodes``, ``mean_episode_length`` (steps; failures run to the horizon),
        ``by_kind``: per task kind (:attr:`digiq_trl.envs.tasks.Task.kind`) the ``successes`` and
        ``episodes``, ``failure_modes``: failed episodes per mode
        (:data:`~digiq_trl.envs.failures.FAILURE_MODES`), ``device_errors`` (episodes a device
        ended; failures here), ``judge_errors`` (steps whose verdict was an error) and ``episodes``
        (the records).
    """
    count = len(records)
    rate = sum(e["success"] for e in records) / max(1, count)
    return {
        "success_rate": rate,
        "stderr": binomial_stderr(rate, count),
        "num_episodes": count,
        "mean_episode_length": sum(e["steps"] for e in records) / max(1, count),
        "by_kind": _count_by_kind({i: e["kind"] for i, e in enumerate(records)},
                                  {i: e["success"] for i, e in enumerate(records)}),
        "failure_modes": count_failure_modes([e["failure_mode"] for e in records if not e["success"]]),
        "device_errors": sum("error" in e for e in records),
        "judge_errors": sum(e.get("judge_errors", 0) for e in records),
        "episodes": list(records),
    }


def count_failure_modes(modes: Sequence[str]) -> dict[str, int]:
    """Failed episodes per mode, every mode of :data:`~digiq_trl.envs.failures.FAILURE_MODES` listed.

    Example:
        >>> count_failure_modes(["ran out of steps", "ran out of steps"])["ran out of steps"]
        2
    """
    from .envs.failures import FAILURE_MODES

    return {mode: sum(m == mode for m in modes) for mode in FAILURE_MODES}


def binomial_stderr(rate: float, trials: int) -> float:
    """Standard error ``sqrt(p (1 - p) / n)`` of a success rate ``p`` measured on ``n`` trials."""
    return math.sqrt(rate * (1.0 - rate) / trials) if trials else 0.0


def _count_by_kind(kinds: dict[int, str], successes: dict[int, bool]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for episode, kind in sorted(kinds.items(), key=lambda item: item[1]):
        row = counts.setdefault(kind, {"successes": 0, "episodes": 0})
        row["episodes"] += 1
        row["successes"] += int(successes.get(episode, False))
    return counts


def sum_by_kind(counts: Sequence[dict[str, dict[str, int]]]) -> dict[str, dict[str, Any]]:
    """Per task kind, the ``successes`` and ``episodes`` of several runs added up, with their ``success_rate``.

    Example:
        >>> sum_by_kind([{"search": {"successes": 1, "episodes": 4}}, {"search": {"successes": 2, "episodes": 4}}])
        {'search': {'successes': 3, 'episodes': 8, 'success_rate': 0.375}}
    """
    total: dict[str, dict[str, Any]] = {}
    for run in counts:
        for kind, row in run.items():
            into = total.setdefault(kind, {"successes": 0, "episodes": 0})
            into["successes"] += row["successes"]
            into["episodes"] += row["episodes"]
    for row in total.values():
        row["success_rate"] = row["successes"] / row["episodes"]
    return dict(sorted(total.items()))


def evaluate_policy_seeds(
    policy: Policy, suite: str, seeds: Sequence[int] = (0, 1, 2), **kwargs: Any
) -> dict[str, Any]:
    """:func:`evaluate_policy` once per seed, aggregated.

    Returns:
        ``success_rate`` (mean over seeds); ``stderr``: the standard error of that mean across
        seeds, or with a single seed its binomial standard error; ``pooled_stderr``: the binomial
        standard error over all episodes of all seeds; ``num_seeds``, ``num_episodes`` (all seeds),
        ``mean_episode_length``, ``by_kind`` (successes and episodes per task kind, summed over
        seeds, with each kind's ``success_rate``), ``failure_modes`` (summed over seeds) and
        ``per_seed`` (each run's dict).
    """
    if not seeds:
        raise ValueError("give at least one seed")
    runs = [evaluate_policy(policy, suite, seed=seed, **kwargs) for seed in seeds]
    rates = [run["success_rate"] for run in runs]
    mean = sum(rates) / len(rates)
    episodes = sum(run["num_episodes"] for run in runs)
    if len(rates) > 1:
        stderr = math.sqrt(sum((r - mean) ** 2 for r in rates) / (len(rates) - 1) / len(rates))
    else:
        stderr = runs[0]["stderr"]
    return {
        "success_rate": mean,
        "stderr": stderr,
        "pooled_stderr": binomial_stderr(mean, episodes),
        "num_seeds": len(rates),
        "num_episodes": episodes,
        "mean_episode_length": sum(run["mean_episode_length"] for run in runs) / len(runs),
        "by_kind": sum_by_kind([run["by_kind"] for run in runs]),
        "failure_modes": {mode: sum(run["failure_modes"][mode] for run in runs) for mode in runs[0]["failure_modes"]},
        "per_seed": runs,
    }


def action_matching_accuracy(policy: Policy, dataset: Dataset, batch_size: int = 64) -> dict[str, Any]:
    """Offline AitW metric: how often the policy's action matches the logged one, step by step.

    For real data, where no device is available. Each row's screenshot, goal and history are shown
    to the policy; its answer is compared with the row's ``action`` by
    :func:`digiq_trl.actions.actions_match` (using ``ui_boxes`` when the dataset has them).

    Returns:
        ``accuracy``, ``stderr``, ``valid_rate`` (answers that parse), ``num_steps`` and
        ``accuracy_by_type`` (per logged action type).
    """
    answers = greedy_actions(policy, dataset, batch_size)
    boxes = dataset["ui_boxes"] if "ui_boxes" in dataset.column_names else [None] * len(dataset)
    matched: dict[str, list[bool]] = {}
    valid = 0
    for answer, logged, row_boxes in zip(answers, dataset["action"], boxes):
        pred, gold = try_parse_action(answer), parse_action(logged)
        valid += pred is not None
        matched.setdefault(gold.action_type.name, []).append(actions_match(pred, gold, row_boxes))
    flat = [m for ms in matched.values() for m in ms]
    rate = sum(flat) / max(1, len(flat))
    return {
        "accuracy": rate,
        "stderr": binomial_stderr(rate, len(flat)),
        "valid_rate": valid / max(1, len(flat)),
        "num_steps": len(flat),
        "accuracy_by_type": {name: sum(ms) / len(ms) for name, ms in sorted(matched.items())},
    }


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


def goal_predictability_auroc(
    goals: Sequence[str], successes: Sequence[bool], prior_weight: float = 2.0, seed: int = 0
) -> float:
    """How well the goal alone predicts an episode's success: a ceiling for the AUROC of V(s_0).

    In the simulated phone every episode starts on the same home screen, so ``s_0`` carries
    nothing but the goal, and no critic can rank first states better than the true per-goal success
    rate does. This estimates that ceiling by cross-fitting: episodes are split in two random
    halves; each half is scored with the per-goal success rates of the other half (shrunk towards the
    overall rate with ``prior_weight`` pseudo-episodes, so rare goals are not scored 0 or 1 on a
    single episode); the AUROC of those scores is averaged over the two directions.

    Args:
        goals: one goal per episode.
        successes: whether each episode succeeded.
        prior_weight: pseudo-episodes at the overall success rate added to every goal's count.
        seed: seeds the split.

    Example:
        >>> goals = ["a", "a", "b", "b"] * 25
        >>> goal_predictability_auroc(goals, [g == "a" for g in goals])
        1.0
    """
    import numpy as np

    from .targets import auroc

    if len(goals) != len(successes):
        raise ValueError(f"{len(goals)} goals but {len(successes)} successes")
    labels = np.asarray(successes, dtype=bool)
    order = np.random.default_rng(seed).permutation(len(goals))
    halves = order[: len(order) // 2], order[len(order) // 2 :]
    scores = []
    for fit, held in (halves, halves[::-1]):
        prior = labels[fit].mean()
        counts: dict[str, list[float]] = {}
        for i in fit:
            counts.setdefault(goals[i], [0.0, 0.0])
            counts[goals[i]][0] += labels[i]
            counts[goals[i]][1] += 1
        rate = {g: (hits + prior * prior_weight) / (n + prior_weight) for g, (hits, n) in counts.items()}
        scores.append(auroc([rate.get(goals[i], prior) for i in held], labels[held]))
    return float(np.mean(scores))


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


def oracle_targets(states: Dataset, candidates: Sequence[Sequence[str]], infos: Sequence[dict[str, Any]]) -> dict[str, Dataset]:
    """What policy extraction could teach with a perfect critic, on the actor stage's own states.

    Returns two relabeled copies of ``states`` (the actor stage's training transitions, with
    ``ui_boxes``) to train with the actor stage's trainer, ``weighting="filtered_bc"`` and its
    anchor (a state with ``trajectory_reward`` 0 imitates its anchor):

    * ``"best_of_n"``: ``action`` is the first of the state's ``candidates`` (its Best-of-N
      candidates, logged action first) that the simulator expert agrees with
      (:func:`expert_agrees`, with the state's interruption), and ``trajectory_reward`` 1; states
      with no such candidate get 0. What Digi-Q imitates with a perfect critic.
    * ``"expert"``: ``action`` is the expert's in every state: what any critic over any number of
      candidates could at most teach from these states.

    ``infos`` are the simulator's infos of the states (:func:`~digiq_trl.envs.collect.replay_infos`):
    their ``expert_action`` and ``overlay``.

    If the actor trained on ``"expert"`` is no better than the base actor, no critic can make
    Best-of-N extraction beat it from these states.
    """
    if not len(states) == len(candidates) == len(infos):
        raise ValueError(f"{len(states)} states, {len(candidates)} candidate lists and {len(infos)} infos")
    experts = [info["expert_action"] for info in infos]
    picks: list[str] = []
    found: list[float] = []
    for cands, info, row_boxes in zip(candidates, infos, states["ui_boxes"]):
        wanted = parse_action(info["expert_action"])
        right = [c for c in cands if expert_agrees(try_parse_action(c), wanted, row_boxes, info.get("overlay", ""))]
        picks.append(right[0] if right else info["expert_action"])
        found.append(1.0 if right else 0.0)
    relabel = ["action", "trajectory_reward"]
    base = states.remove_columns(relabel)
    return {
        "best_of_n": base.add_column("action", picks).add_column("trajectory_reward", found),
        "expert": base.add_column("action", list(experts)).add_column("trajectory_reward", [1.0] * len(experts)),
    }


def action_kind_recall(predicted: Sequence[str], reference: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per class of the reference actions: how often the predicted action has the same class.

    A forgetting probe: after policy extraction, a class whose recall fell (e.g. ``enter``, which
    submits every search) has been unlearned, whatever the overall success rate says.

    Example:
        >>> tap, enter = format_action(DeviceAction.tap(0.5, 0.5)), format_action(DeviceAction.press(ActionType.PRESS_ENTER))
        >>> action_kind_recall([tap, tap, enter], [tap, enter, enter])
        {'enter': {'recall': 0.5, 'count': 2}, 'tap': {'recall': 1.0, 'count': 1}}
    """
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predicted actions but {len(reference)} reference actions")
    hits: dict[str, list[bool]] = {}
    for pred, ref in zip(predicted, reference):
        kind = action_kind(try_parse_action(ref))
        hits.setdefault(kind, []).append(action_kind(try_parse_action(pred)) == kind)
    return {kind: {"recall": sum(h) / len(h), "count": len(h)} for kind, h in sorted(hits.items())}


def changed_share(actions: Sequence[str], base_actions: Sequence[str]) -> float:
    """Share of states where a policy's greedy action differs from the base policy's (as strings)."""
    if len(actions) != len(base_actions):
        raise ValueError(f"{len(actions)} actions but {len(base_actions)} base actions")
    return sum(a != b for a, b in zip(actions, base_actions)) / max(1, len(actions))


def greedy_actions(policy: Policy, dataset: Dataset, batch_size: int = 64) -> list[str]:
    """The policy's action on every row (screenshot, goal, history) of a transitions dataset."""
    actions: list[str] = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset.select_columns(["image", "goal", "history"])[start : start + batch_size]
        observations = [{"image": i, "goal": g, "history": h} for i, g, h in zip(rows["image"], rows["goal"], rows["history"])]
        actions.extend(policy.act(observations, [{} for _ in observations]))
    return actions


# ---------------------------------------------------------------------- scoring a pipeline run
def evaluate_run(config: Any, artifacts: Any) -> dict[str, Any]:
    """The evaluation stage of a run: every method scored alike, plus the data and critic figures.

    Base actor, filtered BC and Digi-Q (each adapter merged into the base actor) are scored by
    :func:`score_policy`; each also gets the forgetting probe (:func:`probe_states`): per action
    class recall of its greedy actions, and the share that differ from the base actor's.

    Args:
        config: the run's :class:`~digiq_trl.pipeline_config.DigiQPipelineConfig`.
        artifacts: its :class:`~digiq_trl.artifacts.RunArtifacts`.

    Returns:
        The ``results.json`` entries: ``metric``, ``methods`` (per method, one result per training
        seed aggregated by :func:`across_training_seeds`), ``behavior_data``, ``critic``,
        ``representation`` and the evaluation settings.
    """
    from .models.policy import VLMPolicy

    offline = config.evaluation == "offline"
    probe, reference = probe_states(config, artifacts)
    runs: dict[str, list[dict[str, Any]]] = {}
    base_actions: list[str] = []
    actors = [("base", None), *((method, folder) for method, _, folder in artifacts.adapters())]
    for name, adapter in actors:
        policy = VLMPolicy(*artifacts.load_actor(adapter), batch_size=config.rollout_batch_size,
                           temperature=config.eval_temperature)
        score = score_policy(config, artifacts, policy)
        actions = greedy_actions(policy, probe, batch_size=config.rollout_batch_size)
        base_actions = base_actions or actions
        score["probe"] = {"changed_vs_base": changed_share(actions, base_actions),
                          "recall": action_kind_recall(actions, reference)}
        runs.setdefault(name, []).append(score)
    metric = "action_matching_accuracy" if offline else "success_rate"
    critic_dir = artifacts.path("critic")
    return {
        "metric": metric, "actor_seeds": list(config.actor_seeds),
        "eval_split": "test (offline action matching)" if offline else config.eval_split,
        "num_eval_episodes": config.eval_episodes, "seeds": [] if offline else list(config.eval_seeds),
        "generalization_split": None if offline else config.generalization_split,
        "probe_states": len(probe),
        "methods": {name: across_training_seeds(scores, metric) for name, scores in runs.items()},
        "behavior_data": behavior_stats(artifacts.load_data()),
        "critic": {**_read_json(critic_dir / "eval_metrics.json"),
                   **({} if offline or not (critic_dir / "model.safetensors").exists()
                      else _critic_expert_ranking(config, artifacts))},
        "representation": _read_json(artifacts.path("representation") / "metrics.json"),
    }


def score_policy(config: Any, artifacts: Any, policy: Policy) -> dict[str, Any]:
    """How a run scores one policy: simulator success on ``eval_split`` goals over every evaluation
    seed (overall, per task kind, and on the ``generalization_split``), or, with
    ``evaluation: offline``, AitW action matching on the data's test split."""
    if config.evaluation == "offline":
        run = action_matching_accuracy(policy, artifacts.load_data()["test"], batch_size=config.rollout_batch_size)
        return {"action_matching_accuracy": run["accuracy"], "stderr": run["stderr"],
                "valid_rate": run["valid_rate"], "accuracy_by_type": run["accuracy_by_type"]}
    run = evaluate_policy_seeds(policy, config.suite, seeds=config.eval_seeds, split=config.eval_split,
                                num_episodes=config.eval_episodes, batch_size=config.rollout_batch_size,
                                goals=config.eval_goals, **config.env_kwargs)
    score = {key: run[key] for key in ("success_rate", "stderr", "pooled_stderr", "num_episodes", "by_kind",
                                       "failure_modes")}
    score["per_seed"] = [r["success_rate"] for r in run["per_seed"]]
    score["episodes"] = {str(seed): r["episodes"] for seed, r in zip(config.eval_seeds, run["per_seed"])}
    if config.generalization_split:
        other = evaluate_policy(policy, config.suite, split=config.generalization_split,
                                num_episodes=config.eval_episodes, seed=config.eval_seeds[0],
                                batch_size=config.rollout_batch_size, **config.env_kwargs)
        score["generalization"] = {key: other[key] for key in ("success_rate", "stderr", "by_kind")}
    return score


def probe_states(config: Any, artifacts: Any) -> tuple[Dataset, list[str]]:
    """The forgetting probe: ``probe_states`` states and the action each should get.

    In the simulator, the states a noisy expert visits on train goals (as in the base actor's
    behavior cloning), labelled with the expert's action: every action class the base actor learned
    is well represented, ENTER after a typed query included. For a given dataset (real data), rows
    of its test split with their logged actions.
    """
    if config.dataset is not None:
        test = artifacts.load_data()["test"]
        rows = test.shuffle(seed=config.seed).select(range(min(config.probe_states, len(test))))
        return rows, list(rows["action"])
    from .trainers.behavior_cloning import expert_demonstrations

    episodes = max(1, config.probe_states // 4)  # about five steps per episode
    demos = expert_demonstrations(config.env_id, num_episodes=episodes, noise=config.bc_noise, seed=config.seed + 1,
                                  split="train", **config.env_kwargs)
    rows = demos.select(range(min(config.probe_states, len(demos))))
    return rows, list(rows["action"])


def behavior_stats(data: Any) -> dict[str, float]:
    """Size and success rate of the offline data (the behavior policy's own success), and how
    well the goal alone predicts success (the ceiling of the critic's V(s_0) AUROC)."""
    firsts = [row for split in data.values()
              for row in split.select_columns(["step_id", "goal", "trajectory_reward"]) if row["step_id"] == 0]
    successes = [r["trajectory_reward"] > 0 for r in firsts]
    return {
        "episodes": len(firsts),
        "transitions": sum(len(split) for split in data.values()),
        "success_rate": sum(successes) / max(1, len(firsts)),
        "goal_predictability_auroc": goal_predictability_auroc([r["goal"] for r in firsts], successes),
    }


def across_training_seeds(scores: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """One method's result from its runs, one per training seed.

    With a single run, its own figures (standard error across evaluation seeds). With several, the
    mean of the runs, the standard error of that mean across training seeds, ``per_seed`` the runs'
    values, the per-task-kind counts summed over the runs (``by_kind``), and every run in ``runs``.
    """
    if len(scores) == 1:
        return scores[0]
    values = [run[metric] for run in scores]
    mean = sum(values) / len(values)
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    result = {metric: mean, "stderr": spread / math.sqrt(len(values)), "per_seed": values, "runs": scores}
    if all("by_kind" in run for run in scores):
        result["by_kind"] = sum_by_kind([run["by_kind"] for run in scores])
    return result


def _critic_expert_ranking(config: Any, artifacts: Any) -> dict[str, float]:
    """Does the critic rank the simulator expert's action above random ones, on evaluation states
    the behavior policy visits?"""
    import torch

    from .models.policy import VLMPolicy

    model, processor = artifacts.load_base_actor()
    torch.manual_seed(config.seed)
    behavior = VLMPolicy(model, processor, temperature=config.behavior_temperature)
    return critic_expert_ranking(artifacts.scorer(), config.suite, behavior, split=config.eval_split, num_episodes=50,
                                 seed=config.seed, **config.env_kwargs)


def _read_json(path: Any) -> Any:
    import json
    from pathlib import Path

    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}
