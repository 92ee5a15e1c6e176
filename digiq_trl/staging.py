"""Write a folder so that a crash or an error never loses what was there before.

Every command that writes a dataset or a stage's output writes into a scratch folder beside the
destination and moves it into place only when it is complete.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DATASET_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")
"""Files ``save_to_disk`` writes: a folder holding one of them is a saved dataset."""


def check_replaceable_dataset(output: Path) -> None:
    """Refuse to replace a folder that is not a saved dataset (a mistyped home directory, say).

    Raises:
        FileExistsError: ``output`` exists and is a file or a non-empty folder without dataset files.
    """
    if output.exists() and (
        not output.is_dir()
        or (any(output.iterdir()) and not any((output / m).exists() for m in DATASET_MARKERS))
    ):
        raise FileExistsError(f"{output}: exists and is not a saved dataset; choose another output")


@contextmanager
def staged_output(output: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces ``output``, on an error ``output`` is untouched.

    The staging folder lives in a scratch folder beside ``output`` (same file system, so the final
    move is a rename); its parent may hold other temporary files of the caller, and is removed at
    the end either way. An existing ``output`` is moved aside first and restored if the move fails.

    Example:
        >>> with staged_output("outputs/data") as stage:  # doctest: +SKIP
        ...     dataset.save_to_disk(str(stage))
    """
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
    try:
        stage = scratch / "new"
        stage.mkdir()
        yield stage
        _replace(stage, output, scratch / "previous")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _replace(new: Path, output: Path, aside: Path) -> None:
    if not output.exists():
        new.rename(output)
        return
    output.rename(aside)
    try:
        new.rename(output)
    except OSError:
        aside.rename(output)
        raise
