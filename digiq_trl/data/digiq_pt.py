"""Reference Digi-Q / DigiRL ``.pt`` trajectory files -> canonical transitions, loaded safely.

A reference file is ``torch.save`` of a list of trajectories, each a list of step dicts (keys in
``DIGIQ.md``): ``task``, ``image_path``, ``action``, ``reward``, and optionally ``action_list``
(candidates joined by ``"<split>"``), ``traj_id``, ``observation``, ``image_features``, ...

**Safety.** Files are read with ``torch.load(weights_only=True)``: its unpickler only rebuilds
containers, numbers, strings and tensors, plus the few numpy globals of :data:`NUMPY_SAFE_GLOBALS`
(arrays, dtypes and scalars, which such files may hold). Any other global (``os.system``, a class
of the reference code) is refused with :class:`UnsafePickleError` before anything runs. Tensors are
memory-mapped, so the large feature columns of a reference file are never read into memory.

**Mapping.** ``task`` -> ``goal``; the screenshot file of ``image_path`` -> ``image`` (its bytes as
they are, after decoding them once to check them; with an images folder, ``image_path`` must not
lead out of it); ``next_image_path`` -> ``next_image`` where a step has it (the reference's processed
files do), else the next step's screenshot (the last step's own one);
``action`` -> normalized with :func:`~digiq_trl.actions.format_action` (a trajectory with an
unparsable action string is skipped with a warning that names it, or refused: ``on_unparsable_action``); ``reward`` -> ``reward``;
``action_list`` -> ``candidate_actions`` (parsable ones normalized, the others kept verbatim so a
critic can score them as invalid). ``history`` is rebuilt with
:func:`~digiq_trl.actions.format_history` from the previous steps' actions, like every other
source, rather than taken from the ``observation`` text, whose action format differs. ``done``,
``mc_return`` and ``trajectory_reward`` are recomputed from the rewards. ``episode_id`` is
``"<file stem>/<traj_id or trajectory index>"``.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..actions import ActionParseError, DeviceAction, format_action, parse_action
from ..discount import DEFAULT_GAMMA
from .conversion import (
    ConversionError,
    EpisodeStep,
    check_conversion_gamma,
    check_input_files,
    episode_rows,
    generate_transitions,
)
from .schema import transition_features
from .validation import MAX_IMAGE_PIXELS, image_problem


logger = logging.getLogger(__name__)

CANDIDATE_SEPARATOR = "<split>"
"""How the reference joins the candidate actions of ``action_list``."""

try:
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray

NUMPY_SAFE_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    *(
        (function, f"numpy.{package}.multiarray.{function.__name__}")
        for function in (_multiarray._reconstruct, _multiarray.scalar)
        for package in ("core", "_core")
    ),
    *(
        type(np.dtype(name))
        for name in (
            "bool",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "float16",
            "float32",
            "float64",
        )
    ),
]
"""Globals allowed besides torch's own: numpy arrays, dtypes, scalars (numpy 1.x and 2.x names)."""


class UnsafePickleError(ConversionError):
    """A file references a Python global outside the allowlist; nothing in it was executed."""


def _refusal(path: Path, error: pickle.UnpicklingError) -> UnsafePickleError:
    """A clear refusal naming the file and the offending global (or the unsupported construct)."""
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        what = f"the Python global {found.group(1)!r}, which is not on the allowlist of data types"
    else:
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\n\n", text, re.DOTALL)
        what = f"a construct that is not plain data ({detail.group(1).strip() if detail else text})"
    return UnsafePickleError(
        f"{path}: refused to load: it references {what}. Nothing in the file was executed; "
        "only torch.save files of lists, dicts, strings, numbers, tensors and numpy arrays load."
    )


def load_reference_file(path: str | Path) -> Any:
    """Safely load a reference ``.pt`` file (see the module docstring); tensors stay memory-mapped.

    Raises:
        UnsafePickleError: the file references a global outside the allowlist.
        ConversionError: the file is missing, or not a ``torch.save`` file.
    """
    path = Path(check_input_files([path])[0])
    try:
        with torch.serialization.safe_globals(NUMPY_SAFE_GLOBALS):
            return torch.load(
                path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path)
            )
    except pickle.UnpicklingError as error:
        raise _refusal(path, error) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ConversionError(f"{path}: not a readable torch.save file ({error})") from None


def _trajectories(path: Path) -> list[list[dict]]:
    """The trajectories of a reference file, after checking the list-of-lists-of-dicts shape."""
    data = load_reference_file(path)
    if not isinstance(data, (list, tuple)):
        raise ConversionError(f"{path}: expected a list of trajectories, got {type(data).__name__}")
    if not data:
        raise ConversionError(f"{path}: holds no trajectories (an empty list)")
    for index, trajectory in enumerate(data):
        if not isinstance(trajectory, (list, tuple)) or not trajectory:
            raise ConversionError(f"{path}, trajectory {index}: expected a non-empty list of steps")
        for step_index, step in enumerate(trajectory):
            if not isinstance(step, dict):
                raise ConversionError(
                    f"{path}, trajectory {index}, step {step_index}: expected a dict, "
                    f"got {type(step).__name__}"
                )
    return list(data)


def _get(step: dict, key: str, where: str) -> Any:
    if key not in step:
        raise ConversionError(f"{where}, field {key!r}: missing (the step has {sorted(step)})")
    return step[key]


def _reward(value: Any, where: str) -> float:
    try:
        reward = float(value.item() if isinstance(value, (torch.Tensor, np.ndarray)) else value)
    except (TypeError, ValueError, RuntimeError):
        raise ConversionError(f"{where}, field 'reward': not a number: {value!r}") from None
    if not math.isfinite(reward) or not 0.0 <= reward <= 1.0:
        raise ConversionError(f"{where}, field 'reward': {reward} is outside [0, 1]")
    return reward


def _image_candidates(
    image_path: str, where: str, images_dir: Path | None, base: Path
) -> list[Path]:
    """Where ``image_path`` may be: under ``images_dir`` (as given, then by file name) or,
    without ``images_dir``, the path itself (relative paths against the ``.pt`` file's folder).

    Raises:
        ConversionError: a relative ``image_path`` climbs out of ``images_dir`` with ``..``.
    """
    path = Path(image_path)
    if images_dir is None:
        return [path if path.is_absolute() else base / path]
    if path.is_absolute():
        return [images_dir / path.name]
    if ".." in Path(os.path.normpath(path)).parts:
        raise ConversionError(
            f"{where}, field 'image_path': {image_path!r} leads outside the images folder "
            f"{images_dir}"
        )
    return [images_dir / path, images_dir / path.name]


def _image_bytes(
    step: dict, where: str, images_dir: Path | None, base: Path, max_pixels: int, key: str = "image_path"
) -> bytes:
    """The bytes of the screenshot file named by ``step[key]``, fully decoded once to check them."""
    image_path = _get(step, key, where)
    if not isinstance(image_path, str) or not image_path:
        raise ConversionError(
            f"{where}, field {key!r}: expected a file path, got {image_path!r}"
        )
    tried = _image_candidates(image_path, where, images_dir, base)
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        hint = "" if images_dir is not None else " (pass --images DIR / images_dir)"
        raise ConversionError(
            f"{where}, field {key!r}: screenshot {image_path!r} not found, "
            f"tried {[str(p) for p in tried]}{hint}"
        )
    data = found.read_bytes()
    problem = image_problem(data, max_pixels)
    if problem is not None:
        raise ConversionError(f"{where}, field {key!r}: {found} is {problem}")
    return data


class UnparsableActionError(ConversionError):
    """A logged action string that is not an AutoUI action (its trajectory can be skipped)."""


def _action(value: Any, where: str) -> DeviceAction:
    try:
        return parse_action(value)
    except ActionParseError as error:
        kind = UnparsableActionError if isinstance(value, str) else ConversionError
        raise kind(f"{where}, field 'action': {error}") from None


def _candidates(step: dict, where: str) -> list[str] | None:
    """``action_list`` split into candidates; parsable ones normalized, others kept verbatim."""
    if "action_list" not in step:
        return None
    raw = step["action_list"]
    if isinstance(raw, str):
        raw = raw.split(CANDIDATE_SEPARATOR)
    if not isinstance(raw, (list, tuple)) or not all(isinstance(c, str) for c in raw):
        raise ConversionError(
            f"{where}, field 'action_list': expected a string, got {type(raw).__name__}"
        )
    candidates = []
    for text in (c.strip() for c in raw):
        if text:
            try:
                candidates.append(format_action(parse_action(text)))
            except ActionParseError:
                candidates.append(text)
    return candidates


def _episode(
    trajectory: list[dict], where: str, images_dir: Path | None, base: Path, max_pixels: int
) -> tuple[str, list[EpisodeStep]]:
    """The goal and steps of one trajectory."""
    goal = _get(trajectory[0], "task", f"{where}, step 0")
    if not isinstance(goal, str) or not goal.strip():
        raise ConversionError(
            f"{where}, step 0, field 'task': expected a goal string, got {goal!r}"
        )
    steps = []
    for index, step in enumerate(trajectory):
        step_where = f"{where}, step {index}"
        steps.append(
            EpisodeStep(
                image=_image_bytes(step, step_where, images_dir, base, max_pixels),
                action=_action(_get(step, "action", step_where), step_where),
                reward=_reward(_get(step, "reward", step_where), step_where),
                candidate_actions=_candidates(step, step_where),
                next_image=(_image_bytes(step, step_where, images_dir, base, max_pixels, "next_image_path")
                            if step.get("next_image_path") is not None else None),
            )
        )
    return goal.strip(), steps


def _episode_id(path: Path, trajectory: list[dict], index: int) -> str:
    traj_id = trajectory[0].get("traj_id", index)
    if isinstance(traj_id, (torch.Tensor, np.ndarray)):
        traj_id = traj_id.item()
    return f"{path.stem}/{traj_id}"


def _generate_rows(
    paths: Sequence[str],
    images_dir: str | None,
    gamma: float,
    with_candidates: bool,
    max_pixels: int,
    skip_unparsable: bool = True,
) -> Iterator[dict[str, Any]]:
    """Rows of every trajectory of ``paths``, one trajectory's screenshots in memory at a time."""
    features = transition_features(with_candidates=with_candidates)
    images = None if images_dir is None else Path(images_dir)
    seen: set[str] = set()
    skipped = 0
    for path in map(Path, paths):
        for index, trajectory in enumerate(_trajectories(path)):
            where = f"{path}, trajectory {index}"
            episode_id = _episode_id(path, trajectory, index)
            if episode_id in seen:
                raise ConversionError(
                    f"{where}, field 'traj_id': episode id {episode_id!r} is already taken by an "
                    "earlier trajectory (a repeated traj_id, or two input files of the same name)"
                )
            seen.add(episode_id)
            try:
                goal, steps = _episode(trajectory, where, images, path.parent, max_pixels)
            except UnparsableActionError as error:
                if not skip_unparsable:
                    raise
                skipped += 1
                logger.warning("skipped trajectory %s (episode %s): %s", index, episode_id, error)
                continue
            yield from episode_rows(episode_id, goal, steps, gamma, features)
    if skipped:
        logger.warning("skipped %d trajectories with an unparsable logged action", skipped)


def _has_candidates(paths: Sequence[str]) -> bool:
    """Whether any step of any file carries ``action_list`` (steps without it get no candidates)."""
    return any(
        "action_list" in step
        for path in paths
        for trajectory in _trajectories(Path(path))
        for step in trajectory
    )


def _check_images_dir(images_dir: str | Path | None) -> str | None:
    if images_dir is not None and not Path(images_dir).is_dir():
        raise ConversionError(f"{images_dir}: no such images folder")
    return None if images_dir is None else str(images_dir)


def convert_digiq_pt(
    paths: Sequence[str | Path],
    images_dir: str | Path | None = None,
    gamma: float = DEFAULT_GAMMA,
    cache_dir: str | Path | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    on_unparsable_action: str = "skip_episode",
) -> Dataset:
    """Convert reference Digi-Q / DigiRL ``.pt`` files into a validated transitions dataset.

    Args:
        paths: the ``.pt`` files (``torch.save`` lists of trajectories).
        images_dir: folder of the screenshots named by ``image_path`` (looked up by the path as
            given under it, then by file name; a path may not lead out of it); without it,
            ``image_path`` is used as is.
        gamma: discount of ``mc_return``, in ``(0, 1]``.
        cache_dir: where the Arrow file is written; the ``datasets`` cache by default.
        max_image_pixels: largest screenshot accepted (width x height).
        on_unparsable_action: ``"skip_episode"`` leaves out a trajectory whose logged action string
            does not parse, with a warning naming its file, trajectory, step and text (rollouts of a
            pretrained policy hold a few); ``"error"`` refuses the file instead.

    Raises:
        UnsafePickleError: a file references a global outside the allowlist (nothing runs).
        ConversionError: an input is missing or holds no trajectories, a step lacks a key, has a
            bad reward, an action that is not a string (or an unparsable one, with
            ``on_unparsable_action="error"``), or its screenshot is missing, outside
            ``images_dir``, too large or undecodable; the message names the file, trajectory,
            step and field.

    Example:
        >>> ds = convert_digiq_pt(["general_train.pt"], images_dir="images/")  # doctest: +SKIP
    """
    if on_unparsable_action not in ("skip_episode", "error"):
        raise ValueError(f"on_unparsable_action must be 'skip_episode' or 'error', got {on_unparsable_action!r}")
    paths = check_input_files(paths)
    gamma = check_conversion_gamma(gamma)
    images_dir = _check_images_dir(images_dir)
    with_candidates = _has_candidates(paths)
    return generate_transitions(
        _generate_rows,
        {
            "paths": paths,
            "images_dir": images_dir,
            "gamma": gamma,
            "with_candidates": with_candidates,
            "max_pixels": max_image_pixels,
            "skip_unparsable": on_unparsable_action == "skip_episode",
        },
        transition_features(with_candidates=with_candidates),
        source=", ".join(paths),
        cache_dir=cache_dir,
        max_image_pixels=max_image_pixels,
    )
