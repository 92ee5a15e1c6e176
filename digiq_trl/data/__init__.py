"""Transitions: the canonical schema, validation, returns and splits, converters and Hub I/O."""

from .aitw_tfrecord import TFRecordError, convert_aitw_tfrecord
from .conversion import ConversionError, save_transitions
from .digiq_pt import UnsafePickleError, convert_digiq_pt, load_reference_file
from .hub import HubPushError, load_transitions, push_transitions
from .returns import compute_mc_returns, discounted_returns, episode_returns, split_by_episode, take_episodes
from .schema import OPTIONAL_FEATURES, REQUIRED_FEATURES, TRANSITION_FEATURES, transition_features
from .validation import TransitionValidationError, validate_transitions


__all__ = [
    "OPTIONAL_FEATURES",
    "REQUIRED_FEATURES",
    "TRANSITION_FEATURES",
    "ConversionError",
    "HubPushError",
    "TFRecordError",
    "TransitionValidationError",
    "UnsafePickleError",
    "compute_mc_returns",
    "convert_aitw_tfrecord",
    "convert_digiq_pt",
    "discounted_returns",
    "episode_returns",
    "load_reference_file",
    "load_transitions",
    "push_transitions",
    "save_transitions",
    "split_by_episode",
    "take_episodes",
    "transition_features",
    "validate_transitions",
]
