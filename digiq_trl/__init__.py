"""digiq-trl: Digi-Q (offline value-based RL for vision-language device-control agents) for 🤗.

The public API is re-exported here; see the README for the four stages of the method.
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
    TransitionValidationError,
    compute_mc_returns,
    split_by_episode,
    transition_features,
    validate_transitions,
)

__all__ = [
    "ActionParseError",
    "ActionType",
    "DeviceAction",
    "TRANSITION_FEATURES",
    "TransitionValidationError",
    "actions_match",
    "compute_mc_returns",
    "describe_action",
    "format_action",
    "format_history",
    "parse_action",
    "split_by_episode",
    "transition_features",
    "try_parse_action",
    "validate_transitions",
]
