"""Transitions: the canonical schema, validation, returns and splits."""

from .returns import compute_mc_returns, discounted_returns, split_by_episode
from .schema import OPTIONAL_FEATURES, REQUIRED_FEATURES, TRANSITION_FEATURES, transition_features
from .validation import TransitionValidationError, validate_transitions

__all__ = [
    "OPTIONAL_FEATURES",
    "REQUIRED_FEATURES",
    "TRANSITION_FEATURES",
    "TransitionValidationError",
    "compute_mc_returns",
    "discounted_returns",
    "split_by_episode",
    "transition_features",
    "validate_transitions",
]
