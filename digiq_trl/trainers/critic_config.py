"""Configuration of :class:`~digiq_trl.trainers.critic_trainer.DigiQCriticTrainer`.

Defaults follow the Digi-Q paper's critic stage (gamma 0.95, tau 0.1 per optimizer step, Adam at
lr 1e-5 with a constant schedule, gradient norm clipped at 0.01, batch 32 x 4 accumulation steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import SchedulerType

from ..discount import DEFAULT_GAMMA, check_gamma
from .base_config import DigiQTrainingArguments


LOSS_TYPES: tuple[str, ...] = ("td", "mc")
V_TARGET_COMBINES: tuple[str, ...] = ("min", "independent")


@dataclass
class DigiQCriticConfig(DigiQTrainingArguments):
    r"""Arguments of the Digi-Q critic trainer (offline TD or Monte-Carlo regression of Q and V heads).

    Only the critic-specific fields are listed here; see :class:`~transformers.TrainingArguments`
    for the rest. Defaults that differ from ``TrainingArguments``: ``learning_rate`` 1e-5,
    ``lr_scheduler_type`` ``"constant"``, ``max_grad_norm`` 0.01, ``per_device_train_batch_size``
    32, ``gradient_accumulation_steps`` 4, ``ddp_find_unused_parameters`` False, and those of
    :class:`~digiq_trl.trainers.base_config.DigiQTrainingArguments` (``logging_steps`` 10,
    ``remove_unused_columns`` False).

    Parameters:
        gamma: discount of the TD targets.
        tau: Polyak rate of the target heads, applied every ``target_update_interval`` optimizer steps.
        target_update_interval: optimizer steps (not micro-batches) between two target updates.
        loss_type: ``"td"`` (bootstrapped targets, the paper's method) or ``"mc"`` (regress on
            ``mc_return``).
        v_target_combine: ``"min"`` or ``"independent"``, see :func:`digiq_trl.targets.v_targets`.
        q_features_column, v_features_column, next_v_features_column, alt_q_features_column: names
            of the cached feature columns.
        alt_actions_column: column of alternative actions whose features are computed for the
            ranking metric when an evaluation dataset is featurized by the trainer.
        feature_batch_size: rows per batch when the trainer featurizes raw transitions.
    """

    learning_rate: float = field(
        default=1e-5,
        metadata={"help": "Learning rate of the critic heads (Adam). Paper: 1e-5."},
    )
    lr_scheduler_type: SchedulerType | str = field(
        default="constant",
        metadata={"help": "Learning-rate schedule. Paper: constant."},
    )
    max_grad_norm: float = field(
        default=0.01,
        metadata={"help": "Gradient norm clipping of the critic heads. Paper: 0.01."},
    )
    per_device_train_batch_size: int = field(
        default=32,
        metadata={"help": "Transitions per device per micro-batch. Paper: 32."},
    )
    gradient_accumulation_steps: int = field(
        default=4,
        metadata={"help": "Micro-batches accumulated per optimizer step. Paper: 4."},
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={
            "help": "Kept False: every online head is used in each forward and the target heads "
            "never require grad, so DDP can skip the search for unused parameters."
        },
    )
    gamma: float = field(
        default=DEFAULT_GAMMA,
        metadata={"help": "Discount factor of the TD targets r + gamma * (1 - done) * Vbar(s'). Paper: 0.95."},
    )
    tau: float = field(
        default=0.1,
        metadata={
            "help": "Polyak rate: target <- (1 - tau) * target + tau * online after each target update. "
            "Paper: 0.1."
        },
    )
    target_update_interval: int = field(
        default=1,
        metadata={
            "help": "Optimizer steps between target updates (counted in optimizer steps, so gradient "
            "accumulation does not change it). Paper: 1."
        },
    )
    loss_type: str = field(
        default="td",
        metadata={
            "help": "Regression targets: 'td' (one-step TD with target heads, the paper's method) or "
            "'mc' (discounted Monte-Carlo return for all four heads).",
            "choices": list(LOSS_TYPES),
        },
    )
    v_target_combine: str = field(
        default="min",
        metadata={
            "help": "V target from the two target Q heads on the logged action: 'min' (both V heads "
            "regress to min(Qbar1, Qbar2)) or 'independent' (V_i regresses to Qbar_i).",
            "choices": list(V_TARGET_COMBINES),
        },
    )
    conservative_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a conservative (CQL-style) penalty logsumexp(Q_i(s, a_data), Q_i(s, alt_k)) - "
            "Q_i(s, a_data) on each Q head, over the training set's alternative actions (alt_q_features). "
            "Offline TD never sees those "
            "actions, so Q can overrate them; Best-of-N then picks them. 0 (the paper) disables it; "
            "> 0 needs alternatives in the training data.",
        },
    )
    q_features_column: str = field(
        default="q_features",
        metadata={"help": "Column with the state-action feature of the logged action."},
    )
    v_features_column: str = field(
        default="v_features",
        metadata={"help": "Column with the state feature of s."},
    )
    next_v_features_column: str = field(
        default="next_v_features",
        metadata={"help": "Column with the state feature of s' (any values, e.g. zeros, where done)."},
    )
    alt_q_features_column: str = field(
        default="alt_q_features",
        metadata={
            "help": "Optional evaluation column: list of state-action features of alternative actions "
            "in the same state, for the ranking-accuracy metric."
        },
    )
    alt_actions_column: str | None = field(
        default="candidate_actions",
        metadata={
            "help": "Column of alternative actions to featurize into `alt_q_features_column` when the "
            "trainer featurizes a raw evaluation dataset (ignored if the column is absent)."
        },
    )
    feature_batch_size: int = field(
        default=8,
        metadata={"help": "Rows per batch when the trainer featurizes raw transitions."},
    )

    def __post_init__(self) -> None:
        """Let ``TrainingArguments`` finish its own setup, then check the critic fields."""
        super().__post_init__()
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.v_target_combine not in V_TARGET_COMBINES:
            raise ValueError(
                f"v_target_combine must be one of {V_TARGET_COMBINES}, got {self.v_target_combine!r}"
            )
        check_gamma(self.gamma)
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {self.tau}")
        if self.target_update_interval < 1:
            raise ValueError(f"target_update_interval must be >= 1, got {self.target_update_interval}")
        if self.conservative_weight < 0:
            raise ValueError(f"conservative_weight must be >= 0, got {self.conservative_weight}")
        if self.feature_batch_size < 1:
            raise ValueError(f"feature_batch_size must be >= 1, got {self.feature_batch_size}")
