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
from pathlib import Path
from typing import Any, Mapping, Sequence

from huggingface_hub import ModelCardData

from ..citation import DIGIQ_CITATION

_SPEED_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")


def latest_eval_metrics(log_history: Sequence[Mapping[str, Any]], prefix: str = "eval_") -> dict[str, float]:
    """The most recent value of every ``prefix``-ed metric in a Trainer's ``state.log_history``.

    Timing entries (runtime, samples/s) are left out: they describe the machine, not the model.
    """
    metrics: dict[str, float] = {}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith(prefix) and not key.endswith(_SPEED_SUFFIXES):
                metrics[key] = value
    return metrics


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """A two-column markdown table, or a note when there are no metrics yet."""
    if not metrics:
        return "No evaluation was run; pass an `eval_dataset` to the trainer to record metrics here."
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
    """
    all_tags = list(dict.fromkeys(["digiq-trl", "digiq", *tags]))
    card_data = ModelCardData(
        library_name="digiq-trl", tags=all_tags, base_model=base_model,
        datasets=list(datasets) if datasets else None, license=license,
    )
    parts = [f"---\n{card_data.to_yaml()}\n---", f"# {title}", summary.strip()]
    parts.append(f"## Evaluation\n\n{metrics_table(metrics or {})}")
    parts += [f"## {heading}\n\n{body.strip()}" for heading, body in sections]
    parts.append(f"## Citation\n\n```bibtex\n{citation}\n```")
    return "\n\n".join(parts) + "\n"


def write_model_card(output_dir: str | Path, text: str) -> Path:
    """Write ``text`` to ``output_dir/README.md`` (creating the folder) and return the path."""
    path = Path(output_dir) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
