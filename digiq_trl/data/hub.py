"""Transitions datasets in and out: from disk or the Hub (validated), to the Hub (with a card)."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from huggingface_hub import DatasetCard

from .dataset_card import card_text
from .validation import TransitionValidationError, validate_transitions


class HubPushError(RuntimeError):
    """Pushing to the Hub failed (offline, no token, network...); the local copy is untouched."""


def _validate(ds: Dataset | DatasetDict, source: str) -> Dataset | DatasetDict:
    if isinstance(ds, DatasetDict):
        for name, split in ds.items():
            validate_transitions(split, source=f"{source} [{name}]")
        return ds
    return validate_transitions(ds, source=source)


def _from_disk(path: Path, split: str | None) -> Dataset | DatasetDict:
    _refuse_empty(path)
    ds = load_from_disk(str(path))
    if split is None:
        return ds
    if isinstance(ds, Dataset):
        raise ValueError(
            f"{path}: holds a single dataset, not splits; call without split={split!r}"
        )
    if split not in ds:
        raise ValueError(f"{path}: no split {split!r}; it has {list(ds)}")
    return ds[split]


def _refuse_empty(path: Path) -> None:
    """A saved dataset (or split) with no rows has no data files, and ``load_from_disk`` fails on
    it with an ``IndexError``: say what is wrong instead."""
    splits = [path]
    if (path / "dataset_dict.json").is_file():
        names = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
        splits = [path / name for name in names]
    for folder in splits:
        state = folder / "state.json"
        if state.is_file() and not json.loads(state.read_text()).get("_data_files"):
            raise TransitionValidationError(f"{folder}: has no rows (a saved dataset without data files)")


def load_transitions(name_or_path: str | Path, split: str | None = None) -> Dataset | DatasetDict:
    """Load a transitions dataset and validate it against the schema.

    Args:
        name_or_path: a folder written by ``save_to_disk`` (e.g. by ``digiq-trl convert``) or a
            Hub dataset id such as ``"user/aitw-general-transitions"``.
        split: the split to return (``"train"``, ``"test"``...); all splits when omitted.

    Returns:
        A ``Dataset`` (one split, or a folder holding a single dataset) or a ``DatasetDict``.

    Raises:
        TransitionValidationError: the data breaks the schema (names the source, row and field).

    Example:
        >>> from digiq_trl.data.hub import load_transitions
        >>> train = load_transitions("out/aitw-general", split="train")  # doctest: +SKIP
    """
    path = Path(name_or_path)
    if path.exists():
        ds, source = _from_disk(path, split), str(path)
    else:
        ds, source = load_dataset(str(name_or_path), split=split), str(name_or_path)
    return _validate(ds, source if split is None else f"{source} [{split}]")


def push_transitions(
    ds: Dataset | DatasetDict,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    description: str = "",
) -> str:
    """Validate ``ds`` and push it to the Hub with a dataset card (schema, sources, citations).

    Args:
        ds: the transitions (a ``Dataset`` or a ``DatasetDict`` of splits).
        repo_id: the Hub dataset repository, e.g. ``"user/aitw-general-transitions"``.
        private: create the repository as private.
        token: a Hub token; the logged-in one by default.
        description: a paragraph for the card (where the data comes from, how it was collected).

    Returns:
        The URL of the dataset repository.

    Raises:
        TransitionValidationError: ``ds`` breaks the schema (nothing is pushed).
        HubPushError: the push failed (offline, auth, network); local data is untouched.
    """
    _validate(ds, "dataset to push")
    untouched = "the local copy is untouched"
    if huggingface_hub.is_offline_mode():
        raise HubPushError(
            f"cannot push to the Hub dataset {repo_id!r}: offline mode (HF_HUB_OFFLINE) is on; "
            f"{untouched}"
        )
    try:
        ds.push_to_hub(repo_id, private=private, token=token)
        card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
        card.text = card_text(ds, description)
        card.push_to_hub(
            repo_id, repo_type="dataset", token=token, commit_message="Add dataset card"
        )
    except Exception as error:
        raise HubPushError(
            f"pushing to the Hub dataset {repo_id!r} failed ({type(error).__name__}: {error}); "
            f"{untouched}"
        ) from error
    return f"https://huggingface.co/datasets/{repo_id}"
