"""Evaluation: success rate of a policy in the simulated phone, per seed and across seeds, and the
offline AitW action-matching accuracy on a transitions dataset (for real data, with no device).

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
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from datasets import Dataset

from .actions import ActionType, DeviceAction, actions_match, format_action, parse_action, try_parse_action
from .envs.collect import Step, run_episodes
from .envs.phone import PhoneEnv
from .envs.policies import Policy
from .envs.tasks import query_matches


def evaluate_policy(
    policy: Policy,
    suite: str,
    split: str = "test",
    num_episodes: int = 200,
    seed: int = 0,
    batch_size: int = 64,
    **env_kwargs: Any,
) -> dict[str, float]:
    """Play ``num_episodes`` episodes and report the success rate.

    Returns:
        ``success_rate``, ``stderr`` (binomial standard error ``sqrt(p (1 - p) / n)``),
        ``num_episodes`` and ``mean_episode_length`` (steps, failures run to the horizon).
    """
    env = PhoneEnv(suite=suite, split=split, **env_kwargs)
    successes: dict[int, bool] = {}
    lengths: dict[int, int] = {}
    for step in run_episodes(env, policy, num_episodes, seed=seed, batch_size=batch_size):
        if step.done:
            successes[step.episode] = step.reward > 0
            lengths[step.episode] = step.step + 1
    rate = sum(successes.values()) / num_episodes
    return {
        "success_rate": rate,
        "stderr": math.sqrt(rate * (1.0 - rate) / num_episodes),
        "num_episodes": num_episodes,
        "mean_episode_length": sum(lengths.values()) / num_episodes,
    }


def evaluate_policy_seeds(
    policy: Policy, suite: str, seeds: Sequence[int] = (0, 1, 2), **kwargs: Any
) -> dict[str, Any]:
    """:func:`evaluate_policy` once per seed, aggregated.

    Returns:
        ``success_rate`` (mean over seeds), ``stderr`` (standard error of that mean across seeds,
        0 for a single seed), ``num_seeds``, ``mean_episode_length`` and ``per_seed`` (each run's dict).
    """
    if not seeds:
        raise ValueError("give at least one seed")
    runs = [evaluate_policy(policy, suite, seed=seed, **kwargs) for seed in seeds]
    rates = [run["success_rate"] for run in runs]
    mean = sum(rates) / len(rates)
    spread = math.sqrt(sum((r - mean) ** 2 for r in rates) / (len(rates) - 1)) if len(rates) > 1 else 0.0
    return {
        "success_rate": mean,
        "stderr": spread / math.sqrt(len(rates)),
        "num_seeds": len(rates),
        "mean_episode_length": sum(run["mean_episode_length"] for run in runs) / len(runs),
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
    has_boxes = "ui_boxes" in dataset.column_names
    matched: dict[str, list[bool]] = {}
    valid = 0
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        observations = [
            {"image": image, "goal": goal, "history": history}
            for image, goal, history in zip(rows["image"], rows["goal"], rows["history"])
        ]
        answers = policy.act(observations, [{} for _ in observations])
        for index, answer in enumerate(answers):
            pred, gold = try_parse_action(answer), parse_action(rows["action"][index])
            valid += pred is not None
            boxes = rows["ui_boxes"][index] if has_boxes else None
            matched.setdefault(gold.action_type.name, []).append(actions_match(pred, gold, boxes))
    flat = [m for ms in matched.values() for m in ms]
    rate = sum(flat) / max(1, len(flat))
    return {
        "accuracy": rate,
        "stderr": math.sqrt(rate * (1.0 - rate) / max(1, len(flat))),
        "valid_rate": valid / max(1, len(flat)),
        "num_steps": len(flat),
        "accuracy_by_type": {name: sum(ms) / len(ms) for name, ms in sorted(matched.items())},
    }


def critic_expert_ranking(
    critic: Any,
    extractor: Any,
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
    of ``num_alternatives`` uniformly random actions (ties count half).

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
        _, features = _step_features(extractor, chunk, actions)
        with torch.no_grad():
            q = torch.stack([torch.maximum(*critic.q_values(f)).reshape(-1) for f in features])
        scores.append(ranking_scores(q[:, 0], q[:, 1:]))
    ranking = torch.cat(scores)
    return {"expert_vs_random_ranking": float(ranking.mean()), "num_states": int(ranking.numel())}


def _step_features(extractor: Any, steps: Sequence[Step], actions: Sequence[Sequence[str]]) -> tuple[Any, Any]:
    """The extractor's state and per-action features for the observations of ``steps``."""
    observations = [s.observation for s in steps]
    return extractor.state_action_features(
        [o["image"] for o in observations], [o["goal"] for o in observations],
        [o["history"] for o in observations], actions,
    )


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


def expert_agrees(action: DeviceAction | None, expert: DeviceAction, ui_boxes: Sequence[Sequence[float]]) -> bool:
    """Whether ``action`` does what the simulator expert's ``expert`` action does on this screen.

    :func:`~digiq_trl.actions.actions_match` with the screen's element boxes, except for TYPE: there
    the simulator's own query test (:func:`~digiq_trl.envs.tasks.query_matches`, every key term of
    the expert's text) replaces the AitW containment rule, which would accept a typed prefix such
    as ``"capital"`` for ``"capital Panama"``.
    """
    if action is not None and action.action_type == expert.action_type == ActionType.TYPE:
        return query_matches(action.typed_text, expert.typed_text)
    return actions_match(action, expert, ui_boxes)


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
            right = [expert_agrees(p, expert, step.info["ui_boxes"]) for p in parsed]
            states.append(SampledState(step, candidates, parsed, expert, right))
        yield states


def best_of_n_headroom(
    critic: Any,
    extractor: Any,
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
        Per expert action type and ``"all"``: ``greedy``, ``any``, ``critic`` (fractions of states)
        and ``num_states``.
    """
    import numpy as np
    import torch

    from .best_of_n import select_best

    hits: dict[str, list[tuple[bool, bool, bool]]] = {}
    for chunk in sampled_states(actor, suite, num_candidates, temperature, split, num_episodes, every, seed,
                                **env_kwargs):
        states, features = _step_features(extractor, [s.step for s in chunk], [s.candidates for s in chunk])
        with torch.no_grad():
            for sampled, feats, state in zip(chunk, features, states):
                adv = critic.advantage(feats, state[None]).reshape(-1)
                best = select_best(adv.numpy(), [p is not None for p in sampled.parsed]).index
                right = sampled.right
                hits.setdefault(sampled.expert.action_type.name, []).append((right[0], any(right), right[best]))
    hits["all"] = [h for rows in hits.values() for h in rows]
    return {
        name: {**dict(zip(("greedy", "any", "critic"), np.mean(rows, axis=0).tolist())), "num_states": len(rows)}
        for name, rows in hits.items() if rows
    }


def oracle_best_of_n_targets(
    actor: Any,
    suite: str,
    num_candidates: int = 16,
    temperature: float = 1.0,
    split: str = "train",
    num_episodes: int = 100,
    seed: int = 0,
    **env_kwargs: Any,
) -> dict[str, Dataset]:
    """What policy extraction could teach ``actor`` with a perfect critic: two training sets.

    The actor plays (e.g. sampling at the behavior temperature, as when it collected the data) and
    every state it visits gets Best-of-N candidates (:func:`sampled_states`). Returns datasets of
    ``goal``, ``history``, ``image``, ``action`` and ``trajectory_reward`` (1.0), to train the actor
    on with ``BestOfNActorTrainer(weighting="sft")``:

    * ``"best_of_n"``: the states where some candidate agrees with the simulator expert, labelled
      with the first such candidate: what Digi-Q imitates with a perfect critic and threshold.
    * ``"expert"``: every state, labelled with the expert's action: what any critic over any
      number of candidates could at most teach from these states.

    If the actor trained on ``"expert"`` is no better than the actor itself on held-out goals,
    no critic can make Best-of-N extraction beat it there: the states, not the critic, limit it.
    """
    best_of_n: list[dict[str, Any]] = []
    expert: list[dict[str, Any]] = []
    for chunk in sampled_states(actor, suite, num_candidates, temperature, split, num_episodes, 1, seed,
                                **env_kwargs):
        for sampled in chunk:
            obs = sampled.step.observation
            row = {"goal": obs["goal"], "history": obs["history"], "image": obs["image"], "trajectory_reward": 1.0}
            expert.append({**row, "action": format_action(sampled.expert)})
            if any(sampled.right):
                best_of_n.append({**row, "action": sampled.candidates[sampled.right.index(True)]})
    return {"best_of_n": _rows_dataset(best_of_n), "expert": _rows_dataset(expert)}


def _rows_dataset(rows: list[dict[str, Any]]) -> Dataset:
    from datasets import Features, Image, Value

    features = Features({"goal": Value("string"), "history": Value("string"), "image": Image(),
                         "trajectory_reward": Value("float32"), "action": Value("string")})
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)
