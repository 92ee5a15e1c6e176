"""Best-of-N policy extraction (Digi-Q stage 4) as a ``transformers.Trainer``, training LoRA adapters.

Before training, every state of the dataset is prepared once, from the frozen *starting* policy
(:func:`~digiq_trl.trainers.best_of_n_preparation.prepare`): candidate actions (N samples, the
dataset's ``candidate_actions``, or both) scored by the frozen critic's advantage, the best one as
the state's imitation target (weighted by :func:`digiq_trl.best_of_n.sample_weights`, ``1[A >
threshold]`` by default), and an *anchor* (the starting policy's greedy action by default) for the
states whose choice is not above the threshold, so that the actor trains on the whole offline
dataset as in the reference. Under several processes each prepares a contiguous shard of the states
and all gather the result. The preparation is reproducible (seeded from ``args.seed``) and cached,
verified, under ``args.output_dir`` (:mod:`~digiq_trl.trainers.preparation_cache`), so a rerun with
the same inputs reads the candidates instead of sampling them again; nothing is written next to the
user's dataset.

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

from typing import Any

import torch
from datasets import Dataset
from peft import PeftConfig, PeftModel, get_peft_model
from transformers import AutoModelForImageTextToText, PreTrainedModel, ProcessorMixin, Trainer, set_seed
from transformers.utils import logging

from ..best_of_n import uses_critic
from ..models.critic import DigiQCritic
from ..models.features import VLMFeatureExtractor
from ..models.pretrained import resolve_pretrained
from ..models.processing import load_processor
from ..models.scoring import CriticScorer
from ..prompts import answer_token_ids, render_prompt
from ..targets import advantage_formula
from .actor_collator import BestOfNCollator, answer_span, weighted_nll
from .actor_config import BestOfNActorConfig
from .base import DigiQTrainerMixin
from .best_of_n_preparation import prepare
from .lora import default_lora_config
from .model_cards import ModelSource, hub_repo_id, model_source, repo_literal


logger = logging.get_logger(__name__)

TRAIN_COLUMNS = ("image", "goal", "history", "target_action", "target_weight")
"""Columns of the prepared dataset the collator reads."""


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
        self.critic_id = _describe(_critic_id(critic) if self.critic is not None else None, self.critic)
        self._base_model_source = model_source(model_id, "the base model", type(model).__name__)
        self._base_model_hub_id = hub_repo_id(model_id)
        self.dataset_id = _dataset_id(train_dataset)
        model.to(args.device)
        self.prepared_dataset, self.preparation_metrics = prepare(model, processing_class, train_dataset, args, self.scorer)
        train = self._training_rows(self.prepared_dataset, processing_class, args, "train")
        evaluation = None
        if eval_dataset is not None:
            prepared_eval, _ = prepare(model, processing_class, eval_dataset, args, self.scorer)
            evaluation = self._training_rows(prepared_eval, processing_class, args, "eval")
        model = _with_adapter(model, peft_config)
        super().__init__(
            model=model, args=args, data_collator=data_collator or BestOfNCollator(processing_class),
            train_dataset=train, eval_dataset=evaluation, processing_class=processing_class,
            callbacks=callbacks, optimizers=optimizers,
        )
        self._pending_preparation_log = True

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
    """The dataset's Hub id when it came from the Hub (``info.dataset_name``), else None (a builder's
    name such as ``generator`` names no dataset a reader could find)."""
    return hub_repo_id(getattr(dataset.info, "dataset_name", None))


def _load_critic(critic: str | DigiQCritic | None, args: BestOfNActorConfig) -> DigiQCritic:
    """The critic, loaded when given by name, frozen, in eval mode, on the training device."""
    if critic is None:
        raise ValueError(f"weighting={args.weighting!r} needs a critic (weightings 'filtered_bc' and 'sft' do not)")
    if isinstance(critic, str):
        critic = DigiQCritic.from_pretrained(critic)
    critic.requires_grad_(False)
    return critic.eval().to(args.device)


def _with_adapter(model: PreTrainedModel | PeftModel, peft_config: PeftConfig | None) -> PeftModel:
    """Wrap ``model`` with a fresh adapter (base frozen), or keep the adapter it already has."""
    if isinstance(model, PeftModel):
        if peft_config is not None:
            raise ValueError("model is already a PeftModel: pass peft_config=None or a plain model")
        return model
    return get_peft_model(model, peft_config if peft_config is not None else default_lora_config())


def _fits(processor: Any, batch: dict[str, list[Any]], max_length: int) -> list[bool]:
    """Whether each row's prompt (image tokens included) plus answer is at most ``max_length`` tokens."""
    prompts = [render_prompt(processor, g, h) for g, h in zip(batch["goal"], batch["history"])]
    encoded = processor(text=prompts, images=list(batch["image"]), padding=True, return_tensors="pt")
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    answers = [answer_token_ids(processor, g, h, a) for g, h, a in zip(batch["goal"], batch["history"], batch["target_action"])]
    return [p + len(a) <= max_length for p, a in zip(lengths, answers)]
