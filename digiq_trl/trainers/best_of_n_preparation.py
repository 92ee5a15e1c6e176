"""The Best-of-N preparation of the actor's training states (Digi-Q stage 4, before any gradient step).

Every state gets candidate actions: N samples from the *starting* policy (one batched decode per
batch of states), the dataset's ``candidate_actions``, or both, plus the logged action and, with the
default ``anchor="greedy"``, the starting policy's greedy action. The frozen critic scores them with
its advantage (:func:`digiq_trl.targets.advantage_formula`; unparsable candidates get A = 0) and the
argmax becomes the state's imitation target, weighted by :func:`digiq_trl.best_of_n.sample_weights`.
A state whose choice is not above the threshold imitates its anchor instead
(:func:`digiq_trl.best_of_n.anchor_targets`). The baselines (``filtered_bc``, ``sft``) imitate the
logged actions. :func:`prepare` runs it, each expensive step cached and verified
(:mod:`digiq_trl.trainers.preparation_cache`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets
from transformers import PreTrainedModel

from ..actions import try_parse_action
from ..best_of_n import (
    anchor_targets,
    candidate_list,
    sample_weights,
    select_best,
    selection_stats,
    supported,
    zero_invalid,
)
from ..models.features import weights_digest
from ..models.scoring import CriticScorer
from ..prompts import PROMPT_TEMPLATE_ID
from .actor_config import BestOfNActorConfig
from .preparation_cache import PREPARATION_CACHE_DIR, CachedSteps


_SCORING_FIELDS = (
    "weighting", "num_candidates", "temperature", "min_candidate_count", "invalid_resamples", "candidate_source",
    "include_logged_action", "advantage_threshold", "awr_beta", "awr_max_weight", "anchor",
)
"""Config fields the Best-of-N step's result depends on (the sampled candidates and their weights)."""


def prepare(model: PreTrainedModel, processor: Any, dataset: Dataset, args: BestOfNActorConfig,
            scorer: CriticScorer | None = None) -> tuple[Dataset, dict[str, float]]:
    """Per state: the imitated action and weight (the critic's Best-of-N choice when a ``scorer`` is
    given, else the logged action of the baselines), then the training target with the anchor
    (``target_action``, ``target_weight``); with the preparation's statistics.

    The greedy actions and the Best-of-N step are cached (:class:`~digiq_trl.trainers.preparation_cache.CachedSteps`)
    in ``args.preparation_cache_dir`` (default: :data:`PREPARATION_CACHE_DIR` in ``args.output_dir``),
    keyed by the states (the dataset's fingerprint), the starting policy's weights, the settings of
    its decoding and, for the Best-of-N step, the critic, the extractor and the scoring settings.
    """
    timer = _Timer()
    start = time.perf_counter()
    samples_candidates = scorer is not None and args.candidate_source != "dataset"
    policy = _policy(model, processor, args) if samples_candidates or args.anchor == "greedy" else None
    identity = {
        "dataset": dataset._fingerprint, "policy": weights_digest(model), "prompt": PROMPT_TEMPLATE_ID,
        "max_completion_length": args.max_completion_length, "candidate_batch_size": args.candidate_batch_size,
    }
    folder = Path(args.preparation_cache_dir or Path(args.output_dir) / PREPARATION_CACHE_DIR)
    steps = CachedSteps(folder, identity, args.seed, args.device)
    if args.anchor == "greedy":
        greedy = steps("greedy", dataset, _GreedyActions(policy, timer), args.candidate_batch_size * 8,
                       "Greedy actions of the starting policy")
        dataset = _with_columns(dataset, greedy)
    metrics: dict[str, float] = {}
    if scorer is None:
        prepared = _with_columns(dataset, _logged_targets(dataset, args.weighting))
    else:
        candidate_scorer = _CandidateScorer(args, policy if samples_candidates else None, scorer, timer)
        with torch.no_grad():
            columns = steps("best-of-n", dataset, candidate_scorer, args.candidate_batch_size,
                            f"Best-of-{args.num_candidates} candidates", **_scoring_settings(scorer, args))
        prepared = _with_columns(dataset, columns)
        metrics = selection_stats(
            prepared["chosen_advantage"], prepared["logged_advantage"], prepared["chosen_is_logged"],
            prepared["num_proposals"], prepared["num_invalid_proposals"], args.advantage_threshold,
        )
    prepared = _with_columns(prepared, _anchored(prepared, args))
    timer.total = time.perf_counter() - start
    metrics["generation_time_share"] = timer.generation / timer.total if timer.total else 0.0
    metrics["preparation_seconds"] = timer.total
    return prepared, {**metrics, **_kept_metrics(prepared)}


def _scoring_settings(scorer: CriticScorer, args: BestOfNActorConfig) -> dict[str, Any]:
    """What the Best-of-N step depends on besides the states and the starting policy."""
    return {
        "critic": weights_digest(scorer.critic), "extractor": _extractor_identity(scorer.extractor),
        "seed": args.seed, **{name: getattr(args, name) for name in _SCORING_FIELDS},
    }


def _extractor_identity(extractor: Any) -> Any:
    """What makes an extractor's features: its provenance (weights digest, layer, pooling, prompt)
    without where the model was loaded from (a run folder moved elsewhere keeps its cache), or its
    class for a stand-in without one."""
    provenance = getattr(extractor, "provenance", None)
    if provenance is None:
        return type(extractor).__qualname__
    return {key: value for key, value in provenance.items() if key not in ("model_id", "adapter")}


@dataclass
class _Timer:
    """Wall time spent generating candidates vs in the whole preparation."""

    generation: float = 0.0
    total: float = 0.0


class _CandidateScorer:
    """The ``datasets.map`` function of the preparation: candidates, critic scores, choice, weight."""

    def __init__(self, args: BestOfNActorConfig, policy: Any | None, scorer: CriticScorer, timer: _Timer) -> None:
        self.args, self.policy, self.scorer, self.timer = args, policy, scorer, timer

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        proposals = self._proposals(batch)
        scored = [candidate_list(logged, props) for logged, props in zip(batch["action"], proposals)]
        valid = [[try_parse_action(c) is not None for c in cands] for cands in scored]
        advantages = self._advantages(batch, scored, valid)
        out: dict[str, list[Any]] = defaultdict(list)
        for logged, props, cands, ok, adv in zip(batch["action"], proposals, scored, valid, advantages):
            # scored[0] is the logged action; it competes only when included or also proposed.
            offset = 0 if self.args.include_logged_action or logged in props else 1
            if offset == len(cands):
                raise ValueError(f"no candidate for the state whose logged action is {logged!r}")
            choice = select_best(adv[offset:], ok[offset:])
            index = choice.index + offset
            out["candidates"].append(cands)
            out["candidate_advantages"].append(adv.tolist())
            out["chosen_action"].append(cands[index])
            out["chosen_advantage"].append(choice.advantage)
            out["logged_advantage"].append(float(adv[0]))
            out["chosen_is_logged"].append(index == 0)
            out["chosen_is_valid"].append(choice.valid)
            out["num_proposals"].append(len(props))
            out["num_invalid_proposals"].append(sum(try_parse_action(p) is None for p in props))
        out["weight"] = self._weights(out, batch).tolist()
        return dict(out)

    def _proposals(self, batch: dict[str, list[Any]]) -> list[list[str]]:
        """Per state: the starting policy's greedy action (when computed), its N samples and/or the
        dataset's candidates, duplicates kept."""
        states = len(batch["action"])
        proposals: list[list[str]] = [[] for _ in range(states)]
        if "base_action" in batch:  # the starting policy's greedy action (the "greedy" anchor)
            proposals = [[action] for action in batch["base_action"]]
        if self.args.candidate_source in ("policy", "both"):
            observations = [
                {"image": image, "goal": goal, "history": history}
                for image, goal, history in zip(batch["image"], batch["goal"], batch["history"])
            ]
            start = time.perf_counter()
            samples = self.policy.sample(observations, self.args.num_candidates, self.args.temperature)
            samples = self._resample_invalid(observations, samples)
            self.timer.generation += time.perf_counter() - start
            proposals = [p + supported(s, self.args.min_candidate_count) for p, s in zip(proposals, samples)]
        if self.args.candidate_source in ("dataset", "both"):
            if "candidate_actions" not in batch:
                raise ValueError("candidate_source needs a 'candidate_actions' column in the dataset")
            proposals = [p + list(c or []) for p, c in zip(proposals, batch["candidate_actions"])]
        return proposals

    def _resample_invalid(self, observations: list[dict[str, Any]], samples: list[list[str]]) -> list[list[str]]:
        """Draw again, one at a time, the samples that do not parse, up to ``invalid_resamples`` rounds."""
        samples = [list(state) for state in samples]
        for _ in range(self.args.invalid_resamples):
            slots = [(i, j) for i, state in enumerate(samples) for j, c in enumerate(state) if try_parse_action(c) is None]
            if not slots:
                break
            redrawn = self.policy.sample([observations[i] for i, _ in slots], 1, self.args.temperature)
            for (i, j), (action,) in zip(slots, redrawn):
                samples[i][j] = action
        return samples

    def _advantages(
        self, batch: dict[str, list[Any]], scored: list[list[str]], valid: list[list[bool]]
    ) -> list[np.ndarray]:
        """Critic advantages of every candidate (0 for unparsable ones), one critic call per batch."""
        advantages = [np.zeros(len(c)) for c in scored]
        rows = [i for i, ok in enumerate(valid) if any(ok)]
        if not rows:
            return advantages
        actions = [[c for c, ok in zip(scored[i], valid[i]) if ok] for i in rows]
        scores = self.scorer.score([batch["image"][i] for i in rows], [batch["goal"][i] for i in rows],
                                   [batch["history"][i] for i in rows], actions)
        for i, state in zip(rows, scores):
            advantages[i][np.asarray(valid[i])] = state.advantage
        return advantages

    def _weights(self, out: dict[str, list[Any]], batch: dict[str, list[Any]]) -> np.ndarray:
        weights = sample_weights(
            self.args.weighting, out["chosen_advantage"], batch["trajectory_reward"],
            advantage_threshold=self.args.advantage_threshold, awr_beta=self.args.awr_beta,
            awr_max_weight=self.args.awr_max_weight,
        )
        return zero_invalid(weights, out["chosen_is_valid"])


def _logged_targets(dataset: Dataset, weighting: str) -> dict[str, list[Any]]:
    """The baselines' preparation: imitate the logged action, weighted by ``weighting``."""
    actions = dataset["action"]
    valid = [try_parse_action(a) is not None for a in actions]
    weights = zero_invalid(sample_weights(weighting, trajectory_rewards=dataset["trajectory_reward"]), valid)
    return {"chosen_action": list(actions), "chosen_is_valid": valid, "weight": weights.tolist()}


def _anchored(prepared: Dataset, args: BestOfNActorConfig) -> dict[str, list[Any]]:
    """``target_action`` and ``target_weight`` columns: :func:`~digiq_trl.best_of_n.anchor_targets`."""
    anchors = {"none": None, "logged": "action", "greedy": "base_action"}[args.anchor]
    anchor_actions = prepared[anchors] if anchors else None
    valid = [try_parse_action(a) is not None for a in anchor_actions] if anchor_actions else None
    targets, weights = anchor_targets(prepared["chosen_action"], prepared["weight"], anchor_actions,
                                      args.anchor_weight, valid)
    return {"target_action": targets, "target_weight": weights.tolist()}


class _GreedyActions:
    """The ``datasets.map`` function adding ``base_action``: the starting policy's greedy action."""

    def __init__(self, policy: Any, timer: _Timer) -> None:
        self.policy, self.timer = policy, timer

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[str]]:
        observations = [{"image": i, "goal": g, "history": h}
                        for i, g, h in zip(batch["image"], batch["goal"], batch["history"])]
        start = time.perf_counter()
        actions = self.policy.act(observations, [{} for _ in observations])
        self.timer.generation += time.perf_counter() - start
        return {"base_action": actions}


def _policy(model: PreTrainedModel, processor: Any, args: BestOfNActorConfig) -> Any:
    """The starting policy: ``act`` is its greedy action (the anchor), ``sample`` draws the candidates
    (at ``args.temperature``, passed by the caller)."""
    from ..models.policy import VLMPolicy

    return VLMPolicy(
        model, processor, temperature=0.0, max_new_tokens=args.max_completion_length,
        batch_size=args.candidate_batch_size * args.num_candidates,
    )


def _with_columns(dataset: Dataset, columns: dict[str, list[Any]]) -> Dataset:
    """``dataset`` with ``columns`` added (replacing same-named columns of an earlier preparation)."""
    stale = [name for name in columns if name in dataset.column_names]
    return concatenate_datasets([dataset.remove_columns(stale), Dataset.from_dict(columns)], axis=1)


def _kept_metrics(prepared: Dataset) -> dict[str, float]:
    """``frac_imitated``: states trained on their own target (a choice above the threshold, a successful
    logged action); ``frac_anchored``: states trained on their anchor; ``num_states``."""
    own = np.asarray(prepared["weight"], dtype=np.float64) != 0
    trained = np.asarray(prepared["target_weight"], dtype=np.float64) != 0
    count = max(1, own.size)
    return {"frac_imitated": float(own.sum() / count), "frac_anchored": float((trained & ~own).sum() / count),
            "num_states": float(own.size)}
