"""The canonical transition schema: one row per step of an agent trajectory.

Every converter, the simulator's collector and every trainer speak this schema. Optional columns
may be absent; the required ones must all be present.

| column | type | meaning |
|---|---|---|
| ``episode_id`` | string | id of the trajectory the step belongs to |
| ``step_id`` | int32 | 0-based index of the step inside its episode (contiguous) |
| ``goal`` | string | the natural-language task, e.g. ``"Search for hotels in Paris"`` |
| ``history`` | string | previous actions of the episode, :func:`digiq_trl.actions.format_history` |
| ``image`` | Image | screenshot before the action |
| ``next_image`` | Image | screenshot after the action |
| ``action`` | string | the action taken, an AutoUI action string |
| ``reward`` | float32 | reward of this step, in ``[0, 1]`` (1 on the step that completes the task) |
| ``done`` | bool | whether the episode ends with this step (true exactly on its last step) |
| ``mc_return`` | float32 | discounted return from this step to the end of the episode |
| ``trajectory_reward`` | float32 | total reward of the whole episode (1 for a success) |
| ``candidate_actions`` | list of string | optional: candidate actions for Best-of-N (AutoUI strings) |
| ``ui_boxes`` | list of [y, x, h, w] | optional: normalized UI element boxes, for action matching |
"""

from __future__ import annotations

from datasets import Features, Image, List, Value


REQUIRED_FEATURES = Features(
    {
        "episode_id": Value("string"),
        "step_id": Value("int32"),
        "goal": Value("string"),
        "history": Value("string"),
        "image": Image(),
        "next_image": Image(),
        "action": Value("string"),
        "reward": Value("float32"),
        "done": Value("bool"),
        "mc_return": Value("float32"),
        "trajectory_reward": Value("float32"),
    }
)
"""Columns every transitions dataset has."""

OPTIONAL_FEATURES = Features(
    {
        "candidate_actions": List(Value("string")),
        "ui_boxes": List(List(Value("float32"), length=4)),
    }
)
"""Columns a transitions dataset may have."""

TRANSITION_FEATURES = Features({**REQUIRED_FEATURES, **OPTIONAL_FEATURES})
"""All columns of the schema, required and optional."""


def transition_features(
    with_candidates: bool = False, with_ui_boxes: bool = False
) -> Features:
    """The schema's ``Features`` with the chosen optional columns, in canonical column order."""
    features = dict(REQUIRED_FEATURES)
    if with_candidates:
        features["candidate_actions"] = OPTIONAL_FEATURES["candidate_actions"]
    if with_ui_boxes:
        features["ui_boxes"] = OPTIONAL_FEATURES["ui_boxes"]
    return Features(features)
