"""Validation of transitions datasets against the canonical schema.

Errors name the source, the row and the field, so a bad row in a large file can be found and fixed.
Only the light columns are read (screenshots are never decoded), in batches.
"""

from __future__ import annotations

from typing import Iterator

from datasets import Dataset

from ..actions import try_parse_action
from .schema import OPTIONAL_FEATURES, REQUIRED_FEATURES

_SCAN_COLUMNS = ["episode_id", "step_id", "action", "reward", "done"]


class TransitionValidationError(ValueError):
    """A transitions dataset breaks the schema; the message names source, row and field."""


def _where(source: str | None, row: int | None = None, field: str | None = None) -> str:
    parts = [source or "dataset"]
    if row is not None:
        parts.append(f"row {row}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)


def _check_columns(ds: Dataset, source: str | None) -> None:
    missing = [name for name in REQUIRED_FEATURES if name not in ds.column_names]
    if missing:
        raise TransitionValidationError(
            f"{_where(source)}: missing required column(s) {missing}; "
            f"the dataset has {ds.column_names}"
        )
    expected = {**REQUIRED_FEATURES, **OPTIONAL_FEATURES}
    for name, feature in expected.items():
        if name in ds.features and ds.features[name] != feature:
            raise TransitionValidationError(
                f"{_where(source, field=name)}: has type {ds.features[name]}, expected {feature} "
                f"(cast it with ds.cast_column({name!r}, ...))"
            )


def _rows(ds: Dataset, batch_size: int = 4096) -> Iterator[tuple[int, dict]]:
    light = ds.select_columns(_SCAN_COLUMNS)
    for start, batch in zip(range(0, len(ds), batch_size), light.iter(batch_size=batch_size)):
        for offset in range(len(batch["episode_id"])):
            yield start + offset, {name: batch[name][offset] for name in _SCAN_COLUMNS}


def _check_row(index: int, row: dict, source: str | None) -> None:
    if try_parse_action(row["action"]) is None:
        raise TransitionValidationError(
            f"{_where(source, index, 'action')}: not a valid AutoUI action string: {row['action']!r}"
        )
    if not 0.0 <= row["reward"] <= 1.0:
        raise TransitionValidationError(
            f"{_where(source, index, 'reward')}: reward {row['reward']} is outside [0, 1]"
        )


def _check_episode_order(
    index: int, row: dict, previous: dict | None, seen: set[str], source: str | None
) -> None:
    episode = row["episode_id"]
    same_episode = previous is not None and previous["episode_id"] == episode
    if same_episode:
        if previous["done"]:
            raise TransitionValidationError(
                f"{_where(source, index - 1, 'done')}: done is true before the last step of "
                f"episode {episode!r}"
            )
        expected_step = previous["step_id"] + 1
    else:
        if previous is not None and not previous["done"]:
            raise TransitionValidationError(
                f"{_where(source, index - 1, 'done')}: the last step of episode "
                f"{previous['episode_id']!r} must have done=true"
            )
        if episode in seen:
            raise TransitionValidationError(
                f"{_where(source, index, 'episode_id')}: episode {episode!r} is split across "
                "non-adjacent rows; sort by (episode_id, step_id)"
            )
        seen.add(episode)
        expected_step = 0
    if row["step_id"] != expected_step:
        raise TransitionValidationError(
            f"{_where(source, index, 'step_id')}: episode {episode!r} is not contiguous: "
            f"expected step {expected_step}, got {row['step_id']}"
        )


def validate_transitions(ds: Dataset, source: str | None = None) -> Dataset:
    """Check that ``ds`` follows the transition schema; return it unchanged.

    Checks: required columns present with the schema's types; every ``action`` parses; rewards in
    ``[0, 1]``; each episode's rows are adjacent with ``step_id`` 0, 1, 2, ...; ``done`` is true on
    exactly the last step of each episode.

    Args:
        ds: the dataset to check.
        source: a name for error messages (a file path or Hub id); defaults to ``"dataset"``.

    Raises:
        TransitionValidationError: naming source, row and field of the first problem found.

    Example:
        >>> from digiq_trl import validate_transitions
        >>> validate_transitions(ds, source="data/train")  # doctest: +SKIP
    """
    _check_columns(ds, source)
    previous: dict | None = None
    seen: set[str] = set()
    for index, row in _rows(ds):
        _check_row(index, row, source)
        _check_episode_order(index, row, previous, seen, source)
        previous = row
    if previous is not None and not previous["done"]:
        raise TransitionValidationError(
            f"{_where(source, len(ds) - 1, 'done')}: the last step of episode "
            f"{previous['episode_id']!r} must have done=true"
        )
    return ds
