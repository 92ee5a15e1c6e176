"""What the Digi-Q trainers share: Hub tags, windowed metrics and model cards, the TRL way.

The critic, actor and representation trainers derive from different ``transformers`` trainers
(``Trainer`` or ``trl.SFTTrainer``), so the shared part is a mixin placed before that base:
``class DigiQCriticTrainer(DigiQTrainerMixin, Trainer)``. It gives every trainer

* **tags**: the class's ``_tag_names`` (TRL's convention) go on the model
  (``model.add_model_tags``) and into every card;
* **metrics**: per-batch values recorded with :meth:`~DigiQTrainerMixin._record_metrics` are
  averaged over each logging window by :meth:`~DigiQTrainerMixin.log`, and prefixed like the
  evaluation's own metrics (``eval_``) when logged during evaluation;
* **model cards** written the same way wherever weights are written: ``save_model`` (hence every
  checkpoint and ``push_to_hub``) puts the card next to the weights, ``create_model_card`` into
  ``args.output_dir``. The metrics table shows the latest evaluation (log history, or the last
  ``evaluate()`` call), and the usage code names where the model can really be loaded from.

A trainer supplies the card's content through ``_card_summary``, ``_card_sections`` and, when
the model derives from a Hub model, ``_card_base_model``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .model_cards import NO_METRICS_NOTE, hub_repo_id, latest_eval_metrics, render_model_card, write_model_card


class DigiQTrainerMixin:
    """Tags, windowed metrics and model cards for a ``transformers.Trainer`` subclass (see the module)."""

    _tag_names: ClassVar[list[str]] = []
    """Hub tags of the models this trainer produces (``digiq-trl`` and ``digiq`` are always added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics: dict[str, defaultdict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._eval_prefix = "eval_"
        self._eval_prefixes = {"eval_"}
        self._latest_evaluation: dict[str, float] = {}
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

    # ---- metrics ----

    def _record_metrics(self, values: Mapping[str, float]) -> None:
        """Append one batch's values to the current mode's logging window (train or eval)."""
        window = self._metrics["train" if self.model.training else "eval"]
        for name, value in values.items():
            window[name].append(float(value))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the window's means to ``logs`` (prefixed like the evaluation's metrics in eval) and clear it."""
        mode = "train" if self.model.training else "eval"
        prefix = self._eval_prefix if mode == "eval" else ""
        window = self._metrics[mode]
        logs.update({f"{prefix}{name}": sum(values) / len(values) for name, values in window.items() if values})
        window.clear()
        super().log(logs, start_time)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """``Trainer.evaluate`` plus :meth:`_extra_eval_metrics` (logged too), remembered for the model card."""
        outer, self._eval_prefix = self._eval_prefix, f"{metric_key_prefix}_"
        self._eval_prefixes.add(self._eval_prefix)
        try:
            metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        finally:
            self._eval_prefix = outer
        extra = self._extra_eval_metrics(eval_dataset, metric_key_prefix)
        if extra:
            self.log(extra)
            metrics.update(extra)
        self._latest_evaluation.update(latest_eval_metrics([metrics], f"{metric_key_prefix}_"))
        return metrics

    def _extra_eval_metrics(self, eval_dataset: Any, metric_key_prefix: str) -> dict[str, float]:
        """Metrics computed outside the evaluation loop (already prefixed); none by default."""
        return {}

    def card_metrics(self) -> dict[str, float]:
        """The latest value of every evaluation metric: from the log history (which survives a
        resume), updated with the last ``evaluate()`` call (which survives a later ``train()``)."""
        metrics = latest_eval_metrics(self.state.log_history, tuple(sorted(self._eval_prefixes)))
        metrics.update(self._latest_evaluation)
        return metrics

    # ---- model cards ----

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save like ``Trainer`` (checkpoints and ``push_to_hub`` go through here), plus the card."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self._write_model_card(output_dir or self.args.output_dir)

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | Sequence[str] | None = None,
        license: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Write ``README.md`` to ``args.output_dir`` (``push_to_hub`` calls this before uploading).

        Args:
            model_name: the card's title (default: the Hub repo's name, else the output folder's).
            dataset_name: Hub id of the training data (default: the training dataset's own name when it
                is a Hub id; none otherwise, e.g. ``push_to_hub()`` of local or converted data).
            tags: Hub tags added to the trainer's.
            license: a Hub license id.
            **kwargs: the other fields of ``Trainer.create_model_card`` (``language``,
                ``finetuned_from``, ...), which ``push_to_hub`` forwards; these cards do not use them.
        """
        if self.args.should_save:
            self._write_model_card(self.args.output_dir, model_name, dataset_name, tags, license)

    def _write_model_card(
        self,
        folder: str | Path,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | Sequence[str] | None = None,
        license: str | None = None,
    ) -> Path:
        """Render this trainer's card and write it to ``folder/README.md``. The card's ``datasets``
        metadata is ``dataset_name``, else the training dataset's name when it is a Hub id (what
        ``datasets`` records there may be a builder's, ``generator`` or ``parquet``, or a repository's
        name without its owner), else left out."""
        dataset = dataset_name or hub_repo_id(self._card_dataset())
        text = render_model_card(
            title=model_name or self._card_model_name(),
            summary=self._card_summary(),
            metrics=self.card_metrics(),
            sections=self._card_sections(self._card_repo(folder)),
            tags=[*self._tag_names, *([tags] if isinstance(tags, str) else tags or [])],
            base_model=self._card_base_model(),
            datasets=[dataset] if dataset else None,
            license=license,
            no_metrics_note=self._card_no_metrics_note(),
        )
        return write_model_card(folder, text)

    def _card_model_name(self) -> str:
        """The Hub repo's name when pushing, else the output folder's name (as TRL names cards)."""
        hub_id = self.hub_model_id or self.args.hub_model_id
        return hub_id.split("/")[-1] if hub_id else Path(self.args.output_dir).name

    def _card_repo(self, folder: str | Path) -> str:
        """Where users load the model from: its Hub repo when it has one, else the folder the card is in."""
        return self.hub_model_id or self.args.hub_model_id or str(folder)

    def _card_dataset(self) -> str | None:
        """The training dataset's name when it came from the Hub or a builder, else None."""
        return getattr(getattr(self.train_dataset, "info", None), "dataset_name", None)

    def _card_no_metrics_note(self) -> str:
        """What the card says before any evaluation: how to get metrics into it."""
        if self.eval_dataset is not None:
            return "Not evaluated yet: call `trainer.evaluate()` (or set `eval_strategy`) before saving to record metrics here."
        return NO_METRICS_NOTE

    def _card_summary(self) -> str:
        """A paragraph saying what the model is."""
        raise NotImplementedError

    def _card_sections(self, repo: str) -> list[tuple[str, str]]:
        """``(heading, markdown)`` sections after the metrics; ``repo`` is where the model loads from."""
        raise NotImplementedError

    def _card_base_model(self) -> str | None:
        """The Hub id of the model this one derives from (for the card's metadata), or None."""
        return None
