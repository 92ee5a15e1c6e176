"""Representation fine-tuning (Digi-Q stage 1): ``trl.SFTTrainer`` on the actionability task.

:class:`RepresentationTrainer` is ``SFTTrainer`` with three additions: LoRA from the config by
default, a held-out Yes/No accuracy in ``evaluate()`` (read from the logits of the two answer
tokens, one forward per example, no generation), and :meth:`~RepresentationTrainer.save_representation`,
which merges the adapter when asked so that :class:`~digiq_trl.models.features.VLMFeatureExtractor`
loads the result like any model. :func:`train_representation` runs the whole stage from canonical
transitions.

Example:
    >>> from digiq_trl.trainers.representation_config import RepresentationConfig
    >>> from digiq_trl.trainers.representation_trainer import train_representation
    >>> from digiq_trl.models.tiny import tiny_qwen2_vl
    >>> model, processor = tiny_qwen2_vl()
    >>> args = RepresentationConfig(output_dir="actionability-vlm", max_steps=100, use_cpu=True)
    >>> metrics = train_representation(model, processor, transitions, args)  # doctest: +SKIP
    >>> metrics["eval_yes_no_accuracy"] > metrics["eval_majority_rate"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForImageTextToText
from trl import SFTTrainer

from ..data import split_by_episode
from ..representation import (
    ACTIONABILITY_TEMPLATE_ID,
    NO,
    QUESTION,
    YES,
    build_actionability_dataset,
    label_stats,
)
from .base import DigiQTrainerMixin
from .model_cards import ModelSource, hub_repo_id, model_source, repo_literal
from .representation_config import RepresentationConfig


logger = logging.getLogger(__name__)

def yes_no_token_ids(processor: Any) -> tuple[int, int]:
    """Ids of the first token of ``"Yes"`` and of ``"No"`` where the chat template puts the answer.

    Read from the rendered conversation (answer text after the generation prompt), so prefixes
    such as a leading space are tokenized as in training.

    Raises:
        ValueError: the template does not render the answer after its generation prompt, or both
            answers start with the same token (their logits could not tell them apart).
    """
    prompt = [{"role": "user", "content": [{"type": "text", "text": "?"}]}]
    rendered_prompt = processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    ids = []
    for answer in (YES, NO):
        full = processor.apply_chat_template(
            prompt + [{"role": "assistant", "content": [{"type": "text", "text": answer}]}], tokenize=False
        )
        if not full.startswith(rendered_prompt):
            raise ValueError(f"the chat template does not render the answer after its generation prompt: {full!r}")
        ids.append(processor.tokenizer(full[len(rendered_prompt):], add_special_tokens=False)["input_ids"][0])
    if ids[0] == ids[1]:
        raise ValueError(f"{YES!r} and {NO!r} start with the same token id {ids[0]}; their logits cannot be compared")
    return ids[0], ids[1]


def __getattr__(name: str) -> Any:
    """``answer_token_ids``: the former name of :func:`yes_no_token_ids`, kept importable with a
    warning (:func:`digiq_trl.prompts.answer_token_ids` is the actor's answer tokens)."""
    if name == "answer_token_ids":
        warnings.warn(
            "digiq_trl.trainers.representation_trainer.answer_token_ids is renamed yes_no_token_ids",
            DeprecationWarning, stacklevel=2,
        )
        return yes_no_token_ids
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def yes_no_margins(
    model: torch.nn.Module, processor: Any, dataset: Dataset, batch_size: int = 16
) -> torch.Tensor:
    """``logit(Yes) - logit(No)`` of the first answer token, per example of an actionability dataset.

    Positive means the model answers "Yes" (greedy decoding would pick the larger of the two
    whenever it picks either). Prompts are left-padded, so the last position is the answer's.
    """
    yes_id, no_id = yes_no_token_ids(processor)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    margins = []
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                rows = dataset[start : start + batch_size]
                texts = [
                    processor.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                    for p in rows["prompt"]
                ]
                inputs = processor(
                    text=texts, images=rows["images"], padding=True, padding_side="left", return_tensors="pt"
                )
                logits = model(**inputs.to(device), logits_to_keep=1).logits[:, -1].float()
                margins.append((logits[:, yes_id] - logits[:, no_id]).cpu())
    finally:
        model.train(was_training)
    return torch.cat(margins) if margins else torch.empty(0)


def actionability_metrics(margins: torch.Tensor, labels: Sequence[bool]) -> dict[str, float]:
    """Accuracy of ``margin > 0`` against the labels, with the baselines it must beat.

    Returns ``yes_no_accuracy``, ``yes_no_balanced_accuracy`` (mean of the per-class recalls: 0.5
    for any constant answer), ``majority_rate`` (accuracy of always answering the majority class)
    and ``predicted_yes_rate``.
    """
    truth = torch.tensor([bool(label) for label in labels])
    predicted = margins > 0
    correct = (predicted == truth).float()
    recalls = [correct[truth == cls].mean().item() for cls in (True, False) if (truth == cls).any()]
    return {
        "yes_no_accuracy": correct.mean().item(),
        "yes_no_balanced_accuracy": sum(recalls) / len(recalls),
        "majority_rate": label_stats(truth.tolist())["majority_rate"],
        "predicted_yes_rate": predicted.float().mean().item(),
    }


def _warn_if_constant(predicted_yes_rate: float) -> None:
    """Warn when the model gives one answer to every held-out example: its features learned nothing."""
    if predicted_yes_rate in (0.0, 1.0):
        logger.warning(
            "the model answers %r to every held-out example: the actionability task was not learned. "
            "Train longer or with a higher learning rate; a random-init model needs full fine-tuning "
            "(use_peft=False), since LoRA cannot sharpen its frozen, near-uniform output layer.",
            YES if predicted_yes_rate else NO,
        )


class RepresentationTrainer(DigiQTrainerMixin, SFTTrainer):
    """``trl.SFTTrainer`` for the actionability task (see the module docstring).

    Args:
        model: a VLM (``AutoModelForImageTextToText``) or its Hub id / path.
        args: a :class:`RepresentationConfig`; its LoRA fields apply when ``peft_config`` is None
            and ``args.use_peft`` is set.
        train_dataset: an actionability dataset (:func:`~digiq_trl.representation.build_actionability_dataset`).
        eval_dataset: a held-out actionability dataset; ``evaluate()`` adds Yes/No accuracy on it.
            ``save_model`` (and :meth:`save_representation`) writes a model card with the latest
            evaluation (:class:`~digiq_trl.trainers.base.DigiQTrainerMixin`).
        processing_class: the model's processor.
        peft_config: a peft config that overrides the LoRA fields of ``args``.
        **kwargs: passed to ``SFTTrainer``.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "sft", "representation", "actionability", "gui-agent", "vision-language"]

    def __init__(
        self,
        model: torch.nn.Module | str,
        args: RepresentationConfig,
        train_dataset: Dataset,
        eval_dataset: Dataset | None = None,
        processing_class: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if peft_config is None and args.use_peft:
            peft_config = args.lora_config()
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )

    def _extra_eval_metrics(self, eval_dataset: Dataset | None, metric_key_prefix: str) -> dict[str, float]:
        """Yes/No accuracy and its baselines on the evaluation set (see :func:`actionability_metrics`),
        added to what ``evaluate()`` returns and logs."""
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if not isinstance(dataset, Dataset) or len(dataset) == 0:
            return {}
        margins = yes_no_margins(self.model, self.processing_class, dataset, self.args.per_device_eval_batch_size)
        metrics = actionability_metrics(margins, dataset["screen_changed"])
        _warn_if_constant(metrics["predicted_yes_rate"])
        return {f"{metric_key_prefix}_{key}": value for key, value in metrics.items()}

    def save_representation(self, output_dir: str | None = None) -> str:
        """Save the fine-tuned model, its processor and a model card; returns the directory.

        With ``args.merge_adapter`` (and LoRA), the adapter is merged into the weights first and the
        full model is saved (load it like any VLM); otherwise the adapter alone is saved (load it on
        top of the base). Merging ends training with this trainer: the model is no longer a peft model.
        """
        output_dir = output_dir or self.args.output_dir
        if self.args.merge_adapter and isinstance(self.model, PeftModel):
            self.model = self.model_wrapped = self.model.merge_and_unload()
        self.save_model(output_dir)
        return output_dir

    def _card_summary(self) -> str:
        base = self.model.config.name_or_path or None
        merged = not isinstance(self.model, PeftModel)
        kind = "full fine-tuning" if not self.args.use_peft else "LoRA" + (" (merged)" if merged else " adapter")
        return (
            f"A vision-language model fine-tuned with digiq-trl on the actionability task of "
            f"[Digi-Q](https://arxiv.org/abs/2502.15760) (stage 1, representation fine-tuning): "
            f"{kind} of {f'`{base}`' if base else 'a model built in memory'}, {self.state.global_step} optimizer "
            "steps. Its hidden states are the frozen features of a Digi-Q critic."
        )

    def _card_sections(self, repo: str) -> list[tuple[str, str]]:
        labels = (
            label_stats(self.train_dataset["screen_changed"])
            if isinstance(self.train_dataset, Dataset) and "screen_changed" in self.train_dataset.column_names
            else {}
        )
        base = model_source(self.model.config.name_or_path, "the base model", type(self._base_model()).__name__)
        return [
            ("Actionability task", _task_section(self.args, labels)),
            ("Usage", _usage_section(repo, base, merged=not isinstance(self.model, PeftModel))),
            ("Training", _training_section(self.args)),
        ]

    def _card_base_model(self) -> str | None:
        return hub_repo_id(self.model.config.name_or_path)

    def _base_model(self) -> torch.nn.Module:
        """The transformers model under the adapter (the model itself once merged)."""
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model


def _task_section(args: RepresentationConfig, labels: dict[str, float]) -> str:
    counts = (
        f" Training labels: {labels['num_yes']} Yes / {labels['num_no']} No." if labels else ""
    )
    return (
        f"Prompt `{ACTIONABILITY_TEMPLATE_ID}`: the screenshot with the action drawn on it (a dot at the "
        "touch point, an arrow for a swipe), the goal, the previous actions and the action, then "
        f"\"{QUESTION}\" The answer is {YES!r} when the mean squared RGB difference of the "
        f"screenshots before and after the step, each side divided by {args.screen_downscale}, is above "
        f"{args.change_threshold} (0..255 scale), else {NO!r}.{counts}"
    )


def _usage_section(repo: str, base: ModelSource, merged: bool) -> str:
    """Code that loads the features (merged model, or base model plus adapter)."""
    if merged:
        lines, note = f"model = {repo_literal(repo)}\nextractor = VLMFeatureExtractor.from_pretrained(model)\n", ""
    else:
        lines = (f"base_model = {base.literal}\nadapter = {repo_literal(repo)}\n"
                 "extractor = VLMFeatureExtractor.from_pretrained(base_model, adapter=adapter)\n")
        note = f"{base.note}\n\n" if base.note else ""
    return (
        f"{note}```python\nfrom digiq_trl.models.features import VLMFeatureExtractor\n\n{lines}"
        "v = extractor.state_features(images, goals, histories)  # at the middle layer; a critic's own: for_critic\n```"
    )


def _training_section(args: RepresentationConfig) -> str:
    settings = {
        "use_peft": args.use_peft, "lora_r": args.lora_r if args.use_peft else "-",
        "lora_alpha": args.lora_alpha if args.use_peft else "-", "learning_rate": args.learning_rate,
        "batch size": args.per_device_train_batch_size * args.gradient_accumulation_steps,
        "balance": args.balance, "eval_fraction": args.eval_fraction, "seed": args.seed,
    }
    rows = "\n".join(f"| {name} | {value} |" for name, value in settings.items())
    return f"| setting | value |\n|---|---|\n{rows}"


def _load(model: torch.nn.Module | str, processor: Any) -> tuple[torch.nn.Module, Any]:
    """A model and processor from a Hub id / path (torchvision-free processor when needed)."""
    if isinstance(model, str):
        from ..models.pretrained import resolve_pretrained
        from ..models.processing import load_processor

        processor = processor if processor is not None else load_processor(model)
        model = AutoModelForImageTextToText.from_pretrained(resolve_pretrained(model))
    if processor is None:
        raise ValueError("pass the model's processor (processing_class) with a model object")
    return model, processor


def train_representation(
    model: torch.nn.Module | str,
    processor: Any,
    transitions: Dataset,
    args: RepresentationConfig,
    peft_config: Any = None,
    resume_from_checkpoint: str | None = None,
    save_to: str | Path | None = None,
    dataset_name: str | None = None,
) -> dict[str, float]:
    """Run stage 1 end to end: label, split by episode, fine-tune, evaluate, save (and push).

    Args:
        model: the VLM to fine-tune, or its Hub id / path.
        processor: its processor (loaded from ``model`` when None and ``model`` is a string).
        transitions: canonical transitions (:mod:`digiq_trl.data.schema`).
        args: the configuration; the result goes to ``args.output_dir`` (merged model or adapter,
            processor, model card) and to the Hub when ``args.push_to_hub`` is set.
        peft_config: overrides the LoRA fields of ``args``.
        resume_from_checkpoint: a checkpoint of ``args.output_dir`` to resume training from.
        save_to: where the fine-tuned model goes, when not ``args.output_dir`` (where checkpoints go).
        dataset_name: the Hub id of the transitions, for the pushed model card's metadata.

    Returns:
        The final metrics: training loss, label statistics of the whole dataset (``labels_*``) and,
        with ``args.eval_fraction > 0``, held-out Yes/No accuracy next to the majority-class rate.
    """
    model, processor = _load(model, processor)
    dataset = build_actionability_dataset(
        transitions, threshold=args.change_threshold, balance=args.balance, seed=args.seed,
        downscale=args.screen_downscale,
    )
    train, held_out = dataset, None
    if args.eval_fraction > 0:
        splits = split_by_episode(dataset, args.eval_fraction, seed=args.seed)
        train, held_out = splits["train"], splits["test"] if len(splits["test"]) else None
    trainer = RepresentationTrainer(
        model, args, train_dataset=train, eval_dataset=held_out, processing_class=processor,
        peft_config=peft_config,
    )
    metrics = {f"labels_{k}": v for k, v in label_stats(dataset["screen_changed"]).items()}
    metrics.update(trainer.train(resume_from_checkpoint=resume_from_checkpoint).metrics)
    if held_out is not None:
        metrics.update(trainer.evaluate())
    trainer.save_representation(str(save_to) if save_to is not None else None)
    if args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
    logger.info("representation fine-tuning: %s", metrics)
    return metrics
