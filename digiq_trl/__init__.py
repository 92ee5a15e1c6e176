"""digiq-trl: Digi-Q (offline value-based RL for vision-language device-control agents) for 🤗.

The public API is re-exported here; see the README for the four stages of the method.

Example:
    >>> from digiq_trl import DigiQCriticTrainer, BestOfNActorTrainer  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .actions import (
    ActionParseError,
    ActionType,
    DeviceAction,
    actions_match,
    describe_action,
    format_action,
    format_history,
    parse_action,
    try_parse_action,
)
from .data import (
    TRANSITION_FEATURES,
    ConversionError,
    HubPushError,
    TransitionValidationError,
    UnsafePickleError,
    compute_mc_returns,
    convert_aitw_tfrecord,
    convert_digiq_pt,
    load_transitions,
    push_transitions,
    split_by_episode,
    transition_features,
    validate_transitions,
)
from .envs import ExpertPolicy, NoisyExpertPolicy, PhoneEnv, RandomPolicy, collect_transitions
from .evaluation import evaluate_policy, evaluate_policy_seeds
from .models import DigiQCritic, DigiQCriticModelConfig, VLMFeatureExtractor, VLMPolicy, cache_features
from .representation import build_actionability_dataset
from .targets import advantage, auroc, mc_targets, polyak_update, ranking_accuracy, td_targets, v_targets
from .trainers import (
    BestOfNActorConfig,
    BestOfNActorTrainer,
    DigiQCriticConfig,
    DigiQCriticTrainer,
    RepresentationConfig,
    RepresentationTrainer,
    behavior_clone,
    train_representation,
)

__all__ = [
    "TRANSITION_FEATURES",
    "ActionParseError",
    "ActionType",
    "BestOfNActorConfig",
    "BestOfNActorTrainer",
    "ConversionError",
    "DeviceAction",
    "DigiQCritic",
    "DigiQCriticConfig",
    "DigiQCriticModelConfig",
    "DigiQCriticTrainer",
    "ExpertPolicy",
    "HubPushError",
    "NoisyExpertPolicy",
    "PhoneEnv",
    "RandomPolicy",
    "RepresentationConfig",
    "RepresentationTrainer",
    "TransitionValidationError",
    "UnsafePickleError",
    "VLMFeatureExtractor",
    "VLMPolicy",
    "actions_match",
    "advantage",
    "auroc",
    "behavior_clone",
    "build_actionability_dataset",
    "cache_features",
    "collect_transitions",
    "compute_mc_returns",
    "convert_aitw_tfrecord",
    "convert_digiq_pt",
    "describe_action",
    "evaluate_policy",
    "evaluate_policy_seeds",
    "format_action",
    "format_history",
    "load_transitions",
    "mc_targets",
    "parse_action",
    "polyak_update",
    "push_transitions",
    "ranking_accuracy",
    "split_by_episode",
    "td_targets",
    "train_representation",
    "transition_features",
    "try_parse_action",
    "v_targets",
    "validate_transitions",
]
