"""Digi-Q critic training: double Q / double V heads regressed by offline TD (or Monte-Carlo).

The trainer reads cached VLM features (dataset columns), so a step costs only the MLP heads. The
Polyak update of the target heads runs in a callback on ``on_optimizer_step``: the Trainer fires it
once per real optimizer step, after the accumulated gradients were applied, so gradient accumulation
does not multiply target updates, and under DDP every rank applies the same update to identical
(synchronized) weights. Steps skipped by a mixed-precision scaler do not move the targets.

Example:
    >>> from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig
    >>> from digiq_trl.trainers.critic_config import DigiQCriticConfig
    >>> from digiq_trl.trainers.critic_trainer import DigiQCriticTrainer
    >>> critic = DigiQCritic(DigiQCriticModelConfig(q_input_dim=4096, v_input_dim=4096))
    >>> trainer = DigiQCriticTrainer(critic, DigiQCriticConfig("critic"), train_dataset=ds,
    ...                              eval_dataset=held_out)  # doctest: +SKIP
    >>> trainer.train(); trainer.evaluate(); trainer.push_to_hub()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import EvalLoopOutput

from ..models.critic import PROVENANCE_FIELDS, DigiQCritic, DigiQCriticOutput, is_sibling_reference
from ..models.pretrained import SHIPPED_MODELS
from ..targets import (
    advantage_formula,
    auroc,
    conservative_penalty,
    mc_targets,
    ranking_scores,
    td_targets,
    v_targets,
)
from .base import DigiQTrainerMixin
from .critic_collator import TEXT_COLUMNS, DigiQCriticCollator, Pair, critic_texts
from .critic_config import DigiQCriticConfig
from .model_cards import ModelSource, hub_repo_id, model_source, repo_literal


logger = logging.getLogger(__name__)


_DIAGNOSTICS = ("state_value", "mc_return", "first_step", "success", "ranking")
"""Per-row columns ``prediction_step`` returns for the critic-quality metrics, in this order."""

_CANONICAL_FEATURES = {
    "q_features": "q_features_column",
    "v_features": "v_features_column",
    "next_v_features": "next_v_features_column",
    "alt_q_features": "alt_q_features_column",
}
"""Batch key of each feature -> the config field naming its dataset column (``cache_features``
writes the batch-key names)."""


class TargetNetworkUpdateCallback(TrainerCallback):
    """Polyak-updates the critic's target heads after every ``interval``-th optimizer step."""

    def __init__(self, tau: float, interval: int) -> None:
        self.tau = tau
        self.interval = interval

    def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None,
                          optimizer: Any = None, **kwargs: Any) -> None:
        """Called right after ``optimizer.step()``, before ``state.global_step`` is incremented."""
        if getattr(optimizer, "step_was_skipped", False):
            return
        if (state.global_step + 1) % self.interval == 0:
            model.update_targets(self.tau)


class DigiQCriticTrainer(DigiQTrainerMixin, Trainer):
    """Trains a :class:`~digiq_trl.models.critic.DigiQCritic` on logged transitions, offline.

    Loss (``loss_type="td"``): ``sum_i MSE(Q_i(s, a), r + gamma (1 - done) Vbar_i(s'))
    + sum_i MSE(V_i(s), Qbar(s, a))`` with the V targets combined by ``v_target_combine``;
    (``"mc"``): all four heads regress to ``mc_return``. Logged every ``logging_steps``, averaged over
    the window: ``q1``, ``q2``, ``v1``, ``v2`` (means), ``td_error`` (mean |Q - Q target|),
    ``target_q``, ``target_v`` (target means), ``q_loss``, ``v_loss``.

    ``evaluate()`` adds ``v_mc_mse`` (MSE of max(V1, V2)(s) against the MC return), ``v0_auroc``
    (AUROC of V(s_0) on first steps for trajectory success, ``trajectory_reward > 0``) and
    ``ranking_accuracy`` (on states of successful trajectories with alternatives: how often
    max(Q1, Q2) of the logged action beats that of each alternative, ties half), with ``eval_loss``
    the TD (or MC) loss on the held-out set.

    ``save_model`` (also every checkpoint and ``push_to_hub``) writes the heads and a model card
    with the latest evaluation and code that rebuilds the features
    (:class:`~digiq_trl.trainers.base.DigiQTrainerMixin`).

    Args:
        model: the critic, or a Hub id / path to load one from.
        args: a :class:`DigiQCriticConfig`; defaults to one with ``output_dir="<backbone>-DigiQCritic"``
            (TRL's ``<model>-<Trainer>`` pattern, the backbone being the VLM the features come from).
        train_dataset: transitions with the cached feature columns, or raw transitions (then pass
            ``feature_extractor``).
        eval_dataset: held-out episodes (a dataset or a dict of them), same rules.
        feature_extractor: a ``digiq_trl.models.features.VLMFeatureExtractor`` used to cache features
            of datasets that lack them; its provenance is recorded in the critic's config.
        processing_class: the tokenizer of the critic's text encoder (required when the critic has
            one: ``config.text_encoder_config``); saved with the critic. The datasets then also need
            ``goal``, ``history``, ``action`` and, for alternatives, ``alt_actions_column``.
        data_collator: defaults to :class:`DigiQCriticCollator`.
        callbacks, optimizers, optimizer_cls_and_kwargs: as in :class:`~transformers.Trainer`.
    """

    loss_is_scaled_for_ga = False
    _tag_names = ["critic", "q-function", "offline-rl", "gui-agent"]

    def __init__(
        self,
        model: DigiQCritic | str,
        args: DigiQCriticConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        feature_extractor: Any = None,
        processing_class: Any = None,
        data_collator: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
    ) -> None:
        if isinstance(model, str):
            model = DigiQCritic.from_pretrained(model)
        if not isinstance(model, DigiQCritic):
            raise TypeError(f"model must be a DigiQCritic or a path to one, got {type(model).__name__}")
        args = args if args is not None else DigiQCriticConfig(output_dir=_default_output_dir(model))
        model.config.v_target_combine = args.v_target_combine  # the advantage combines Q heads the same way
        self.feature_extractor = feature_extractor
        if feature_extractor is not None:
            _check_extractor_width(model, feature_extractor)
            _record_provenance(model, feature_extractor)
        column_of = {key: getattr(args, field) for key, field in _CANONICAL_FEATURES.items()}
        self.texts = critic_texts(model, processing_class, args)
        if train_dataset is not None:
            train_dataset = self._prepare_dataset(train_dataset, model, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {name: self._prepare_dataset(ds, model, args, f"eval[{name}]")
                            for name, ds in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, model, args, "eval")
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or DigiQCriticCollator(column_of, self.texts),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
        )
        self.add_callback(TargetNetworkUpdateCallback(args.tau, args.target_update_interval))

    # ---- data ----

    def _prepare_dataset(self, dataset: Dataset, model: DigiQCritic, args: DigiQCriticConfig,
                         split: str) -> Dataset:
        """Featurize if needed, check columns and dimensions, keep only the columns used."""
        if not isinstance(dataset, Dataset):
            raise TypeError(f"{split} dataset must be a datasets.Dataset, got {type(dataset).__name__}")
        if len(dataset) == 0:
            raise ValueError(f"{split} dataset is empty")
        is_eval = split.startswith("eval")
        needed_features = _needed_feature_columns(args)
        if any(column not in dataset.column_names for column in needed_features):
            dataset = self._featurize(dataset, args, split, is_eval)
        needed = needed_features + _needed_plain_columns(args, is_eval)
        missing = [column for column in needed if column not in dataset.column_names]
        if missing:
            raise ValueError(
                f"{split} dataset is missing column(s) {missing} needed for loss_type="
                f"{args.loss_type!r}; it has {dataset.column_names}"
            )
        optional = [args.alt_q_features_column] if is_eval or args.conservative_weight > 0 else []
        if model.config.has_text:
            needed += [column for column in TEXT_COLUMNS if column not in needed]
            optional += [args.alt_actions_column] if args.alt_actions_column else []
            missing = [column for column in TEXT_COLUMNS if column not in dataset.column_names]
            if missing:
                raise ValueError(f"{split} dataset is missing column(s) {missing}: the critic reads goal, history "
                                 f"and action as text; it has {dataset.column_names}")
        used = needed + [column for column in optional if column in dataset.column_names]
        dataset = dataset.select_columns(used)
        _check_dimensions(dataset[0], model, args, split)
        return dataset.with_format("numpy")

    def _featurize(self, dataset: Dataset, args: DigiQCriticConfig, split: str,
                   is_eval: bool) -> Dataset:
        """Cache the VLM features of raw transitions with ``cache_features`` (imported lazily).

        The main process computes first; under DDP the other ranks then reuse its on-disk cache.
        """
        if self.feature_extractor is None:
            missing = [c for c in _needed_feature_columns(args) if c not in dataset.column_names]
            raise ValueError(
                f"{split} dataset is missing feature column(s) {missing}; cache them first with "
                "digiq_trl.models.feature_cache.cache_features, or pass feature_extractor= to the trainer"
            )
        from ..models.feature_cache import cache_features

        alt_column = args.alt_actions_column
        wants_alt = is_eval or args.conservative_weight > 0
        use_alt = wants_alt and alt_column is not None and alt_column in dataset.column_names
        with args.main_process_first(desc=f"caching {split} features"):
            dataset = cache_features(dataset, self.feature_extractor, batch_size=args.feature_batch_size,
                                     alt_actions_column=alt_column if use_alt else None)
        renames = {key: getattr(args, field) for key, field in _CANONICAL_FEATURES.items()
                   if key != getattr(args, field) and key in dataset.column_names}
        return dataset.rename_columns(renames) if renames else dataset

    # ---- loss ----

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                     return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None,
                     ) -> torch.Tensor | tuple[torch.Tensor, DigiQCriticOutput]:
        """Double-Q / double-V regression on TD (or MC) targets; records the logged statistics."""
        outputs = model(q_features=inputs["q_features"], v_features=inputs["v_features"],
                        q_text=inputs.get("q_text"), v_text=inputs.get("v_text"))
        q_targets, v_targets_ = self._regression_targets(inputs)
        q_loss = F.mse_loss(outputs.q1, q_targets[0]) + F.mse_loss(outputs.q2, q_targets[1])
        v_loss = F.mse_loss(outputs.v1, v_targets_[0]) + F.mse_loss(outputs.v2, v_targets_[1])
        self._record(outputs, q_targets, v_targets_, q_loss, v_loss)
        loss = q_loss + v_loss
        if self.args.conservative_weight > 0 and model.training:
            loss = loss + self.args.conservative_weight * self._conservative_penalty(model, inputs, outputs)
        return (loss, outputs) if return_outputs else loss

    def _conservative_penalty(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                              outputs: DigiQCriticOutput) -> torch.Tensor:
        """Summed over both Q heads: :func:`~digiq_trl.targets.conservative_penalty` on this batch."""
        if "alt_q_features" not in inputs:
            raise ValueError(
                "conservative_weight > 0 needs alternative actions in the training data: an "
                f"{self.args.alt_q_features_column!r} column, or raw transitions with "
                f"{self.args.alt_actions_column!r} and a feature_extractor"
            )
        alt_q1, alt_q2 = _alternative_q_values(self.accelerator.unwrap_model(model), inputs)
        mask = inputs["alt_mask"]
        return conservative_penalty(outputs.q1, alt_q1, mask) + conservative_penalty(outputs.q2, alt_q2, mask)

    def _regression_targets(self, inputs: dict[str, torch.Tensor]) -> tuple[Pair, Pair]:
        """``((Q1 target, Q2 target), (V1 target, V2 target))`` for this batch, without grad."""
        if self.args.loss_type == "mc":
            target = mc_targets(inputs["mc_return"])
            return (target, target), (target, target)
        critic = self.accelerator.unwrap_model(self.model)
        next_v1, next_v2 = critic.target_v_values(inputs["next_v_features"], inputs.get("next_v_text"))
        q_targets = td_targets(inputs["reward"], inputs["done"], next_v1, next_v2, self.args.gamma)
        target_q1, target_q2 = critic.target_q_values(inputs["q_features"], inputs["v_features"], inputs.get("q_text"))
        return q_targets, v_targets(target_q1, target_q2, self.args.v_target_combine)

    @torch.no_grad()
    def _record(self, outputs: DigiQCriticOutput, q_targets: Pair, v_targets_: Pair,
                q_loss: torch.Tensor, v_loss: torch.Tensor) -> None:
        """Append this batch's statistics (averaged over processes) to the logging window."""
        td_error = 0.5 * ((outputs.q1 - q_targets[0]).abs().mean() + (outputs.q2 - q_targets[1]).abs().mean())
        stats = {
            "q1": outputs.q1.mean(), "q2": outputs.q2.mean(),
            "v1": outputs.v1.mean(), "v2": outputs.v2.mean(),
            "td_error": td_error,
            "target_q": 0.5 * (q_targets[0].mean() + q_targets[1].mean()),
            "target_v": 0.5 * (v_targets_[0].mean() + v_targets_[1].mean()),
            "q_loss": q_loss, "v_loss": v_loss,
        }
        stacked = torch.stack([value.detach().float() for value in stats.values()])
        averaged = self.accelerator.gather(stacked.unsqueeze(0)).mean(0).tolist()
        self._record_metrics(dict(zip(stats, averaged)))

    def floating_point_ops(self, inputs: dict[str, torch.Tensor]) -> int:
        """Rough training FLOPs of one batch: forward + backward through the trainable heads."""
        return 6 * inputs["q_features"].shape[0] * self.model.num_parameters(only_trainable=True)

    # ---- evaluation ----

    def prediction_step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor],
                        prediction_loss_only: bool, ignore_keys: list[str] | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Eval loss plus per-row diagnostics (see ``_DIAGNOSTICS``) for the critic-quality metrics."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
            diagnostics = self._diagnostics(inputs, outputs)
        return loss.detach(), diagnostics, None

    def _diagnostics(self, inputs: dict[str, torch.Tensor], outputs: DigiQCriticOutput) -> torch.Tensor:
        success = inputs["trajectory_reward"] > 0
        ranking = torch.full_like(outputs.q1, float("nan"))
        if "alt_q_features" in inputs and inputs["alt_q_features"].shape[1] > 0:
            alt_q1, alt_q2 = _alternative_q_values(self.accelerator.unwrap_model(self.model), inputs)
            logged = torch.maximum(outputs.q1, outputs.q2)
            scores = ranking_scores(logged, torch.maximum(alt_q1, alt_q2), inputs["alt_mask"])
            ranking = torch.where(success, scores, ranking)
        columns = (torch.maximum(outputs.v1, outputs.v2), inputs["mc_return"],
                   inputs["step_id"] == 0, success, ranking)
        return torch.stack([column.float() for column in columns], dim=-1)

    def evaluation_loop(self, dataloader: Any, description: str,
                        prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None,
                        metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """Trainer's loop (eval loss, gathered diagnostics), then the critic-quality metrics."""
        output = super().evaluation_loop(dataloader, description, prediction_loss_only=False,
                                         ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if output.predictions is not None:
            quality = critic_quality_metrics(np.asarray(output.predictions))
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in quality.items()})
            for name, why in UNDEFINED_METRIC_REASONS.items():
                if np.isnan(quality[name]):
                    logger.warning("%s_%s is nan: %s", metric_key_prefix, name, why)
        return output

    # ---- model card ----

    def _card_summary(self) -> str:
        config = self.model.config
        return (
            f"A [Digi-Q](https://arxiv.org/abs/2502.15760) critic trained with digiq-trl by offline "
            f"{'TD' if self.args.loss_type == 'td' else 'Monte-Carlo'} regression ({self.state.global_step} "
            f"optimizer steps). It holds double Q heads over state-action features ({config.q_input_dim}-d) and "
            f"double V heads over state features ({config.v_input_dim}-d) of a frozen VLM, each an MLP with "
            f"{config.num_hidden_layers} hidden layers of {config.hidden_size} units, plus their Polyak target "
            f"copies.{_text_summary(config)} It scores candidate actions of a device-control agent by the "
            f"advantage {advantage_formula(config.v_target_combine)}."
        )

    def _card_sections(self, repo: str) -> list[tuple[str, str]]:
        return [("Rebuilding the features", _features_section(self.model.config, repo)),
                ("Usage", _usage_section(repo)), ("Training", _training_section(self.args))]

    def _card_base_model(self) -> str | None:
        """The feature backbone when the critic's config names it by Hub id (not a local folder, a
        ``../representation`` beside the critic, or a model shipped inside digiq-trl)."""
        backbone = self.model.config.backbone_model_id
        return None if backbone in SHIPPED_MODELS else hub_repo_id(backbone)

UNDEFINED_METRIC_REASONS = {
    "v0_auroc": "the evaluation episodes are all successes or all failures",
    "ranking_accuracy": "no evaluation state of a successful episode has alternative actions "
    "(alt_q_features, or alt_actions_column in a raw dataset)",
}
"""Why each critic-quality metric can be undefined (nan) on an evaluation set."""


def _default_output_dir(model: DigiQCritic) -> str:
    """``<backbone name>-DigiQCritic`` (``DigiQCritic`` alone for a critic without a recorded backbone)."""
    backbone = model.config.backbone_model_id
    return f"{backbone.rstrip('/').split('/')[-1]}-DigiQCritic" if backbone else "DigiQCritic"


def _alternative_q_values(critic: DigiQCritic, inputs: dict[str, Any]) -> Pair:
    """``(Q1, Q2)`` of the alternative actions ``(B, K)``, the state features broadcast over them."""
    return critic.q_values(inputs["alt_q_features"], inputs["v_features"].unsqueeze(1), inputs.get("alt_q_text"))


def critic_quality_metrics(diagnostics: np.ndarray) -> dict[str, float]:
    """``v_mc_mse``, ``v0_auroc`` and ``ranking_accuracy`` from gathered per-row diagnostics."""
    columns = dict(zip(_DIAGNOSTICS, diagnostics.T))
    first = columns["first_step"] > 0.5
    ranking = columns["ranking"][~np.isnan(columns["ranking"])]
    return {
        "v_mc_mse": float(np.mean((columns["state_value"] - columns["mc_return"]) ** 2)),
        "v0_auroc": auroc(columns["state_value"][first], columns["success"][first] > 0.5),
        "ranking_accuracy": float(ranking.mean()) if ranking.size else float("nan"),
    }


def _needed_feature_columns(args: DigiQCriticConfig) -> list[str]:
    columns = [args.q_features_column, args.v_features_column]
    if args.loss_type == "td":
        columns.append(args.next_v_features_column)
    return columns


def _needed_plain_columns(args: DigiQCriticConfig, is_eval: bool) -> list[str]:
    columns = ["reward", "done"] if args.loss_type == "td" else ["mc_return"]
    if is_eval:
        columns += [c for c in ("mc_return", "trajectory_reward", "step_id") if c not in columns]
    return columns


def _feature_width(value: Any, column: str, split: str) -> int:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"{split} dataset column {column!r} must hold one vector per row, "
                         f"got shape {array.shape} in row 0")
    return int(array.shape[0])


def _check_dimensions(row: Mapping[str, Any], model: DigiQCritic, args: DigiQCriticConfig,
                      split: str) -> None:
    """Compare the first row's feature widths with the critic config; name column and both dims."""
    expected = {args.q_features_column: ("q_input_dim", model.config.q_input_dim),
                args.v_features_column: ("v_input_dim", model.config.v_input_dim),
                args.next_v_features_column: ("v_input_dim", model.config.v_input_dim)}
    widths = {c: _feature_width(row[c], c, split) for c in expected if c in row}
    alternatives = row.get(args.alt_q_features_column)
    if alternatives is not None and len(alternatives) > 0:
        expected[args.alt_q_features_column] = expected[args.q_features_column]
        widths[args.alt_q_features_column] = _feature_width(alternatives[0], args.alt_q_features_column, split)
    for column, width in widths.items():
        field, dim = expected[column]
        if width != dim:
            raise ValueError(
                f"{split} dataset column {column!r} has dimension {width} but the critic's "
                f"config.{field} is {dim}; build the critic with {field}={width} or use features "
                "from the backbone/layer it was configured for"
            )


def _check_extractor_width(model: DigiQCritic, extractor: Any) -> None:
    """Fail before any VLM forward when the extractor's features cannot fit the critic."""
    width = getattr(extractor, "hidden_size", None)
    for field in ("q_input_dim", "v_input_dim"):
        dim = getattr(model.config, field)
        if width is not None and width != dim:
            raise ValueError(
                f"the feature extractor's features have dimension {width} but the critic's "
                f"config.{field} is {dim}; build the critic with {field}={width}"
            )


def _record_provenance(model: DigiQCritic, extractor: Any) -> None:
    """Copy the extractor's provenance into the critic config; refuse a contradicting one."""
    provenance = getattr(extractor, "provenance", None) or {}
    for key, field in PROVENANCE_FIELDS.items():
        value = provenance.get(key)
        current = getattr(model.config, field)
        if value is None or current == value:
            continue
        if current is not None:
            raise ValueError(
                f"the critic's config.{field} is {current!r} but the feature extractor's {key} is "
                f"{value!r}: its features would not match what the critic was built for"
            )
        setattr(model.config, field, value)


def _text_summary(config: Any) -> str:
    """One sentence on the critic's text encoder, or nothing without one."""
    if not config.has_text:
        return ""
    origin = f"initialized from `{config.text_encoder_name}`" if config.text_encoder_name else "randomly initialized"
    return (f" The heads also read the goal, the previous action and the action as text ({config.text_layout} layout) "
            f"through a {config.text_encoder_config['model_type']} encoder ({origin}, trained with the heads; "
            "its tokenizer is saved with the critic).")


def _features_section(config: Any, repo: str) -> str:
    """The recorded provenance, and code that rebuilds exactly these features (checked by digest)."""
    rows = "\n".join(f"| `{field}` | `{getattr(config, field)}` |" for field in PROVENANCE_FIELDS.values())
    backbone = model_source(config.backbone_model_id, "the feature backbone")
    if not config.backbone_model_id:
        backbone = ModelSource(backbone.literal, "The critic's config records no feature backbone: pass the VLM "
                               "its features came from as `backbone=`.")
    note = f"{backbone.note}\n\n" if backbone.note else ""
    relative = is_sibling_reference(config.backbone_model_id or "")
    argument = f", backbone={backbone.literal}" if backbone.note and not relative else ""
    return (
        "The heads only make sense on features computed exactly as during training:\n\n"
        f"| setting | value |\n|---|---|\n{rows}\n\n{note}"
        "`VLMFeatureExtractor.for_critic` loads the recorded backbone, revision, adapter, layer and pooling, "
        "and refuses weights whose digest differs from the recorded one or a digiq-trl whose prompt template "
        "(`digiq_trl.prompts.PROMPT_TEMPLATE_ID`) is not `prompt_template_id`.\n\n"
        "```python\nfrom digiq_trl.models.critic import DigiQCritic\n"
        "from digiq_trl.models.feature_cache import cache_features\n"
        "from digiq_trl.models.features import VLMFeatureExtractor\n\n"
        f"repo = {repo_literal(repo)}\n"
        "critic = DigiQCritic.from_pretrained(repo)\n"
        f"extractor = VLMFeatureExtractor.for_critic(critic.config{argument})\n"
        "dataset = cache_features(dataset, extractor)  # adds q_features, v_features, next_v_features\n"
        "```"
    )


def _usage_section(repo: str) -> str:
    return (
        "Score candidate actions on screenshots: `CriticScorer` loads the critic, its feature extractor "
        "and its text encoder's tokenizer, and computes the advantage by the formula the critic was "
        "trained for.\n\n"
        "```python\nfrom digiq_trl.models.scoring import CriticScorer\n\n"
        f"repo = {repo_literal(repo)}\n"
        "scorer = CriticScorer.load(repo)\n"
        "scores = scorer.score(images, goals, histories, candidates)  # per state: Scores(q, v, advantage)\n"
        "advantage = scores[0].advantage  # one value per candidate of the first state\n"
        "```"
    )


def _training_section(args: DigiQCriticConfig) -> str:
    settings = {
        "loss_type": args.loss_type, "gamma": args.gamma, "tau": args.tau,
        "target_update_interval": args.target_update_interval, "v_target_combine": args.v_target_combine,
        "learning_rate": args.learning_rate, "max_grad_norm": args.max_grad_norm,
        "batch size": args.per_device_train_batch_size * args.gradient_accumulation_steps,
        "seed": args.seed,
    }
    rows = "\n".join(f"| {name} | {value} |" for name, value in settings.items())
    return f"| setting | value |\n|---|---|\n{rows}"
