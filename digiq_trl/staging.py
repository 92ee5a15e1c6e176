"""Write a folder so that a crash or an error never loses what was there before.

Every command that writes a dataset or a stage's output writes into a scratch folder beside the
destination and moves it into place only when it is complete. A scratch folder is named after its
owner (``.<name>.staging-<host>-<pid>-<random>``), so one left by a killed process can be told from
one a live process is still writing, and is swept by the next write to the same destination.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


DATASET_MARKERS = ("state.json", "dataset_info.json", "dataset_dict.json")
"""Files ``save_to_disk`` writes: a folder holding one of them is a saved dataset."""

def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def _host() -> str:
    """This machine's name, reduced to characters that are safe in a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "host"


def _scratch_prefix(output: Path) -> str:
    return f".{output.name}.staging-"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (assumed so where that cannot be asked)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def _is_stale(folder: Path) -> bool:
    """Whether the scratch folder ``folder`` (``.<name>.staging-<owner>``) is abandoned: its owner
    (this host, a PID) is gone. A folder without an owner tag was not made by this library and is
    left alone."""
    owner = re.fullmatch(r"(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+", folder.name.rpartition(".staging-")[2])
    return owner is not None and owner["host"] == _host() and not _pid_alive(int(owner["pid"]))


def sweep_stale_staging(output: str | Path) -> list[Path]:
    """Remove the abandoned scratch folders of ``output`` (see :func:`_is_stale`); return them.

    A folder whose owner runs on another host, or whose PID is alive (even if the PID was reused by
    an unrelated process), is kept: a folder a live process may be writing is never removed.
    """
    output = Path(output).resolve()
    return _sweep(output.parent, glob.escape(_scratch_prefix(output)) + "*")


def sweep_stale_scratch(folder: str | Path) -> list[Path]:
    """Remove the abandoned scratch folders of every output in ``folder`` (see :func:`_is_stale`)."""
    return _sweep(Path(folder), ".*.staging-*")


def _sweep(parent: Path, pattern: str) -> list[Path]:
    """Remove the abandoned scratch folders among ``parent``'s entries matching ``pattern``; return them."""
    if not parent.is_dir():
        return []
    swept = []
    for folder in parent.glob(pattern):
        if folder.is_dir() and not folder.is_symlink() and _is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder)
    return swept


def _check_writable(output: Path) -> None:
    """Refuse, before any work, a folder of ``output`` that could not be written or an existing
    ``output`` that could not be moved aside at the end.

    Raises:
        PermissionError: ``output``'s folder, or ``output`` itself if it is a folder, is not
            writable by this process.
    """
    for folder in (output.parent, output):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable; choose another output", str(folder))


@contextmanager
def staged_output(output: str | Path) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces ``output``, on an error ``output`` is untouched.

    The staging folder lives in a scratch folder beside ``output`` (same file system, so the final
    move is a rename); its parent may hold other temporary files of the caller, and is removed at
    the end either way. An existing ``output`` is moved aside first and restored if the move fails.
    Scratch folders of ``output`` left by killed processes are swept first.

    Raises:
        OSError: the folder of ``output`` cannot be written (``PermissionError`` for a read-only
            one), checked before anything is written.

    Example:
        >>> with staged_output("outputs/data") as stage:  # doctest: +SKIP
        ...     dataset.save_to_disk(str(stage))
    """
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    _check_writable(output)
    sweep_stale_staging(output)
    prefix = f"{_scratch_prefix(output)}{_host()}-{os.getpid()}-"
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=output.parent))
    try:
        stage = scratch / output.name  # the final name: model cards written inside refer to their folder by it
        stage.mkdir()
        yield stage
        _replace(stage, output, scratch / ".previous")
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
