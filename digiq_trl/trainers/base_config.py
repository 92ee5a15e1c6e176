"""The ``TrainingArguments`` defaults that every Digi-Q trainer config shares (as TRL's configs do)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments


@dataclass
class DigiQTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with the defaults of the critic and actor trainers: ``logging_steps`` 10
    and ``remove_unused_columns`` False (each trainer selects the columns its collator reads, some of
    which the model's forward does not name)."""

    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every this many optimizer steps (a float in (0, 1) is a fraction of the run); the "
                  "trainers' own metrics are averaged over the window."},
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the trainer selects the columns its collator needs itself."},
    )
