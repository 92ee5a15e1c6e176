"""Configuration of :class:`~digiq_trl.trainers.actor_trainer.BestOfNActorTrainer`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..best_of_n import ANCHORS, WEIGHTINGS, check_anchor, check_weighting
from .base_config import DigiQTrainingArguments


CANDIDATE_SOURCES: tuple[str, ...] = ("policy", "dataset", "both")
"""Where Best-of-N candidates come from: sampled from the starting policy, the dataset's
``candidate_actions`` column, or both."""


@dataclass
class BestOfNActorConfig(DigiQTrainingArguments):
    r"""Arguments of Best-of-N policy extraction (Digi-Q stage 4), on top of ``TrainingArguments``.

    Defaults follow the Digi-Q paper (N = 16, threshold weighting with a_min = 0.10 for AitW
    General, actor learning rate 1e-4) except the sampling temperature (see ``temperature``).

    Changed ``TrainingArguments`` defaults: ``learning_rate`` 1e-4 (the paper's actor rate; LoRA
    tolerates it), and those of :class:`~digiq_trl.trainers.base_config.DigiQTrainingArguments`
    (``logging_steps`` 10, ``remove_unused_columns`` False: the collator needs the
    ``image``/``goal``/``history`` columns that the model's forward does not name).
    """

    _VALID_DICT_FIELDS = DigiQTrainingArguments._VALID_DICT_FIELDS + ["model_init_kwargs"]

    learning_rate: float = field(
        default=1e-4, metadata={"help": "Initial AdamW learning rate (Digi-Q's actor uses 1e-4)."}
    )
    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Keyword arguments of AutoModelForImageTextToText.from_pretrained when `model` is a name."},
    )
    num_candidates: int = field(
        default=16,
        metadata={"help": "N: candidate actions sampled from the policy per state (Digi-Q uses 16)."},
    )
    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Sampling temperature of the candidates. The reference sampled at 1.2 from AutoUI; 1.0 "
            "samples the policy's own distribution, which keeps most candidates parseable for small "
            "or sharp policies while still proposing alternatives to the mode. Raise it when the "
            "candidates are mostly duplicates (see the logged `frac_chosen_is_logged`)."
        },
    )
    min_candidate_count: int = field(
        default=1,
        metadata={
            "help": "A sampled candidate competes only if it was drawn at least this many times of N (1: every "
            "sample, as the reference). Higher keeps Best-of-N among the actions the policy stands behind, whose "
            "values an offline critic can judge (a garbled typed text is usually drawn once)."
        },
    )
    invalid_resamples: int = field(
        default=0,
        metadata={
            "help": "Rounds of resampling the candidates that do not parse as actions (the reference: 3, "
            "`get_pi_action_guarantee_valid`); one still invalid after them is scored as invalid (A = 0)."
        },
    )
    token_probability_clamp: list[float] | None = field(
        default=None,
        metadata={
            "help": "low high: clamp each target token's probability to [low, high] before the log in the "
            "loss (the reference: 0.001 0.99), so tokens the actor already predicts get no gradient."
        },
    )
    max_completion_length: int = field(
        default=128,
        metadata={"help": "Most tokens generated per candidate (an AutoUI action is 20-70 tokens)."},
    )
    candidate_source: str = field(
        default="policy",
        metadata={
            "help": "Where candidates come from: 'policy' (sampled from the starting policy), 'dataset' (the "
            "`candidate_actions` column, how the reference precomputes them) or 'both'.",
            "choices": list(CANDIDATE_SOURCES),
        },
    )
    include_logged_action: bool = field(
        default=True,
        metadata={"help": "Add the dataset's logged action to every state's candidates (as the reference does)."},
    )
    weighting: str = field(
        default="threshold",
        metadata={
            "help": "Per-sample loss weight: 'threshold' 1[A > advantage_threshold] (Digi-Q), 'awr' "
            "min(exp(A / awr_beta), awr_max_weight), 'pg' A, 'filtered_bc' (logged action, 1 if its "
            "trajectory succeeded; no critic), 'sft' (logged action, weight 1; no critic).",
            "choices": list(WEIGHTINGS),
        },
    )
    advantage_threshold: float = field(
        default=0.10,
        metadata={
            "help": "a_min of 'threshold' weighting: only states whose best candidate has A > a_min are "
            "imitated. The paper uses 0.10 on AitW General and 0.05 on AitW WebShop (longer tasks, "
            "so smaller per-step advantages)."
        },
    )
    awr_beta: float = field(
        default=0.1,
        metadata={
            "help": "Temperature of 'awr' weights exp(A / beta). Advantages are in return units (|A| <= 1 "
            "with 0/1 rewards); 0.1 makes A = 0.1 weigh e times more than A = 0."
        },
    )
    awr_max_weight: float = field(
        default=20.0, metadata={"help": "Clip of 'awr' weights, so one state cannot dominate a batch."}
    )
    anchor: str = field(
        default="greedy",
        metadata={
            "help": "What a state imitates when its own weight is 0 (below the advantage threshold, or a "
            "failed trajectory for 'filtered_bc'): 'greedy' the starting policy's greedy action (also "
            "added to the Best-of-N candidates), 'logged' the dataset's action, 'none' nothing (the state "
            "is dropped). With an anchor every state of the offline dataset stays in training, so the "
            "actor keeps the actions its imitated states rarely show.",
            "choices": list(ANCHORS),
        },
    )
    anchor_weight: float = field(
        default=1.0,
        metadata={"help": "Loss weight of the anchor targets (0 keeps their rows in each batch's mean with no "
                  "gradient of their own, as the reference trains on the whole dataset)."},
    )
    candidate_batch_size: int = field(
        default=8,
        metadata={
            "help": "States per batch of the candidate preparation (one generate call samples N candidates "
            "for all of them; one critic call scores them)."
        },
    )
    preparation_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the preparation's steps (greedy actions, sampled and scored candidates) are cached, "
            "keyed by what each depends on. Default: `_best_of_n_cache` in output_dir. Trainers that share "
            "one folder reuse each other's work (e.g. the greedy actions of the same starting policy)."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Most tokens (image tokens included) of prompt + imitated action. Longer rows are dropped "
            "before training, never truncated: truncation would cut the action (teaching unparsable "
            "strings) or the image tokens. None keeps every row."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weighting(self.weighting)
        check_anchor(self.anchor)
        if self.anchor_weight < 0:
            raise ValueError(f"anchor_weight must be >= 0, got {self.anchor_weight}")
        if self.candidate_source not in CANDIDATE_SOURCES:
            raise ValueError(f"candidate_source must be one of {CANDIDATE_SOURCES}, got {self.candidate_source!r}")
        for name in ("num_candidates", "min_candidate_count", "max_completion_length", "candidate_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        clamp = self.token_probability_clamp
        if clamp is not None and (len(clamp) != 2 or not 0.0 < clamp[0] < clamp[1] <= 1.0):
            raise ValueError(f"token_probability_clamp must be [low, high] with 0 < low < high <= 1, got {clamp}")
        if self.invalid_resamples < 0:
            raise ValueError(f"invalid_resamples must be >= 0, got {self.invalid_resamples}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.awr_beta <= 0 or self.awr_max_weight <= 0:
            raise ValueError(f"awr_beta and awr_max_weight must be > 0, got {self.awr_beta}, {self.awr_max_weight}")
