"""digiq-trl: Digi-Q (offline value-based RL for vision-language device-control agents) for 🤗.

The public API is re-exported here; see the README for the four stages of the method. Names are
imported on first use (:mod:`digiq_trl._lazy`), so ``import digiq_trl`` stays cheap: torch and
transformers load only when a name that needs them is read. Type checkers and IDEs read the same
names from the ``TYPE_CHECKING`` imports, which ``tests/test_imports.py`` keeps equal to the lazy
table. Importing the package registers the simulated phones ``digiq_trl/Phone-general-v0`` and
``digiq_trl/Phone-webshop-v0`` with Gymnasium.

Example:
    >>> from digiq_trl import DigiQCriticTrainer, BestOfNActorTrainer  # doctest: +SKIP
"""

__version__ = "0.1.0"

# ruff: noqa: F401  (this module's imports are re-exports and the environments' registration)
from typing import TYPE_CHECKING

from . import (
    _lazy,
    envs,  # registers the Gymnasium environments; cheap, see envs/__init__.py
)


if TYPE_CHECKING:  # what type checkers and IDEs read; at run time the names load on first use (below)
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
    from .envs.policies import add_random_alternatives
    from .evaluation import evaluate_policy, evaluate_policy_seeds
    from .models import DigiQCritic, DigiQCriticModelConfig, VLMFeatureExtractor, VLMPolicy, cache_features
    from .pipeline import DigiQPipeline
    from .pipeline_config import DigiQPipelineConfig
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
    from .viewer import write_viewer

_EXPORTS = {
    ".actions": (
        "ActionParseError",
        "ActionType",
        "DeviceAction",
        "actions_match",
        "describe_action",
        "format_action",
        "format_history",
        "parse_action",
        "try_parse_action",
    ),
    ".data": (
        "TRANSITION_FEATURES",
        "ConversionError",
        "HubPushError",
        "TransitionValidationError",
        "UnsafePickleError",
        "compute_mc_returns",
        "convert_aitw_tfrecord",
        "convert_digiq_pt",
        "load_transitions",
        "push_transitions",
        "split_by_episode",
        "transition_features",
        "validate_transitions",
    ),
    ".envs": ("ExpertPolicy", "NoisyExpertPolicy", "PhoneEnv", "RandomPolicy", "collect_transitions"),
    ".envs.policies": ("add_random_alternatives",),
    ".evaluation": ("evaluate_policy", "evaluate_policy_seeds"),
    ".models": ("DigiQCritic", "DigiQCriticModelConfig", "VLMFeatureExtractor", "VLMPolicy", "cache_features"),
    ".pipeline": ("DigiQPipeline",),
    ".pipeline_config": ("DigiQPipelineConfig",),
    ".representation": ("build_actionability_dataset",),
    ".targets": ("advantage", "auroc", "mc_targets", "polyak_update", "ranking_accuracy", "td_targets", "v_targets"),
    ".trainers": (
        "BestOfNActorConfig",
        "BestOfNActorTrainer",
        "DigiQCriticConfig",
        "DigiQCriticTrainer",
        "RepresentationConfig",
        "RepresentationTrainer",
        "behavior_clone",
        "train_representation",
    ),
    ".viewer": ("write_viewer",),
}

__all__ = _lazy.exported_names(_EXPORTS)
__getattr__, __dir__ = _lazy.lazy_exports(__name__, _EXPORTS)
