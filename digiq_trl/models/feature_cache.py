"""Cache frozen-VLM features as Arrow columns of a transitions dataset, once per setting.

The critic trains for hundreds of steps on the same transitions; running the VLM every step is what
made the reference implementation slow. :func:`cache_features` runs it once, through
``datasets.map`` (batched, datasets' own progress bar), and stores float16 columns:

| column | type | meaning |
|---|---|---|
| ``v_features`` | ``[D]`` float16 | state feature of the row's state (V(s) input) |
| ``q_features`` | ``[D]`` float16 | state-action feature of the logged action (Q(s, a) input) |
| ``next_v_features`` | ``[D]`` float16 | ``v_features`` of the next row of the episode; zeros where ``done`` |
| ``alt_q_features`` | ``[N_i, D]`` float16 | optional: one feature per alternative action (Best-of-N) |

The map's fingerprint is derived from the extractor's provenance (model id, revision, adapter,
weights digest, layer, pooling, prompt template), the dataset's own fingerprint and the columns
requested, so calling it again reuses the Arrow cache files and a changed setting recomputes. Only
the new columns are written; they are joined to the dataset's columns without copying them
(memory-mapped, screenshots decoded one batch at a time).

Example:
    >>> from digiq_trl.models.feature_cache import cache_features
    >>> ds = cache_features(ds, extractor, alt_actions_column="candidate_actions")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, List, Value, concatenate_datasets

from ..data.validation import validate_transitions
from .features import VLMFeatureExtractor


logger = logging.getLogger(__name__)

FEATURE_COLUMNS: tuple[str, ...] = ("v_features", "q_features", "next_v_features", "alt_q_features")
"""Columns :func:`cache_features` adds (``alt_q_features`` only with an alternatives column)."""

CACHE_FORMAT_VERSION = 1
"""Part of every fingerprint; bump when the stored features change meaning."""

_FLOAT16_MAX = float(np.finfo(np.float16).max)


def features_fingerprint(dataset: Dataset, extractor: VLMFeatureExtractor, alt_actions_column: str | None) -> str:
    """The fingerprint of the feature columns for this dataset, extractor setting and request."""
    key = {
        "version": CACHE_FORMAT_VERSION,
        "dataset": dataset._fingerprint,
        "provenance": extractor.provenance,
        "alt_actions_column": alt_actions_column,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _to_float16(features: Any) -> np.ndarray:
    """float16 array, values clipped to float16's range (huge activations stay finite)."""
    return np.clip(np.asarray(features, dtype=np.float32), -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)


def _check_alternatives(dataset: Dataset, column: str | None) -> None:
    """The alternatives column, when requested, exists and holds lists of strings."""
    if column is None:
        return
    if column not in dataset.column_names:
        raise ValueError(f"alt_actions_column {column!r} is not a column; the dataset has {dataset.column_names}")
    if dataset.features[column] != List(Value("string")):
        raise ValueError(
            f"alt_actions_column {column!r} must be a list of strings, got {dataset.features[column]}"
        )


def _output_features(dim: int, with_alternatives: bool) -> Features:
    """Types of the columns the feature map writes (fixed-size float16 vectors)."""
    vector = List(Value("float16"), length=dim)
    columns = {"v_features": vector, "q_features": vector}
    if with_alternatives:
        columns["alt_q_features"] = List(vector)
    return Features(columns)


def _compute(extractor: VLMFeatureExtractor, alt_actions_column: str | None) -> Callable[..., dict[str, Any]]:
    """The batched map function: one prompt forward per state for v, q and the alternatives.

    In a ``map`` worker forked from this process (``num_proc``), torch runs single-threaded: an
    OpenMP thread team inherited through ``fork`` can deadlock the worker's first parallel op.
    """
    parent = os.getpid()

    def compute(
        goals: list[str], histories: list[str], images: list[Any], actions: list[str],
        alternatives: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        if os.getpid() != parent and torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        candidates = [
            [action, *(alternatives[i] if alternatives is not None else [])] for i, action in enumerate(actions)
        ]
        rgb = [image.convert("RGB") for image in images]
        states, per_state = extractor.state_action_features(rgb, goals, histories, candidates)
        out = {
            "v_features": _to_float16(states),
            "q_features": _to_float16(np.stack([f[0].numpy() for f in per_state])),
        }
        if alt_actions_column is not None:
            out["alt_q_features"] = [_to_float16(f[1:].numpy()) for f in per_state]
        return out

    return compute


def _shift_next(v_features: Dataset, dones: Dataset, dim: int) -> Callable[..., dict[str, np.ndarray]]:
    """The batched map function for ``next_v_features``: the next row's ``v_features``, or zeros
    where ``done`` (rows are validated to be sorted by episode and step, so the next row of a
    not-done step is the episode's next step)."""

    def shift(batch: list, indices: list[int]) -> dict[str, np.ndarray]:
        first, last = indices[0], indices[-1]
        after = v_features[last + 1]["v_features"] if last + 1 < len(v_features) else np.zeros(dim)
        following = np.concatenate([np.asarray(batch, dtype=np.float16)[1:], np.asarray(after, np.float16)[None]])
        done = np.asarray(dones[first : last + 1]["done"], dtype=bool)
        return {"next_v_features": np.where(done[:, None], np.float16(0), following)}

    return shift


def _cache_file(cache_dir: str | None, fingerprint: str) -> str | None:
    """The Arrow file for ``fingerprint`` in ``cache_dir`` (None: datasets' default placement)."""
    if cache_dir is None:
        return None
    os.makedirs(cache_dir, exist_ok=True)
    return os.path.join(cache_dir, f"digiq-features-{fingerprint}.arrow")


def cache_features(
    dataset: Dataset,
    extractor: VLMFeatureExtractor,
    batch_size: int = 16,
    alt_actions_column: str | None = None,
    num_proc: int | None = None,
    cache_dir: str | None = None,
) -> Dataset:
    """Add frozen-VLM feature columns (float16) to a transitions dataset, cached on disk.

    Args:
        dataset: transitions in the canonical schema (:mod:`digiq_trl.data.schema`), rows sorted by
            episode and step (validated).
        extractor: computes the features; its :attr:`~VLMFeatureExtractor.provenance` keys the cache.
        batch_size: states per ``map`` batch.
        alt_actions_column: a list-of-strings column (e.g. ``"candidate_actions"``) whose actions
            get ``alt_q_features``, one vector per alternative, sharing the state's prompt forward.
        num_proc: ``map`` processes (CPU; each process gets its own copy of the model).
        cache_dir: where the feature files go. Needed for in-memory datasets (``Dataset.from_dict``,
            ``from_list``), which have no cache files of their own: without it their features are
            computed in memory and not reused. Datasets loaded from files cache next to them by default.

    Returns:
        The dataset with ``v_features``, ``q_features``, ``next_v_features`` and, with
        ``alt_actions_column``, ``alt_q_features`` added.
    """
    validate_transitions(dataset)
    _check_alternatives(dataset, alt_actions_column)
    clashes = [c for c in FEATURE_COLUMNS if c in dataset.column_names]
    if clashes:
        raise ValueError(f"the dataset already has feature column(s) {clashes}; remove them first")
    if not dataset.cache_files and cache_dir is None:
        logger.warning("in-memory dataset and no cache_dir: features are computed in memory and not cached")
    if dataset._indices is not None:
        dataset = dataset.flatten_indices(cache_file_name=_cache_file(cache_dir, f"rows-{dataset._fingerprint}"))
    fingerprint = features_fingerprint(dataset, extractor, alt_actions_column)
    inputs = ["goal", "history", "image", "action"] + ([alt_actions_column] if alt_actions_column else [])
    computed = dataset.map(
        _compute(extractor, alt_actions_column),
        batched=True,
        batch_size=batch_size,
        input_columns=inputs,
        remove_columns=dataset.column_names,
        features=_output_features(extractor.hidden_size, alt_actions_column is not None),
        new_fingerprint=fingerprint,
        cache_file_name=_cache_file(cache_dir, fingerprint),
        num_proc=num_proc,
        desc="VLM features",
    )
    next_fingerprint = hashlib.sha256(f"{fingerprint}/next_v".encode()).hexdigest()[:32]
    following = computed.map(
        _shift_next(computed.select_columns(["v_features"]).with_format("numpy"),
                    dataset.select_columns(["done"]), extractor.hidden_size),
        batched=True,
        batch_size=1000,
        with_indices=True,
        input_columns=["v_features"],
        remove_columns=computed.column_names,
        features=Features({"next_v_features": List(Value("float16"), length=extractor.hidden_size)}),
        new_fingerprint=next_fingerprint,
        cache_file_name=_cache_file(cache_dir, next_fingerprint),
        desc="next-state features",
    )
    return concatenate_datasets([dataset, computed, following], axis=1)
