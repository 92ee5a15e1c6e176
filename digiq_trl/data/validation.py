"""Validation of transitions datasets against the canonical schema.

Errors name the source, the row and the field, so a bad row in a large file can be found and fixed.
The light columns are read once as Arrow columns; the screenshots are read in batches and each
distinct image is decoded once (``next_image`` usually repeats the next row's ``image``), in a few
threads.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset
from PIL import Image, UnidentifiedImageError

from ..actions import try_parse_action
from .returns import episode_returns
from .schema import OPTIONAL_FEATURES, REQUIRED_FEATURES


MAX_IMAGE_PIXELS = 25_000_000
"""Largest screenshot accepted, in pixels (width x height): five times a 1440x3200 phone screen.

A bound keeps a corrupt or hostile header from making a decoder allocate gigabytes (PIL only warns
below 179 Mpx). Pass ``max_image_pixels`` to :func:`validate_transitions` or the converters to
accept larger screens.
"""

IMAGE_COLUMNS = ("image", "next_image")
IMAGE_BATCH_SIZE = 64
"""Rows of screenshots read per batch while checking the images."""

DECODE_THREADS = min(8, os.cpu_count() or 1)
"""Threads decoding screenshots during validation (PIL releases the GIL while it decodes)."""

RETURN_RTOL, RETURN_ATOL = 1e-4, 1e-6
"""Tolerances of the return checks (``mc_return`` and ``trajectory_reward`` are float32)."""

GAMMA_MIN_NEXT_RETURN = 1e-3
"""Rows whose next ``mc_return`` is below this say too little about the discount to infer it."""


class TransitionValidationError(ValueError):
    """A transitions dataset breaks the schema; the message names source, row and field."""


def _where(source: str | None, row: int | None = None, field: str | None = None) -> str:
    parts = [source or "dataset"]
    if row is not None:
        parts.append(f"row {row}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)


def _fail(source: str | None, row: int | None, field: str | None, what: str) -> NoReturn:
    raise TransitionValidationError(f"{_where(source, row, field)}: {what}")


def _check_columns(ds: Dataset, source: str | None) -> None:
    missing = [name for name in REQUIRED_FEATURES if name not in ds.column_names]
    if missing:
        _fail(
            source,
            None,
            None,
            f"missing required column(s) {missing}; the dataset has {ds.column_names}",
        )
    expected = {**REQUIRED_FEATURES, **OPTIONAL_FEATURES}
    for name, feature in expected.items():
        if name in ds.features and ds.features[name] != feature:
            _fail(
                source,
                None,
                name,
                f"has type {ds.features[name]}, expected {feature} "
                f"(cast it with ds.cast_column({name!r}, ...))",
            )
    if len(ds) == 0:
        _fail(source, None, None, "has no rows")


def _light_table(ds: Dataset) -> pa.Table:
    """The schema's columns other than the screenshots, as one Arrow table (row order of ``ds``)."""
    names = [
        name
        for name in {**REQUIRED_FEATURES, **OPTIONAL_FEATURES}
        if name in ds.column_names and name not in IMAGE_COLUMNS
    ]
    return ds.select_columns(names).with_format("arrow")[:]


def _check_nulls(table: pa.Table, source: str | None) -> None:
    for name in table.column_names:
        column = table.column(name)
        if column.null_count:
            row = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
            _fail(source, row, name, "is null (every row needs a value)")


def _check_row(index: int, row: dict, source: str | None) -> None:
    if try_parse_action(row["action"]) is None:
        _fail(source, index, "action", f"not a valid AutoUI action string: {row['action']!r}")
    if not 0.0 <= row["reward"] <= 1.0:
        _fail(source, index, "reward", f"reward {row['reward']} is outside [0, 1]")


def _check_episode_order(
    index: int, row: dict, previous: dict | None, seen: set[str], source: str | None
) -> None:
    episode = row["episode_id"]
    same_episode = previous is not None and previous["episode_id"] == episode
    if same_episode:
        if previous["done"]:
            _fail(
                source,
                index - 1,
                "done",
                f"done is true before the last step of episode {episode!r}",
            )
        expected_step = previous["step_id"] + 1
    else:
        if previous is not None and not previous["done"]:
            _fail(
                source,
                index - 1,
                "done",
                f"the last step of episode {previous['episode_id']!r} must have done=true",
            )
        if episode in seen:
            _fail(
                source,
                index,
                "episode_id",
                f"episode {episode!r} is split across non-adjacent rows; "
                "sort by (episode_id, step_id)",
            )
        seen.add(episode)
        expected_step = 0
    if row["step_id"] != expected_step:
        _fail(
            source,
            index,
            "step_id",
            f"episode {episode!r} is not contiguous: expected step {expected_step}, "
            f"got {row['step_id']}",
        )


def _check_rows(table: pa.Table, source: str | None) -> None:
    """Actions, rewards, and episodes as adjacent rows with steps 0, 1, ... ending in ``done``."""
    names = ["episode_id", "step_id", "action", "reward", "done"]
    columns = [table.column(name).to_pylist() for name in names]
    previous: dict | None = None
    seen: set[str] = set()
    for index, values in enumerate(zip(*columns)):
        row = dict(zip(names, values))
        _check_row(index, row, source)
        _check_episode_order(index, row, previous, seen, source)
        previous = row
    if not previous["done"]:
        _fail(
            source,
            table.num_rows - 1,
            "done",
            f"the last step of episode {previous['episode_id']!r} must have done=true",
        )


def _first_bad(bad: np.ndarray) -> int | None:
    return int(np.argmax(bad)) if bad.any() else None


def _check_finite(table: pa.Table, source: str | None) -> None:
    for name in ("mc_return", "trajectory_reward"):
        values = table.column(name).to_numpy()
        row = _first_bad(~np.isfinite(values))
        if row is not None:
            _fail(source, row, name, f"{values[row]} is not a finite number")


def _implied_gamma(
    reward: np.ndarray, mc: np.ndarray, done: np.ndarray, source: str | None
) -> float | None:
    """The discount the returns were computed with: the median over the rows of
    ``(mc_return - reward) / next mc_return``, robust to a few wrong rows; ``None`` when no row
    has a next return far enough from 0 to tell (then every discount gives the same returns)."""
    following = np.where(done, 0.0, np.concatenate((mc[1:], [0.0])))
    informative = np.flatnonzero(following > GAMMA_MIN_NEXT_RETURN)
    if not informative.size:
        return None
    estimates = (mc[informative] - reward[informative]) / following[informative]
    gamma = float(np.median(estimates))
    if not 0.0 < gamma <= 1.0 + RETURN_RTOL:
        row = int(informative[np.argmin(np.abs(estimates - gamma))])
        _fail(
            source,
            row,
            "mc_return",
            f"{mc[row]:.6g} implies a discount of {gamma:.6g} (mc_return = reward + gamma * next "
            "mc_return, as in most rows), outside (0, 1]",
        )
    return min(gamma, 1.0)


def _check_close(
    name: str, stored: np.ndarray, expected: np.ndarray, what: str, source: str | None
) -> None:
    row = _first_bad(~np.isclose(stored, expected, rtol=RETURN_RTOL, atol=RETURN_ATOL))
    if row is not None:
        _fail(source, row, name, f"{stored[row]:.6g} is not {what.format(expected[row])}")


def _check_returns(table: pa.Table, source: str | None) -> None:
    """Finite returns; ``trajectory_reward`` the episode's reward sum; ``mc_return`` the discounted
    return of the episode's rewards, for one discount in ``(0, 1]`` (inferred: it is not stored)."""
    _check_finite(table, source)
    reward, mc, total = (
        table.column(name).to_numpy().astype(np.float64)
        for name in ("reward", "mc_return", "trajectory_reward")
    )
    done = table.column("done").to_numpy(zero_copy_only=False).astype(bool)
    gamma = _implied_gamma(reward, mc, done, source)
    expected_mc, expected_total = episode_returns(
        table.column("episode_id").to_pylist(), reward, 1.0 if gamma is None else gamma
    )
    _check_close(
        "trajectory_reward",
        total,
        np.asarray(expected_total),
        "the sum of its episode's rewards, {:.6g}",
        source,
    )
    discount = (
        "taking gamma 1: no next mc_return shows the discount"
        if gamma is None
        else f"gamma {gamma:.6g}, as most rows imply"
    )
    _check_close(
        "mc_return",
        mc,
        np.asarray(expected_mc),
        "the discounted return of its episode's rewards from this step, {:.6g} (" + discount + ")",
        source,
    )


def image_problem(
    data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, decode: bool = True
) -> str | None:
    """What is wrong with the encoded image ``data``, or ``None`` if nothing is.

    The header must be an image format PIL reads, of 1 to ``max_pixels`` pixels; with ``decode``,
    the pixels must decode completely (this catches truncated and corrupt files).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if not 0 < width * height <= max_pixels:
                    return (
                        f"a {width}x{height} image, outside 1 to {max_pixels} pixels "
                        "(max_image_pixels)"
                    )
                if decode:
                    image.load()
        except Image.DecompressionBombError as error:
            return f"too large an image ({error})"
        except UnidentifiedImageError:
            return f"{len(data)} bytes that are not a decodable image (no image format recognised)"
        except Exception as error:  # noqa: BLE001 - any decoder failure means unusable bytes
            reason = f"{type(error).__name__}: {error}"
            return f"{len(data)} bytes that are not a decodable image ({reason})"
    return None


def _image_data(value: dict[str, Any] | None) -> tuple[bytes | None, str]:
    """The encoded bytes of a stored ``Image`` value (read from its ``path`` when it has no
    bytes), or ``None`` and the reason."""
    if value is None or (value["bytes"] is None and not value["path"]):
        return None, "is null (every row needs a screenshot)"
    if value["bytes"] is not None:
        return value["bytes"], ""
    try:
        return Path(value["path"]).read_bytes(), ""
    except OSError as error:
        return None, f"its file {value['path']!r} cannot be read ({error.strerror or error})"


def _new_images(
    batch: pa.Table, start: int, checked: set[bytes], source: str | None
) -> dict[bytes, tuple[int, str, bytes]]:
    """The images of ``batch`` (rows from ``start``) not checked yet, by digest, each with the first
    row and column holding it. A null image fails here."""
    pending: dict[bytes, tuple[int, str, bytes]] = {}
    columns = [batch.column(name).to_pylist() for name in IMAGE_COLUMNS]
    for offset, values in enumerate(zip(*columns)):
        for name, value in zip(IMAGE_COLUMNS, values):
            data, missing = _image_data(value)
            if data is None:
                _fail(source, start + offset, name, missing)
            key = hashlib.blake2b(data, digest_size=16).digest()
            if key not in checked and key not in pending:
                pending[key] = (start + offset, name, data)
    return pending


def _check_images(ds: Dataset, source: str | None, max_pixels: int, decode: bool) -> None:
    """Every distinct screenshot through :func:`image_problem`, once, in threads."""
    checked: set[bytes] = set()
    images = ds.select_columns(list(IMAGE_COLUMNS)).with_format("arrow")
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        for start in range(0, len(ds), IMAGE_BATCH_SIZE):
            pending = _new_images(images[start : start + IMAGE_BATCH_SIZE], start, checked, source)
            problems = pool.map(
                lambda data: image_problem(data, max_pixels, decode),
                [data for _, _, data in pending.values()],
            )
            for (row, name, _), problem in zip(pending.values(), problems):
                if problem is not None:
                    _fail(source, row, name, problem)
            checked.update(pending)


def validate_transitions(
    ds: Dataset,
    source: str | None = None,
    *,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    decode_images: bool = True,
) -> Dataset:
    """Check that ``ds`` follows the transition schema; return it unchanged.

    Checks: required columns present with the schema's types, at least one row, and no nulls;
    every ``action`` parses; rewards in ``[0, 1]``; each episode's rows are adjacent with
    ``step_id`` 0, 1, 2, ...; ``done`` is true on exactly the last step of each episode;
    ``trajectory_reward`` is the episode's reward sum and ``mc_return`` its discounted returns, for
    one discount in ``(0, 1]``; every screenshot is an image of at most ``max_image_pixels`` pixels
    that decodes.

    Args:
        ds: the dataset to check.
        source: a name for error messages (a file path or Hub id); defaults to ``"dataset"``.
        max_image_pixels: largest screenshot accepted (width x height), :data:`MAX_IMAGE_PIXELS`.
        decode_images: decode every distinct screenshot fully, once (about 13 ms for a 1080x2400
            PNG); ``False`` reads only their headers (format and size), for callers that have
            decoded them already, like the converters.

    Raises:
        TransitionValidationError: naming source, row and field of the first problem found.

    Example:
        >>> from digiq_trl import validate_transitions
        >>> validate_transitions(ds, source="data/train")  # doctest: +SKIP
    """
    _check_columns(ds, source)
    table = _light_table(ds)
    _check_nulls(table, source)
    _check_rows(table, source)
    _check_returns(table, source)
    _check_images(ds, source, max_image_pixels, decode_images)
    return ds
