"""Which of a trainer's checkpoints a run can resume from.

``Trainer`` writes a checkpoint's files one after the other and ``trainer_state.json`` last, so a
checkpoint whose ``trainer_state.json`` is missing or unreadable was cut short (a full disk, a kill
during the save). :func:`last_complete_checkpoint` skips and removes such folders, so resuming takes
the newest checkpoint that was written to the end instead of failing on a partial one.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
"""The file ``Trainer`` writes last in a checkpoint: its presence, readable, marks a complete one."""


def is_complete(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` was written to the end (its trainer state is there and parses)."""
    try:
        json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(folder: str | Path) -> str | None:
    """The newest complete ``checkpoint-<step>`` of ``folder`` (None when there is none); incomplete
    ones are removed, each with a warning naming it."""
    pattern = re.compile(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)")
    folder = Path(folder)
    steps = {int(m.group(1)): p for p in (folder.iterdir() if folder.is_dir() else ())
             if p.is_dir() and (m := pattern.fullmatch(p.name))}
    for _, checkpoint in sorted(steps.items(), reverse=True):
        if is_complete(checkpoint):
            return str(checkpoint)
        logger.warning("skipping the incomplete checkpoint %s (no readable %s: its save was cut short); removing it",
                       checkpoint, TRAINER_STATE)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return None
