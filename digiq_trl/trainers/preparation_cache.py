"""The cache of the actor's Best-of-N preparation: each step's result on disk, verified before reuse.

Sampling candidates and scoring them is the slow part of the actor stage, so each step's result on
this process's shard of the states is kept (an Arrow file) under a key that digests everything the
result depends on; an unchanged rerun (after an error, say) reads it instead of sampling again. Each
entry is a folder written atomically (:func:`~digiq_trl.staging.staged_output`) holding the file and a
manifest with its sha256: a damaged entry is recomputed with a one-line warning, and scratch folders
of killed processes are swept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers.utils import logging

from ..staging import sha256_file, staged_output, sweep_stale_scratch


logger = logging.get_logger(__name__)

PREPARATION_CACHE_DIR = "_best_of_n_cache"
"""Folder of ``args.output_dir`` holding the cached preparation steps (Arrow files). Its leading
underscore keeps it out of ``push_to_hub`` uploads, which skip ``_*`` paths."""
CACHE_DATA = "data.arrow"
CACHE_MANIFEST = "entry.json"


def _shard_seed(seed: int, process_index: int) -> int:
    """The sampling seed of one process's shard: fixed by the run's seed and the process."""
    return int(hashlib.sha256(f"best-of-n-{seed}-{process_index}".encode()).hexdigest()[:15], 16)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Sample with torch's generator (CPU and ``device``) seeded with ``seed``, and give the global
    generator back as it was: training then starts from the same RNG state whether the preparation
    sampled or came from the cache."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _digest(parts: dict[str, Any]) -> str:
    """A short, stable digest of JSON-able ``parts`` (a cache key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class CachedSteps:
    """Runs the preparation's steps on this process's shard of the states, each cached and verified.

    A step's entry is named by a digest of everything its result depends on (``identity``, the step's
    own settings and the process index/count), so an unchanged rerun (e.g. after an error) reads it
    instead of sampling again, and any change computes a new one. An entry is reused only when its
    manifest's key and sha256 match; otherwise it is recomputed, with a one-line warning. Sampling is
    seeded right before each shard, so equal inputs give equal candidates.
    """

    folder: Path
    identity: dict[str, Any]
    seed: int
    device: torch.device

    def __post_init__(self) -> None:
        for scratch in sweep_stale_scratch(self.folder):
            logger.info("Best-of-N preparation: removed %s, left by a process that was killed", scratch)

    def __call__(self, step: str, dataset: Dataset, function: Any, batch_size: int, desc: str,
                 **depends_on: Any) -> dict[str, list[Any]]:
        """New columns from ``function`` over ``dataset`` (batched), identical on every process.

        Each process maps a contiguous shard of the states, then all of them gather the shards in
        process order, so the expensive work (sampling, scoring) is split across processes and every
        process ends with the same prepared data.
        """
        state = PartialState()
        key = _digest({"step": step, **self.identity, **depends_on,
                       "process": [state.process_index, state.num_processes]})
        entry = self.folder / f"{step}-{key}"
        if self._verified(entry, key, desc):
            logger.info("Best-of-N preparation: %s reused from %s", desc, entry)
        else:
            shard = dataset.shard(state.num_processes, state.process_index, contiguous=True)
            with _seeded(_shard_seed(self.seed, state.process_index), self.device), staged_output(entry) as staged:
                shard.map(function, batched=True, batch_size=batch_size, remove_columns=shard.column_names,
                          new_fingerprint=key, cache_file_name=str(staged / CACHE_DATA), desc=desc)
                manifest = {"key": key, "sha256": sha256_file(staged / CACHE_DATA)}
                (staged / CACHE_MANIFEST).write_text(json.dumps(manifest) + "\n")
        mapped = Dataset.from_file(str(entry / CACHE_DATA))
        shards = gather_object([mapped.to_dict()])
        return {name: [value for part in shards for value in part[name]] for name in mapped.column_names}

    @staticmethod
    def _verified(entry: Path, key: str, desc: str) -> bool:
        """Whether ``entry`` holds a complete result of ``key`` (its manifest and its file's sha256
        agree); a damaged entry is removed with a warning naming it, so that it is recomputed."""
        if not entry.exists():
            return False
        try:
            manifest = json.loads((entry / CACHE_MANIFEST).read_text())
            intact = manifest["key"] == key and sha256_file(entry / CACHE_DATA) == manifest["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            intact = False
        if not intact:
            logger.warning("Best-of-N preparation: the cached %s in %s is damaged (its manifest or sha256 does not "
                           "match); recomputing it", desc.lower(), entry)
            shutil.rmtree(entry, ignore_errors=True)
        return intact
