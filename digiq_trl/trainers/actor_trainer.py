"""Best-of-N policy extraction (Digi-Q stage 4) as a ``transformers.Trainer``, training LoRA adapters.

Before training, every state of the dataset gets candidate actions: N samples from the *starting*
policy (one batched decode per batch of states), the dataset's ``candidate_actions``, or both, plus
the logged action and, with the default ``anchor="greedy"``, the starting policy's greedy action.
The frozen critic scores them with its advantage (:func:`digiq_trl.targets.advantage_formula` of its
``v_target_combine``: ``min(Q1, Q2) - max(V1, V2)`` by default) on frozen-VLM
features (unparsable candidates get A = 0) and the argmax becomes the state's imitation target,
weighted by :func:`digiq_trl.best_of_n.sample_weights` (``1[A > threshold]`` by default). As in
the reference, candidates are prepared once from the frozen starting policy, and the actor trains
on the whole offline dataset: a state whose choice is not above the threshold imitates its
*anchor* (the starting policy's greedy action by default, or the logged action) instead of
dropping out, so actions that the improved states rarely show (the ENTER press that submits every
search) are not forgotten (:func:`digiq_trl.best_of_n.anchor_targets`). Under several processes
each prepares a contiguous shard of the states and all gather the result, so every process trains
on the same prepared data. The preparation is reproducible (sampling is seeded from ``args.seed``
before each shard) and cached under ``args.output_dir`` (:data:`PREPARATION_CACHE_DIR`), keyed by
the states, the starting policy's and the critic's weights and the settings that change the
result, so a rerun with the same inputs (e.g. after an error) reads the candidates instead of
sampling them again; nothing is written next to the user's dataset.

Training minimizes the NLL of the target action's tokens only (prompt and image tokens are masked
with -100), times the per-sample weight. The paper's baselines run through the same trainer and
anchor: ``weighting="filtered_bc"`` (logged actions of successful trajectories) and ``"sft"`` (all
logged actions) need no critic.

Example:
    >>> trainer = BestOfNActorTrainer(  # doctest: +SKIP
    ...     model="Qwen/Qwen2-VL-2B-Instruct", critic="me/digiq-critic",
    ...     args=BestOfNActorConfig("qwen2vl-digiq-actor"), train_dataset=transitions)
    >>> trainer.train(); trainer.push_to_hub()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset, concatenate_datasets
from peft import PeftConfig, PeftModel, get_peft_model
from transformers import AutoModelForImageTextToText, PreTrainedModel, ProcessorMixin, Trainer, set_seed
from transformers.utils import logging

from ..actions import try_parse_action
from ..best_of_n import (
    anchor_targets,
    candidate_list,
    sample_weights,
    select_best,
    selection_stats,
    supported,
    uses_critic,
    zero_invalid,
)
from ..models.critic import DigiQCritic
from ..models.features import VLMFeatureExtractor
from ..models.pretrained import resolve_pretrained
from ..models.processing import load_processor
from ..models.scoring import CriticScorer
from ..models.vlm import weights_digest
from ..prompts import PROMPT_TEMPLATE_ID, answer_token_ids, render_prompt
from ..targets import advantage_formula
from .actor_config import BestOfNActorConfig
from .base import DigiQTrainerMixin
from .lora import default_lora_config
from .model_cards import ModelSource, hub_repo_id, model_source, repo_literal


logger = logging.get_logger(__name__)

TRAIN_COLUMNS = ("image", "goal", "history", "target_action", "target_weight")
"""Columns of the prepared dataset the collator reads."""

PREPARATION_CACHE_DIR = "_best_of_n_cache"
"""Folder of ``args.output_dir`` holding the cached preparation steps (Arrow files). Its leading
underscore keeps it out of ``push_to_hub`` uploads, which skip ``_*`` paths."""

_SCORING_FIELDS = (
    "weighting", "num_candidates", "temperature", "min_candidate_count", "invalid_resamples", "candidate_source",
    "include_logged_action", "advantage_threshold", "awr_beta", "awr_max_weight", "anchor",
)
"""Config fields the Best-of-N step's result depends on (the sampled candidates and their weights)."""


@dataclass
class BestOfNCollator:
    """Batches ``{"image", "goal", "history", "target_action", "target_weight"}`` rows for weighted NLL.

    Each row is the prompt (image and text, through the processor) followed by the answer tokens
    of :func:`~digiq_trl.prompts.answer_token_ids`, left-padded so that every answer ends at the
    last column: the loss then needs the logits of the last few columns only
    (:func:`answer_span`), whatever the prompt and image lengths. ``labels`` are -100 everywhere but
    on the answer tokens, so prompt and image tokens never enter the loss. Per-token processor
    outputs (e.g. Qwen2-VL's ``mm_token_type_ids``) are extended with zeros over the answer; image
    tensors pass through.
    """

    processor: Any

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [render_prompt(self.processor, ex["goal"], ex["history"]) for ex in examples]
        answers = [answer_token_ids(self.processor, ex["goal"], ex["history"], ex["target_action"]) for ex in examples]
        encoded = self.processor(
            text=prompts, images=[_as_rgb(ex["image"]) for ex in examples], padding=True, padding_side="right", return_tensors="pt"
        )
        prompt_lengths = encoded["attention_mask"].sum(dim=1).tolist()
        width = max(p + len(a) for p, a in zip(prompt_lengths, answers))
        batch = {key: value for key, value in encoded.items() if not _is_per_token(value, encoded)}
        batch.update(self._sequences(encoded, prompt_lengths, answers, width))
        batch["weights"] = torch.tensor([float(ex["target_weight"]) for ex in examples])
        return batch

    def _sequences(
        self, encoded: dict[str, torch.Tensor], prompt_lengths: list[int], answers: list[list[int]], width: int
    ) -> dict[str, torch.Tensor]:
        """Left-padded ``input_ids``, ``attention_mask``, ``labels`` and other per-token tensors."""
        pad_id = self.processor.tokenizer.pad_token_id or 0
        rows = len(answers)
        out = {
            "input_ids": torch.full((rows, width), pad_id, dtype=torch.long),
            "attention_mask": torch.zeros((rows, width), dtype=torch.long),
            "labels": torch.full((rows, width), -100, dtype=torch.long),
        }
        extra = {k: torch.zeros((rows, width), dtype=v.dtype) for k, v in encoded.items()
                 if _is_per_token(v, encoded) and k not in out}
        for row, (length, answer) in enumerate(zip(prompt_lengths, answers)):
            start = width - length - len(answer)
            answer_start = width - len(answer)
            ids = torch.tensor(answer, dtype=torch.long)
            out["input_ids"][row, start:answer_start] = encoded["input_ids"][row, :length]
            out["input_ids"][row, answer_start:] = ids
            out["attention_mask"][row, start:] = 1
            out["labels"][row, answer_start:] = ids
            for key, tensor in extra.items():
                tensor[row, start:answer_start] = encoded[key][row, :length]
        return {**out, **extra}


def _as_rgb(image: Any) -> Any:
    """RGB, as the policy feeds images at acting time (screenshots may be RGBA or grayscale)."""
    return image if image.mode == "RGB" else image.convert("RGB")


def _is_per_token(value: Any, encoded: dict[str, torch.Tensor]) -> bool:
    """Whether a processor output has one entry per prompt token (``[B, L]`` like ``input_ids``)."""
    return isinstance(value, torch.Tensor) and value.shape == encoded["input_ids"].shape


def answer_span(labels: torch.Tensor) -> int:
    """How many last columns hold every labelled token, plus the column whose logits predict the first.

    With the collator's left padding the answers end at the last column, so the logits of these
    columns are all the loss needs (``logits_to_keep``).
    """
    labelled = (labels != -100).any(dim=0).nonzero()
    if labelled.numel() == 0:
        return 1
    return labels.shape[1] - int(labelled[0]) + 1


def weighted_nll(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                 probability_clamp: Sequence[float] | None = None) -> torch.Tensor:
    """``sum_i w_i * sum_t NLL_it / sum_i T_i``: token NLL of the labelled tokens, weighted per row.

    Causal shift: the logits at position t predict the token at t + 1. Normalizing by the token
    count (not the weight sum) keeps ``pg`` weights signed and ``awr`` weights relative. With
    ``probability_clamp = (low, high)`` each token's probability is clamped to that range before the
    log, as the reference does with ``(0.001, 0.99)``: tokens already above ``high`` (or hopeless,
    below ``low``) contribute no gradient.
    """
    targets = labels[:, 1:]
    mask = targets != -100
    nll = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets.masked_fill(~mask, 0), reduction="none"
    )
    if probability_clamp is not None:
        low, high = probability_clamp
        nll = -torch.log(torch.exp(-nll).clamp(low, high))
    per_row = (nll * mask).sum(dim=1)
    return (weights.to(per_row) * per_row).sum() / mask.sum().clamp(min=1)


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


class BestOfNActorTrainer(DigiQTrainerMixin, Trainer):
    """Train a VLM actor (LoRA) on the critic's Best-of-N choices, or on the paper's baselines.

    Args:
        model: the actor: a VLM that ``AutoModelForImageTextToText`` loads, or its Hub id / path
            (loaded with ``args.model_init_kwargs``), or a ``PeftModel`` to continue training.
        critic: a trained :class:`~digiq_trl.models.critic.DigiQCritic` or its Hub id / path; kept
            frozen. Required by the ``threshold``, ``awr`` and ``pg`` weightings, unused otherwise.
        args: a :class:`BestOfNActorConfig`.
        train_dataset: canonical transitions (:mod:`digiq_trl.data.schema`).
        eval_dataset: transitions evaluated with the same preparation and weighted loss.
        processing_class: the actor's processor (default: loaded from the model's name).
        feature_extractor: the critic's frozen feature VLM; by default rebuilt from the critic's
            config with :meth:`VLMFeatureExtractor.for_critic` (which refuses weights other than
            those the critic was trained on).
        critic_tokenizer: the tokenizer of the critic's text encoder, for a critic that reads texts;
            by default the one saved with the critic (:func:`~digiq_trl.models.scoring.load_critic_tokenizer`).
        peft_config: LoRA (or other peft) config; :func:`~digiq_trl.trainers.lora.default_lora_config`
            when None and the model is not already a ``PeftModel``. The base weights stay frozen.
        data_collator: default :class:`BestOfNCollator`.
        callbacks: ``transformers`` callbacks.
        optimizers: ``(optimizer, scheduler)``, as in ``Trainer``.

    Attributes:
        prepared_dataset: the training states with their candidates, advantages, choice and weight
            (before weight-0 rows are dropped), for inspection.
        preparation_metrics: the statistics of the preparation, also logged at the first log step.
    """

    _tag_names = ["trl", "best-of-n", "offline-rl", "gui-agent"]
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: str | PreTrainedModel | PeftModel,
        critic: str | DigiQCritic | None = None,
        args: BestOfNActorConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class: ProcessorMixin | None = None,
        feature_extractor: VLMFeatureExtractor | None = None,
        critic_tokenizer: Any = None,
        peft_config: PeftConfig | None = None,
        data_collator: Any = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
    ) -> None:
        model_id = model if isinstance(model, str) else _model_id(model)
        if args is None:
            args = BestOfNActorConfig(f"{(model_id or type(model).__name__).rstrip('/').split('/')[-1]}-BestOfN")
        if train_dataset is None:
            raise ValueError("BestOfNActorTrainer needs a train_dataset of transitions")
        set_seed(args.seed)
        if isinstance(model, str):
            model = AutoModelForImageTextToText.from_pretrained(resolve_pretrained(model), **(args.model_init_kwargs or {}))
        if processing_class is None:
            if model_id is None:
                raise ValueError("pass processing_class: the model was built in memory, so no processor can be loaded")
            processing_class = load_processor(model_id)
        self.critic = _load_critic(critic, args) if uses_critic(args.weighting) else None
        if self.critic is not None and feature_extractor is None:
            feature_extractor = VLMFeatureExtractor.for_critic(self.critic.config, device=args.device)
        self.feature_extractor = feature_extractor if self.critic is not None else None
        self.scorer = CriticScorer(self.critic, feature_extractor, critic_tokenizer) if self.critic is not None else None
        self.model_id = _describe(model_id, model)
        self.critic_id = _describe(_critic_id(critic), self.critic)
        self._base_model_source = model_source(model_id, "the base model", type(model).__name__)
        self._base_model_hub_id = hub_repo_id(model_id)
        self.dataset_id = _dataset_id(train_dataset)
        model.to(args.device)
        self.prepared_dataset, self.preparation_metrics = self._prepare(model, processing_class, train_dataset, args)
        train = self._training_rows(self.prepared_dataset, processing_class, args, "train")
        evaluation = None
        if eval_dataset is not None:
            prepared_eval, _ = self._prepare(model, processing_class, eval_dataset, args)
            evaluation = self._training_rows(prepared_eval, processing_class, args, "eval")
        model = _with_adapter(model, peft_config)
        super().__init__(
            model=model, args=args, data_collator=data_collator or BestOfNCollator(processing_class),
            train_dataset=train, eval_dataset=evaluation, processing_class=processing_class,
            callbacks=callbacks, optimizers=optimizers,
        )
        self._pending_preparation_log = True

    def _prepare(
        self, model: PreTrainedModel, processor: Any, dataset: Dataset, args: BestOfNActorConfig
    ) -> tuple[Dataset, dict[str, float]]:
        """Per state: the imitated action and weight (the critic's Best-of-N choice, or the logged
        action for the baselines), then the training target with the anchor (``target_action``,
        ``target_weight``)."""
        timer = _Timer()
        start = time.perf_counter()
        samples_candidates = self.critic is not None and args.candidate_source != "dataset"
        policy = _policy(model, processor, args) if samples_candidates or args.anchor == "greedy" else None
        steps = self._cached_steps(model, dataset, args)
        if args.anchor == "greedy":
            greedy = steps("greedy", dataset, _GreedyActions(policy, timer), args.candidate_batch_size * 8,
                           "Greedy actions of the starting policy")
            dataset = _with_columns(dataset, greedy)
        metrics: dict[str, float] = {}
        if self.critic is None:
            prepared = _with_columns(dataset, _logged_targets(dataset, args.weighting))
        else:
            scorer = _CandidateScorer(args, policy if samples_candidates else None, self.scorer, timer)
            with torch.no_grad():
                columns = steps("best-of-n", dataset, scorer, args.candidate_batch_size,
                                f"Best-of-{args.num_candidates} candidates", **self._scoring_settings(args))
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

    def _cached_steps(self, model: PreTrainedModel, dataset: Dataset, args: BestOfNActorConfig) -> _CachedSteps:
        """The preparation's steps for ``dataset``, cached in ``args.preparation_cache_dir`` (default:
        :data:`PREPARATION_CACHE_DIR` in ``args.output_dir``), keyed by the states (the dataset's
        fingerprint), the starting policy's weights and the settings of its decoding."""
        identity = {
            "dataset": dataset._fingerprint, "policy": weights_digest(model), "prompt": PROMPT_TEMPLATE_ID,
            "max_completion_length": args.max_completion_length, "candidate_batch_size": args.candidate_batch_size,
        }
        folder = Path(args.preparation_cache_dir or Path(args.output_dir) / PREPARATION_CACHE_DIR)
        return _CachedSteps(folder, identity, args.seed, args.device)

    def _scoring_settings(self, args: BestOfNActorConfig) -> dict[str, Any]:
        """What the Best-of-N step depends on besides the states and the starting policy."""
        return {
            "critic": weights_digest(self.critic), "extractor": _extractor_identity(self.feature_extractor),
            "seed": args.seed, **{name: getattr(args, name) for name in _SCORING_FIELDS},
        }

    def _training_rows(self, prepared: Dataset, processor: Any, args: BestOfNActorConfig, split: str) -> Dataset:
        """Drop the rows with nothing to learn (and rows longer than ``max_length``), keep the
        collator's columns. With an anchor a row stays whatever its weight (``anchor_weight`` 0 keeps
        it in the batch mean, as the reference does); without one, weight-0 rows are dropped."""
        kept = prepared
        if args.anchor == "none":
            kept = prepared.filter(lambda w: w != 0.0, input_columns="target_weight", keep_in_memory=True)
        logger.info(
            "Best-of-N %s: %d of %d states kept for training (weighting=%r, anchor=%r).",
            split, len(kept), len(prepared), args.weighting, args.anchor,
        )
        if args.max_length is not None:
            before = len(kept)
            kept = kept.filter(
                lambda batch: _fits(processor, batch, args.max_length), batched=True,
                batch_size=args.candidate_batch_size, keep_in_memory=True,
            )
            logger.info("Best-of-N %s: %d states longer than max_length=%d dropped.", split, before - len(kept), args.max_length)
        if not any(w != 0.0 for w in kept["target_weight"]):
            raise ValueError(
                f"no {split} state is left to imitate (all weights are 0); with weighting='threshold' lower "
                f"advantage_threshold (now {args.advantage_threshold}) or check the critic's advantages; an "
                f"anchor ({args.anchor!r}) counts only where it is a parsable action (an untrained actor's "
                "greedy output is not: use anchor='logged')"
            )
        return kept.select_columns(list(TRAIN_COLUMNS))

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Weighted NLL of the target actions' tokens (:func:`weighted_nll`); a per-batch mean.

        Only the last :func:`answer_span` columns get logits (the collator left-pads, so every answer
        ends at the last column): with a 152k vocabulary the logits of whole sequences, screenshot
        tokens included, would dominate the memory of a step.
        """
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "weights")}
        span = answer_span(inputs["labels"])
        outputs = model(**model_inputs, logits_to_keep=span)
        loss = weighted_nll(outputs.logits, inputs["labels"][:, -span:], inputs["weights"],
                            self.args.token_probability_clamp)
        self._record_metrics({"mean_weight": float(inputs["weights"].mean())})
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Log like every Digi-Q trainer, adding the preparation statistics to the first training log."""
        if self._pending_preparation_log and self.model.training:
            logs.update({f"best_of_n/{k}": v for k, v in self.preparation_metrics.items()})
            self._pending_preparation_log = False
        super().log(logs, start_time)

    def _card_summary(self) -> str:
        return (
            f"A LoRA adapter for {_quoted(self.model_id)} trained with Digi-Q Best-of-N policy extraction "
            f"(`digiq_trl.BestOfNActorTrainer`, weighting `{self.args.weighting}`): {self._card_selection()} "
            "(the `filtered_bc` and `sft` weightings imitate logged actions)."
        )

    def _card_selection(self) -> str:
        if self.critic is None:
            return "without a critic, each state imitated its logged action"
        formula = advantage_formula(self.critic.config.v_target_combine)
        return f"each logged state's candidate actions were ranked by the critic's advantage `A = {formula}` and the actor imitated the best one"

    def _card_sections(self, repo: str) -> list[tuple[str, str]]:
        return [("Training", self._card_training()), ("Usage", _card_usage(self._base_model_source, repo))]

    def _card_base_model(self) -> str | None:
        return self._base_model_hub_id

    def _card_dataset(self) -> str | None:
        return self.dataset_id

    def _card_training(self) -> str:
        """Markdown: base model, critic, data, method settings and preparation statistics."""
        args = self.args
        lines = {
            "base model": self.model_id,
            "critic": self.critic_id,
            "data": self.dataset_id or "a local transitions dataset",
            "weighting": args.weighting,
            "num_candidates": args.num_candidates,
            "temperature": args.temperature,
            "candidate_source": args.candidate_source,
            "include_logged_action": args.include_logged_action,
            "advantage_threshold": args.advantage_threshold,
            "anchor": args.anchor,
            "learning_rate": args.learning_rate,
            **{k: round(v, 4) for k, v in self.preparation_metrics.items()},
        }
        return "\n".join(f"- {k}: `{v}`" for k, v in lines.items())


def _quoted(description: str) -> str:
    """A model's id in backquotes, or its in-memory description as plain text."""
    return description if description.startswith("an in-memory ") else f"`{description}`"


def _card_usage(base: ModelSource, repo: str) -> str:
    """Code that loads the base model and this adapter (and says so when the base has no Hub id)."""
    note = f"{base.note}\n\n" if base.note else ""
    return (
        f"{note}```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForImageTextToText\n\n"
        "from digiq_trl.models.policy import VLMPolicy\nfrom digiq_trl.models.processing import load_processor\n\n"
        f"base_model = {base.literal}\nadapter = {repo_literal(repo)}\n"
        "actor = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base_model), adapter)\n"
        "policy = VLMPolicy(actor, load_processor(adapter))\n"
        "actions = policy.act([{\"image\": screenshot, \"goal\": goal, \"history\": \"\"}])\n```"
    )


def _model_id(model: torch.nn.Module) -> str | None:
    """The Hub id or path a model was loaded from (the base model's, for a ``PeftModel``), if any."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return base.config.name_or_path or None


def _describe(name: str | None, obj: Any) -> str:
    """A model's id for cards and logs, or its class when it was built in memory."""
    if name:
        return name
    return f"an in-memory {type(obj).__name__}" if obj is not None else "none (baseline weighting)"


def _critic_id(critic: str | DigiQCritic | None) -> str | None:
    if critic is None or isinstance(critic, str):
        return critic
    return critic.config.name_or_path or None


def _dataset_id(dataset: Dataset) -> str | None:
    """The dataset's name when it came from the Hub or a builder (``info.dataset_name``), else None."""
    return getattr(dataset.info, "dataset_name", None)


def _load_critic(critic: str | DigiQCritic | None, args: BestOfNActorConfig) -> DigiQCritic:
    """The critic, loaded when given by name, frozen, in eval mode, on the training device."""
    if critic is None:
        raise ValueError(f"weighting={args.weighting!r} needs a critic (weightings 'filtered_bc' and 'sft' do not)")
    if isinstance(critic, str):
        critic = DigiQCritic.from_pretrained(critic)
    critic.requires_grad_(False)
    return critic.eval().to(args.device)


def _policy(model: PreTrainedModel, processor: Any, args: BestOfNActorConfig) -> Any:
    """The starting policy: ``act`` is its greedy action (the anchor), ``sample`` draws the candidates
    (at ``args.temperature``, passed by the caller)."""
    from ..models.policy import VLMPolicy

    return VLMPolicy(
        model, processor, temperature=0.0, max_new_tokens=args.max_completion_length,
        batch_size=args.candidate_batch_size * args.num_candidates,
    )


def _with_adapter(model: PreTrainedModel | PeftModel, peft_config: PeftConfig | None) -> PeftModel:
    """Wrap ``model`` with a fresh adapter (base frozen), or keep the adapter it already has."""
    if isinstance(model, PeftModel):
        if peft_config is not None:
            raise ValueError("model is already a PeftModel: pass peft_config=None or a plain model")
        return model
    return get_peft_model(model, peft_config if peft_config is not None else default_lora_config())


def _shard_seed(seed: int, process_index: int) -> int:
    """The sampling seed of one process's shard: fixed by the run's seed and the process."""
    return int(hashlib.sha256(f"best-of-n-{seed}-{process_index}".encode()).hexdigest()[:15], 16)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Sample with torch's generator (CPU and ``device``) seeded with ``seed``, and give the global
    generator back as it was: training then starts from the same RNG state whether the preparation
    sampled or came from the cache."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _digest(parts: dict[str, Any]) -> str:
    """A short, stable digest of JSON-able ``parts`` (a cache key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _extractor_identity(extractor: Any) -> Any:
    """What makes an extractor's features: its provenance (weights digest, layer, pooling, prompt),
    or its class for a stand-in without one."""
    provenance = getattr(extractor, "provenance", None)
    return provenance if provenance is not None else type(extractor).__qualname__


@dataclass
class _CachedSteps:
    """Runs the preparation's steps on this process's shard of the states, each cached as an Arrow file.

    A step's file is named by a digest of everything its result depends on (``identity``, the step's
    own settings and the process index/count), so an unchanged rerun (e.g. after an error) reads it
    instead of sampling again, and any change computes a new one. Sampling is seeded right before
    each shard, so equal inputs give equal candidates.
    """

    folder: Path
    identity: dict[str, Any]
    seed: int
    device: torch.device

    def __call__(self, step: str, dataset: Dataset, function: Any, batch_size: int, desc: str,
                 **depends_on: Any) -> dict[str, list[Any]]:
        """New columns from ``function`` over ``dataset`` (batched), identical on every process.

        Each process maps a contiguous shard of the states, then all of them gather the shards in
        process order, so the expensive work (sampling, scoring) is split across processes and every
        process ends with the same prepared data.
        """
        state = PartialState()
        key = _digest({"step": step, **self.identity, **depends_on,
                       "process": [state.process_index, state.num_processes]})
        cache_file = self.folder / f"{step}-{key}.arrow"
        if cache_file.exists():
            logger.info("Best-of-N preparation: %s reused from %s", desc, cache_file)
        shard = dataset.shard(state.num_processes, state.process_index, contiguous=True)
        with _seeded(_shard_seed(self.seed, state.process_index), self.device):
            mapped = shard.map(function, batched=True, batch_size=batch_size, remove_columns=shard.column_names,
                               new_fingerprint=key, cache_file_name=str(cache_file), desc=desc)
        shards = gather_object([mapped.to_dict()])
        return {name: [value for part in shards for value in part[name]] for name in mapped.column_names}


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


def _fits(processor: Any, batch: dict[str, list[Any]], max_length: int) -> list[bool]:
    """Whether each row's prompt (image tokens included) plus answer is at most ``max_length`` tokens."""
    prompts = [render_prompt(processor, g, h) for g, h in zip(batch["goal"], batch["history"])]
    encoded = processor(text=prompts, images=list(batch["image"]), padding=True, return_tensors="pt")
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    answers = [answer_token_ids(processor, g, h, a) for g, h, a in zip(batch["goal"], batch["history"], batch["target_action"])]
    return [p + len(a) <= max_length for p, a in zip(lengths, answers)]
