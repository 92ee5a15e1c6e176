"""One run per output folder: a lock file that a second run on the same folder finds taken.

:class:`RunLock` takes an exclusive ``flock`` on ``<output_dir>/.lock`` and writes its owner (host,
PID, start time) into it. The kernel drops the lock when its process ends, however it ends, so a run
that was killed leaves a file with a dead owner, which the next run takes over with a warning; a run
that finishes empties the file. ``flock`` is advisory and local: on a network file system shared by
several machines it may not exclude a run on another host.

Example:
    >>> with RunLock("outputs/run"):  # doctest: +SKIP
    ...     ...  # the stages
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType


logger = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class RunInProgressError(RuntimeError):
    """Another live process holds the output folder's lock."""


class RunLock:
    """The exclusive lock of one output folder for the duration of a run (a context manager)."""

    def __init__(self, output_dir: str | Path) -> None:
        self.path = Path(output_dir) / LOCK_FILE
        self._handle: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(handle)
            os.close(handle)
            raise RunInProgressError(
                f"{self.path.parent} is in use by another run (PID {owner.get('pid', '?')} on "
                f"{owner.get('host', '?')}, started {owner.get('started', '?')}); wait for it to end or choose "
                "another --output_dir"
            ) from None
        previous = _read_owner(handle)
        if previous:
            logger.warning("%s: taking over the lock of PID %s on %s (started %s), which ended without releasing it",
                           self.path.parent, previous.get("pid"), previous.get("host"), previous.get("started"))
        _write(handle, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                   "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}))
        self._handle = handle
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._handle is not None:
            _write(self._handle, "")  # released: the next run has no one to take over from
            os.close(self._handle)  # closing drops the flock
            self._handle = None


def _read_owner(handle: int) -> dict[str, object]:
    """The owner recorded in the lock file ({} when it is empty or unreadable)."""
    os.lseek(handle, 0, os.SEEK_SET)
    text = os.read(handle, 4096).decode(errors="replace").strip()
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"pid": text[:40]}


def _write(handle: int, text: str) -> None:
    os.ftruncate(handle, 0)
    os.lseek(handle, 0, os.SEEK_SET)
    os.write(handle, text.encode())
