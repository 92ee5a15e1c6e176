"""Scoring a pipeline run: the evaluation stage of :class:`~digiq_trl.pipeline.DigiQPipeline`.

Every method of a run (base actor, filtered BC, Digi-Q; one adapter per actor training seed) is
scored alike with the general metrics of :mod:`digiq_trl.evaluation` (simulator success or offline
action matching, as the run's ``evaluation`` says), the forgetting probe is played, and the data,
critic and representation figures are gathered into the ``results.json`` entries the report reads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .diagnostics import critic_expert_ranking
from .envs.policies import Policy
from .evaluation import (
    action_kind_recall,
    action_matching_accuracy,
    changed_share,
    evaluate_policy,
    evaluate_policy_seeds,
    goal_predictability_auroc,
    greedy_actions,
    sum_by_kind,
)


if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

    from .artifacts import RunArtifacts
    from .pipeline_config import DigiQPipelineConfig


def evaluate_run(config: DigiQPipelineConfig, artifacts: RunArtifacts) -> dict[str, Any]:
    """The evaluation stage of a run: every method scored alike, plus the data and critic figures.

    Base actor, filtered BC and Digi-Q (each adapter merged into the base actor) are scored by
    :func:`score_policy`; each also gets the forgetting probe (:func:`probe_states`): per action
    class recall of its greedy actions, and the share that differ from the base actor's.

    Args:
        config: the run's configuration.
        artifacts: its output folder (the trained actors, the data, the critic's metrics).

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
    metric = OFFLINE_METRIC if offline else "success_rate"
    critic_dir = artifacts.path("critic")
    return {
        "metric": metric, "actor_seeds": list(config.actor_seeds),
        "eval_split": "test, successful episodes only (offline action matching)" if offline else config.eval_split,
        "num_eval_episodes": config.eval_episodes, "seeds": [] if offline else list(config.eval_seeds),
        "generalization_split": None if offline else config.generalization_split,
        "probe_states": len(probe),
        "methods": {name: across_training_seeds(scores, metric) for name, scores in runs.items()},
        "behavior_data": behavior_stats(artifacts.load_data()),
        "critic": {**_read_json(critic_dir / "eval_metrics.json"),
                   **({} if offline or not (critic_dir / "model.safetensors").exists()
                      else _critic_expert_ranking(config, artifacts))},
        "representation": _read_json(artifacts.path("representation") / "metrics.json"),
        **({"offline_evaluation": offline_evaluation_set(artifacts.load_data()["test"])[1]} if offline else {}),
    }


def score_policy(config: DigiQPipelineConfig, artifacts: RunArtifacts, policy: Policy) -> dict[str, Any]:
    """How a run scores one policy: simulator success on ``eval_split`` goals over every evaluation
    seed (overall, per task kind, and on the ``generalization_split``), or, with
    ``evaluation: offline``, AitW action matching on the successful episodes of the data's test
    split (:func:`offline_evaluation_set`)."""
    if config.evaluation == "offline":
        steps, _ = offline_evaluation_set(artifacts.load_data()["test"])
        run = action_matching_accuracy(policy, steps, batch_size=config.rollout_batch_size)
        return {OFFLINE_METRIC: run["accuracy"], "stderr": run["stderr"],
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


OFFLINE_METRIC = "successful_episode_action_match"
"""The offline metric: how often a policy's action matches the logged one on the steps of the test
split's *successful* episodes. Matching the steps of failed episodes would reward copying a policy
that failed (the paper's offline data are AutoUI rollouts, most of them failures); on human
demonstrations every episode counts."""


def offline_evaluation_set(test: Dataset) -> tuple[Dataset, dict[str, Any]]:
    """The steps of ``test``'s successful episodes (``trajectory_reward > 0``), and what they are:
    episodes and steps used of all, and the behavior policy's own success rate on these episodes
    (the share of test episodes it completed: the data's success rate).

    Raises:
        ValueError: no test episode succeeded (nothing to match against).
    """
    rewards = test["trajectory_reward"]
    keep = [i for i, reward in enumerate(rewards) if reward > 0]
    episodes = {e: r > 0 for e, r in zip(test["episode_id"], rewards)}
    if not keep:
        raise ValueError(f"offline evaluation: none of the {len(episodes)} test episodes succeeded "
                         "(trajectory_reward > 0); action matching needs successful episodes or demonstrations")
    used = sum(episodes.values())
    return test.select(keep), {"episodes": used, "of_episodes": len(episodes), "steps": len(keep),
                               "of_steps": len(test), "behavior_success_rate": used / len(episodes)}


def probe_states(config: DigiQPipelineConfig, artifacts: RunArtifacts) -> tuple[Dataset, list[str]]:
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


def behavior_stats(data: DatasetDict) -> dict[str, float]:
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


def _critic_expert_ranking(config: DigiQPipelineConfig, artifacts: RunArtifacts) -> dict[str, float]:
    """Does the critic rank the simulator expert's action above random ones, on evaluation states
    the behavior policy visits?"""
    import torch

    from .models.policy import VLMPolicy

    model, processor = artifacts.load_base_actor()
    torch.manual_seed(config.seed)
    behavior = VLMPolicy(model, processor, temperature=config.behavior_temperature)
    return critic_expert_ranking(artifacts.scorer(), config.suite, behavior, split=config.eval_split, num_episodes=50,
                                 seed=config.seed, **config.env_kwargs)


def _read_json(path: Path) -> Any:
    """The JSON in ``path``, or ``{}`` when the stage did not write it."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}
