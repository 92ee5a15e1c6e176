"""Evaluation: success rate of a policy in the simulated phone, per seed and across seeds (or on
devices, from the same per-episode records: :func:`episode_records`), and the offline AitW
action-matching accuracy on a transitions dataset (for real data, with no device).

Uses the same lockstep rollout loop as data collection (:func:`digiq_trl.envs.run_episodes`), so a
VLM policy is called on batches of ``batch_size`` screenshots. How a pipeline run scores its methods
with these is :mod:`digiq_trl.run_scoring`; what the simulator expert says about a critic and
Best-of-N extraction is :mod:`digiq_trl.diagnostics`.

Example:
    >>> from digiq_trl.envs import ExpertPolicy
    >>> from digiq_trl.evaluation import evaluate_policy
    >>> evaluate_policy(ExpertPolicy(), "general", num_episodes=20)["success_rate"]
    1.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .actions import action_kind, actions_match, describe_action, parse_action, try_parse_action
from .envs.collect import Step, run_episodes
from .envs.phone import PhoneEnv
from .envs.policies import Policy
from .envs.tasks import load_goals


if TYPE_CHECKING:
    from datasets import Dataset


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
    """Standard error ``sqrt(p (1 - p) / n)`` of a success rate ``p`` measured on ``n`` trials; 0 without trials."""
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


def action_kind_recall(predicted: Sequence[str], reference: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per class of the reference actions: how often the predicted action has the same class.

    A forgetting probe: after policy extraction, a class whose recall fell (e.g. ``enter``, which
    submits every search) has been unlearned, whatever the overall success rate says.

    Example:
        >>> from digiq_trl.actions import ActionType, DeviceAction, format_action
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
