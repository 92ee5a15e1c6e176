"""Staged outputs: scratch folders left by killed writers are swept, live ones never are."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
from pathlib import Path

import pytest

from digiq_trl import staging
from digiq_trl.staging import staged_output, sweep_stale_staging


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _scratch(output: Path, tag: str) -> Path:
    """A scratch folder of ``output`` named with ``tag``, holding a half-written file."""
    folder = output.parent / f".{output.name}.staging-{tag}"
    (folder / "cache").mkdir(parents=True)
    (folder / "cache" / "tmpa1b2c3d4").write_bytes(b"half an arrow file")
    return folder


def test_only_abandoned_scratch_folders_are_swept(tmp_path: Path) -> None:
    output = tmp_path / "ds"
    host = staging._host()
    dead = _scratch(output, f"{host}-{_dead_pid()}-deadbeef")
    live = _scratch(output, f"{host}-{os.getpid()}-livelive")
    elsewhere = _scratch(output, f"another-host-{_dead_pid()}-remote00")
    untagged = _scratch(output, "notours")  # not made by this library: never removed
    other_output = _scratch(tmp_path / "other", f"{host}-{_dead_pid()}-otherout")
    assert sorted(sweep_stale_staging(output)) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (live, elsewhere, untagged, other_output)
    )


def _write_and_die(output: str) -> None:
    """Start a staged write and exit without any cleanup, as a killed process would."""
    with staged_output(output) as stage:
        (stage / "part.arrow").write_bytes(b"partial")
        os._exit(9)


@pytest.mark.skipif(os.name != "posix", reason="needs fork")
def test_a_killed_writer_leaves_a_folder_the_next_write_sweeps(tmp_path: Path) -> None:
    output = tmp_path / "ds"
    child = multiprocessing.get_context("fork").Process(target=_write_and_die, args=(str(output),))
    child.start()
    child.join()
    assert child.exitcode == 9
    (left,) = tmp_path.glob(".ds.staging-*")
    assert left.name.startswith(f".ds.staging-{staging._host()}-{child.pid}-")
    with staged_output(output) as stage:
        (stage / "data.arrow").write_bytes(b"complete")
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert (output / "data.arrow").read_bytes() == b"complete"


def test_a_failed_write_keeps_the_old_output_and_leaves_nothing(tmp_path: Path) -> None:
    output = tmp_path / "ds"
    output.mkdir()
    (output / "data.arrow").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), staged_output(output) as stage:
        (stage / "data.arrow").write_bytes(b"new")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert (output / "data.arrow").read_bytes() == b"old"
