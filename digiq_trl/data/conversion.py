"""Machinery shared by the converters: one episode's rows, and a bounded-memory dataset writer.

A converter checks its inputs (:func:`check_input_files`, :func:`check_conversion_gamma`), turns
them into :class:`EpisodeStep` lists (screenshots as encoded bytes, fully decoded once by the
converter that reads them) and hands them to :func:`episode_rows`, which derives everything the
schema computes from the episode: ``history``, ``next_image``, ``done``, ``mc_return`` and
``trajectory_reward``. :func:`generate_transitions` streams those rows into an Arrow file in small
batches, so memory stays bounded by a few episodes whatever the size of the input.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets.config
from datasets import Dataset, Features
from datasets.exceptions import DatasetGenerationError

from ..actions import DeviceAction, format_action, format_history
from ..discount import check_gamma
from .returns import discounted_returns
from .validation import MAX_IMAGE_PIXELS, validate_transitions


WRITER_BATCH_SIZE = 32
"""Rows buffered before each Arrow write: with two screenshots a row, about 10-30 MB."""

SAVE_ROW_GROUP_SIZE = "16MB"
"""Row group size of :func:`save_transitions` (``datasets`` defaults to 100 MB)."""


class ConversionError(ValueError):
    """An input cannot be converted; the message names the file, trajectory or row, and field."""


def check_input_files(paths: Sequence[str | Path]) -> tuple[str, ...]:
    """The input paths as strings, once each is known to be an existing file.

    Raises:
        ConversionError: no path was given, or one is missing or not a regular file.
    """
    if not paths:
        raise ConversionError("no input files given")
    for path in map(Path, paths):
        if not path.exists():
            raise ConversionError(f"{path}: no such file")
        if not path.is_file():
            raise ConversionError(f"{path}: is a directory or special file, not a data file")
    return tuple(str(path) for path in paths)


def check_conversion_gamma(gamma: float) -> float:
    """``gamma`` once it is known to be in ``(0, 1]``, as a :class:`ConversionError` otherwise."""
    try:
        return check_gamma(gamma)
    except ValueError as error:
        raise ConversionError(str(error)) from None


@dataclass
class EpisodeStep:
    """One step of an episode, as a converter reads it.

    Args:
        image: the screenshot before the action, as encoded image bytes (PNG, JPEG, ...).
        action: the action taken.
        reward: reward of the step, in ``[0, 1]``.
        candidate_actions: candidate action strings (for a ``candidate_actions`` column).
        ui_boxes: normalized ``[y, x, h, w]`` UI element boxes, for datasets with ``ui_boxes``.
        next_image: the screenshot after the action, where the source records it (default: the
            next step's screenshot).
    """

    image: bytes
    action: DeviceAction
    reward: float
    candidate_actions: list[str] | None = None
    ui_boxes: list[list[float]] | None = None
    next_image: bytes | None = None


def episode_rows(
    episode_id: str, goal: str, steps: Sequence[EpisodeStep], gamma: float, features: Features
) -> Iterator[dict[str, Any]]:
    """The schema's rows of one episode, in step order.

    ``history`` is :func:`format_history` of the previous actions; ``next_image`` is the step's own
    ``next_image`` where the source recorded one, else the next step's screenshot, and the last
    step's own screenshot (its ``done=True`` means no target ever reads it); ``done`` is true on the last step only;
    ``mc_return`` is the discounted return and ``trajectory_reward`` the sum of the rewards.
    """
    rewards = [step.reward for step in steps]
    returns = discounted_returns(rewards, gamma)
    total = float(sum(rewards))
    actions = [step.action for step in steps]
    for index, step in enumerate(steps):
        following = steps[index + 1] if index + 1 < len(steps) else step
        next_image = step.next_image if step.next_image is not None else following.image
        row: dict[str, Any] = {
            "episode_id": episode_id,
            "step_id": index,
            "goal": goal,
            "history": format_history(actions[:index]),
            "image": {"bytes": step.image, "path": None},
            "next_image": {"bytes": next_image, "path": None},
            "action": format_action(step.action),
            "reward": step.reward,
            "done": index == len(steps) - 1,
            "mc_return": returns[index],
            "trajectory_reward": total,
        }
        if "candidate_actions" in features:
            row["candidate_actions"] = step.candidate_actions or []
        if "ui_boxes" in features:
            row["ui_boxes"] = step.ui_boxes or []
        yield row


def generate_transitions(
    generator: Callable[..., Iterator[dict[str, Any]]],
    gen_kwargs: dict[str, Any],
    features: Features,
    source: str,
    cache_dir: str | Path | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> Dataset:
    """Write the rows of ``generator(**gen_kwargs)`` to an Arrow-backed dataset and validate it.

    Rows are written in batches of :data:`WRITER_BATCH_SIZE`. Each call gets a fresh fingerprint, so
    a cached result of an earlier conversion (of files that may have changed since) is never reused.
    List arguments are passed as tuples: ``datasets`` would take a list for shards and call the
    generator once per item, which breaks episodes that span files. Validation reads only the image
    headers, as the converters decode every screenshot themselves.

    Args:
        generator: yields the schema's rows.
        gen_kwargs: its keyword arguments (file paths and settings: small, picklable values).
        features: the schema of the rows (from :func:`~digiq_trl.data.schema.transition_features`).
        source: names the input in validation errors.
        cache_dir: where the Arrow file goes; the ``datasets`` cache by default.
        max_image_pixels: largest screenshot the validation accepts (width x height).

    Raises:
        ConversionError: an input file is malformed (raised by the generator, unwrapped here).
        OSError: an input or the cache cannot be read or written (unwrapped too).
        TransitionValidationError: the converted rows break the schema.
    """
    try:
        ds = Dataset.from_generator(
            generator,
            features=features,
            gen_kwargs={k: tuple(v) if isinstance(v, list) else v for k, v in gen_kwargs.items()},
            cache_dir=None if cache_dir is None else str(cache_dir),
            fingerprint=uuid.uuid4().hex,
            writer_batch_size=WRITER_BATCH_SIZE,
        )
    except DatasetGenerationError as error:
        cause = error.__cause__
        if isinstance(cause, (ConversionError, OSError)):
            raise cause from None
        raise
    return validate_transitions(
        ds, source=source, max_image_pixels=max_image_pixels, decode_images=False
    )


@contextmanager
def _row_group_size(size: str) -> Iterator[None]:
    previous = datasets.config.MAX_ROW_GROUP_SIZE
    datasets.config.MAX_ROW_GROUP_SIZE = size
    try:
        yield
    finally:
        datasets.config.MAX_ROW_GROUP_SIZE = previous


def save_transitions(ds: Dataset, path: str | Path) -> None:
    """``ds.save_to_disk(path)`` in row groups of :data:`SAVE_ROW_GROUP_SIZE`.

    ``save_to_disk`` copies each row group in memory while it embeds the images, so with the
    default 100 MB groups saving a screenshot dataset costs a few hundred MB; 16 MB groups
    (about a dozen transitions) keep that small and are still cheap to read.
    """
    with _row_group_size(SAVE_ROW_GROUP_SIZE):
        ds.save_to_disk(str(path))
