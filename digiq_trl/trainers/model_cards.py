"""Model cards (README.md) for what the digiq-trl trainers save and push.

A card is YAML metadata (``huggingface_hub.ModelCardData``) followed by markdown sections; the
trainers supply the sections, this module supplies the layout, the metrics table and the citation.

Example:
    >>> text = render_model_card(title="My critic", summary="Q and V heads.", metrics={"eval_loss": 0.1})
    >>> text.startswith("---") and "| eval_loss | 0.1 |" in text
    True
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from ..citation import DIGIQ_CITATION
from ..models.critic import is_sibling_reference


SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")
"""Suffixes of the timing entries of a Trainer's metrics: they describe the machine, not the model."""

NO_METRICS_NOTE = "No evaluation was run; pass an `eval_dataset` to the trainer to record metrics here."

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def latest_eval_metrics(
    log_history: Sequence[Mapping[str, Any]], prefix: str | tuple[str, ...] = "eval_"
) -> dict[str, float]:
    """The most recent value of every metric starting with ``prefix`` (or any of several) in a
    Trainer's ``state.log_history``, timing entries (:data:`SPEED_SUFFIXES`) left out."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith(prefix) and not key.endswith(SPEED_SUFFIXES):
                metrics[key] = value
    return metrics


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def metrics_table(metrics: Mapping[str, Any], no_metrics_note: str = NO_METRICS_NOTE) -> str:
    """A two-column markdown table, or ``no_metrics_note`` when there are no metrics yet."""
    if not metrics:
        return no_metrics_note
    rows = [f"| {name} | {_format_value(value)} |" for name, value in sorted(metrics.items())]
    return "\n".join(["| metric | value |", "|---|---|", *rows])


def render_model_card(
    *,
    title: str,
    summary: str,
    metrics: Mapping[str, Any] | None = None,
    sections: Sequence[tuple[str, str]] = (),
    tags: Sequence[str] = (),
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str | None = None,
    citation: str = DIGIQ_CITATION,
    no_metrics_note: str = NO_METRICS_NOTE,
) -> str:
    """The full text of a card: metadata, title, summary, metrics, extra sections, citation.

    Args:
        title: the card's heading (usually the model name).
        summary: a paragraph saying what the model is.
        metrics: evaluation metrics shown as a table.
        sections: ``(heading, markdown body)`` pairs placed after the metrics.
        tags: Hub tags (``digiq-trl`` and ``digiq`` are always added).
        base_model: a Hub id the model derives from (adapters: the base VLM), or None.
        datasets: Hub ids of the training datasets, or None.
        license: a Hub license id, or None.
        citation: BibTeX for the method.
        no_metrics_note: what the Evaluation section says when ``metrics`` is empty.
    """
    all_tags = list(dict.fromkeys(["digiq-trl", "digiq", *tags]))
    card_data = ModelCardData(
        library_name="digiq-trl", tags=all_tags, base_model=base_model,
        datasets=list(datasets) if datasets else None, license=license,
    )
    parts = [f"---\n{card_data.to_yaml()}\n---", f"# {title}", summary.strip()]
    parts.append(f"## Evaluation\n\n{metrics_table(metrics or {}, no_metrics_note)}")
    parts += [f"## {heading}\n\n{body.strip()}" for heading, body in sections]
    parts.append(f"## Citation\n\n```bibtex\n{citation}\n```")
    return "\n\n".join(parts) + "\n"


def write_model_card(output_dir: str | Path, text: str) -> Path:
    """Write ``text`` to ``output_dir/README.md`` (creating the folder) and return the path."""
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def hub_repo_id(name_or_path: str | None) -> str | None:
    """``name_or_path`` when it names a Hub repository (``owner/name``, not a local folder), else None."""
    if not name_or_path or os.path.exists(name_or_path) or not _HUB_ID.fullmatch(name_or_path):
        return None
    return name_or_path


@dataclass(frozen=True)
class ModelSource:
    """Where a card's usage code loads a model from, and what it must tell the reader about it.

    ``literal`` is a Python string literal for ``from_pretrained``; ``note`` is empty for a Hub
    repository and otherwise says plainly that the model has no Hub id and how to load it.
    """

    literal: str
    note: str = ""


def model_source(name_or_path: str | None, what: str, built_as: str | None = None) -> ModelSource:
    """How a card tells another user to load ``what`` (e.g. "the base model").

    Args:
        name_or_path: the Hub id or local path the model was loaded from, or None/empty when it
            was built in memory.
        what: the model's role, for the note.
        built_as: the model's class name, named in the note when it was built in memory.
    """
    subject = what[:1].upper() + what[1:]
    if hub_repo_id(name_or_path):
        return ModelSource(repr(name_or_path))
    if name_or_path and is_sibling_reference(name_or_path):
        return ModelSource(
            repr(name_or_path),
            f"{subject} is the folder `{Path(name_or_path).name}` saved beside this card's folder (as a digiq-trl run "
            "writes them); the code below finds it there, so keep the two folders side by side.",
        )
    if name_or_path:
        return ModelSource(
            repr(name_or_path),
            f"{subject} has no Hub id: it was loaded from the local folder `{name_or_path}`. The code below "
            "loads it from that path; use your copy of that folder (or the Hub id of the same weights).",
        )
    built = f" (a `{built_as}`)" if built_as else ""
    placeholder = "path/to/" + re.sub(r"\W+", "-", what.removeprefix("the ")).strip("-")
    return ModelSource(
        repr(placeholder),
        f"{subject} has no Hub id: it was built in memory{built}. Save it with `save_pretrained(path)` "
        "(its processor too) and load it from that path, as below.",
    )


def repo_literal(repo: str) -> str:
    """``repo`` as a Python literal for usage code. A local folder (no Hub repo) is named by its own
    name, relative to where the code runs, with a comment saying so: the card travels with the
    folder, and its absolute path on the machine that wrote it means nothing elsewhere."""
    if hub_repo_id(repo):
        return repr(repo)
    return f"{Path(repo).name!r}  # this card's folder (no Hub id): the path of your copy of it"
