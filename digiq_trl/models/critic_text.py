"""The text the critic reads through its trainable text encoder: goal, previous action, action.

The reference critic (``digiq/models/critic.py``, ``VLMDoubleCritic``) feeds its heads RoBERTa
encodings of the goal, the previous action's type and typed text, and the candidate action's type
and typed text, with the encoders trained together with the heads: they are what lets a critic
compare a typed query with the goal. This module turns a state (``goal``, ``history``) and an
action into the token tensors of those texts, in one of two layouts (:data:`TEXT_LAYOUTS`):

* ``"joint"`` (digiq-trl's default): one sequence per input, ``goal: ... previous: ... action: ...``
  (V: without the action), encoded together, so attention can match the typed words with the goal's.
* ``"separate"`` (the reference): each part its own sequence, pooled and concatenated: previous type,
  previous text, goal (V), and also action type, action text (Q).

Either way an action is read as the reference reads it, its type and its typed text (``type "news
Chile"``, ``tap``): where a tap lands is for the VLM features to say (the stage-1 input draws it on
the screenshot), and short texts keep the encoder cheap.

Everything here is a pure function of strings, so the layouts are tested on hand-written cases.

Example:
    >>> action = 'Action Decision: "action_type": "TYPE", "touch_point": "[-1.0, -1.0]", "lift_point": "[-1.0, -1.0]", "typed_text": "news Chile"'
    >>> critic_segments("Search for news in Chile", 'tap [0.12, 0.41]', action, "joint")
    ['goal: Search for news in Chile previous: tap action: type "news Chile"']
    >>> critic_segments("Search for news in Chile", "", None, "separate")
    ['', '', 'Search for news in Chile']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..actions import ActionType, describe_action, try_parse_action


TEXT_LAYOUTS: tuple[str, ...] = ("joint", "separate")
"""How the critic's texts are laid out (see the module docstring)."""

TEXT_POOLINGS: tuple[str, ...] = ("mean", "pooler")
"""How a text encoder's token states become one vector: masked mean, or the model's pooler output
(the reference: RoBERTa's ``pooler_output``)."""

if TYPE_CHECKING:
    import torch

_HISTORY_ENTRY = re.compile(r"; (?=(?:tap|swipe|type|back|home|enter|complete|impossible)\b)")
"""Where one ``format_history`` entry ends and the next begins (typed text may hold ``"; "``)."""

_DESCRIPTION_TYPES = {
    "tap": ActionType.DUAL_POINT, "swipe": ActionType.DUAL_POINT, "type": ActionType.TYPE,
    "back": ActionType.PRESS_BACK, "home": ActionType.PRESS_HOME, "enter": ActionType.PRESS_ENTER,
    "complete": ActionType.STATUS_TASK_COMPLETE, "impossible": ActionType.STATUS_TASK_IMPOSSIBLE,
}


def check_layout(layout: str) -> None:
    """Raise a ``ValueError`` naming the layouts when ``layout`` is unknown."""
    if layout not in TEXT_LAYOUTS:
        raise ValueError(f"text layout must be one of {TEXT_LAYOUTS}, got {layout!r}")


def previous_action(history: str) -> str:
    """The last entry of a ``history`` text (:func:`~digiq_trl.actions.format_history`), or ``""``.

    Example:
        >>> previous_action('tap [0.2, 0.3]; type "a; b"; enter')
        'enter'
        >>> previous_action('tap [0.2, 0.3]; type "a; b"')
        'type "a; b"'
    """
    return _HISTORY_ENTRY.split(history)[-1].strip() if history.strip() else ""


def action_text(action: str) -> str:
    """An AutoUI action string described as the history describes it (``tap [0.52, 0.31]``); an
    unparsable string as it is."""
    parsed = try_parse_action(action)
    return describe_action(parsed) if parsed is not None else action


def _type_and_text(description: str) -> tuple[str, str]:
    """The verb (``tap``, ``type``, ...) and typed text of a described action, as the reference
    splits an action into its type and text (an unknown description is both)."""
    word, _, rest = description.partition(" ")
    kind = _DESCRIPTION_TYPES.get(word)
    if kind is None:
        return description, description
    typed = rest.strip()[1:-1] if kind == ActionType.TYPE and len(rest.strip()) >= 2 else ""
    return word, typed


def _short(description: str) -> str:
    """A described action without its points: ``tap``, ``swipe``, ``type "news Chile"``, ``back``."""
    word, typed = _type_and_text(description)
    return f'{word} "{typed}"' if word == "type" else word


def critic_segments(goal: str, history: str, action: str | None, layout: str) -> list[str]:
    """The texts of one critic input: with ``action`` the Q input's, without it the V input's.

    Args:
        goal: the task instruction.
        history: the state's history text; only its last entry (the previous action) is read.
        action: an AutoUI action string (Q), or None (V).
        layout: one of :data:`TEXT_LAYOUTS`.
    """
    check_layout(layout)
    previous = previous_action(history)
    described = action_text(action) if action is not None else None
    if layout == "joint":
        text = f"goal: {goal} previous: {_short(previous) if previous else 'none'}"
        return [text if described is None else f"{text} action: {_short(described)}"]
    segments = [*(_type_and_text(previous) if previous else ("", "")), goal]
    return segments if described is None else [*segments, *_type_and_text(described)]


def num_segments(layout: str, with_action: bool) -> int:
    """How many texts :func:`critic_segments` gives (the encoder's outputs are concatenated)."""
    check_layout(layout)
    if layout == "joint":
        return 1
    return 5 if with_action else 3


MATCH_FEATURES = ("has_text", "mean_match", "min_match", "goal_coverage")
"""What the critic's text match adds to its heads' inputs: whether a text is typed; over its tokens
the mean and the least of each token's best cosine similarity with the goal's tokens; and over the
goal's tokens the mean of each one's best similarity with the typed tokens (how much of the goal
the text covers). Similarities are taken in the text encoder's embedding space, trained with the
critic: late interaction, as ColBERT's MaxSim."""


def tokenize_segments(
    tokenizer: Any, segments: Sequence[Sequence[str]], max_length: int
) -> dict[str, torch.Tensor]:
    """Token ids and attention mask ``(B, S, L)`` of ``B`` inputs of ``S`` texts each.

    Texts are truncated from the left (the reference's ``truncation_side='left'``: a long goal or
    history keeps its end) to ``max_length`` tokens and right-padded to the longest in the batch. An
    empty text becomes one padding token with mask 1, so every sequence has a token to pool.
    """
    import torch

    flat = [text for row in segments for text in row]
    count = len(segments[0]) if segments else 0
    if any(len(row) != count for row in segments):
        raise ValueError("every input needs the same number of texts")
    side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    try:
        ids = tokenizer(flat, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    finally:
        tokenizer.truncation_side = side
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = [row or [pad] for row in ids]
    width = max((len(row) for row in ids), default=1)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return {"input_ids": input_ids.view(len(segments), count, width),
            "attention_mask": mask.view(len(segments), count, width)}


def typed_text(history: str, action: str | None) -> str:
    """The text a Q input types (``action``'s, empty unless TYPE) or, for a V input (``action`` None),
    the text the previous action typed: what :data:`MATCH_FEATURES` compare with the goal.

    Example:
        >>> typed_text('tap [0.1, 0.2]; type "news Chile"', None)
        'news Chile'
    """
    described = action_text(action) if action is not None else previous_action(history)
    return _type_and_text(described)[1] if described else ""


def critic_text_inputs(
    tokenizer: Any,
    goals: Sequence[str],
    histories: Sequence[str],
    actions: Sequence[str] | None,
    layout: str,
    max_length: int,
    match: bool = False,
) -> dict[str, torch.Tensor]:
    """Tokenized critic texts of a batch: Q inputs when ``actions`` are given, else V inputs.

    With ``match``, also ``match_ids`` / ``match_mask`` ``(B, 2, L)``: the goal and the typed text
    (:func:`typed_text`), which the critic compares token by token.
    """
    rows = [critic_segments(g, h, actions[i] if actions is not None else None, layout)
            for i, (g, h) in enumerate(zip(goals, histories))]
    tokens = tokenize_segments(tokenizer, rows, max_length)
    if match:
        pairs = [[g, typed_text(h, actions[i] if actions is not None else None)]
                 for i, (g, h) in enumerate(zip(goals, histories))]
        paired = tokenize_segments(tokenizer, pairs, max_length)
        tokens.update(match_ids=paired["input_ids"], match_mask=paired["attention_mask"])
    return tokens
