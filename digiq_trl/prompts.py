"""The one prompt every stage uses: screenshot + goal + history -> next action.

The actor generates, the representation model classifies and the feature extractor embeds with the
same messages, so features line up with what the actor sees. Messages follow TRL's conversational
vision format (``{"type": "image"}`` placeholders, images passed separately), so
``trl.SFTTrainer`` and ``processor.apply_chat_template`` consume them directly.

Example:
    >>> from digiq_trl.prompts import build_messages
    >>> build_messages("Open Settings", "")[0]["content"][1]["text"].splitlines()[:2]
    ['Goal: Open Settings', 'Previous actions: none']
"""

from __future__ import annotations

from typing import Any

from .actions import ActionType


PROMPT_TEMPLATE_ID = "digiq-trl/act-v2"
"""Names the template below; critics record it so their features can be rebuilt exactly."""

FEATURE_INPUTS: tuple[str, ...] = ("actor_prompt", "actionability")
"""The inputs a critic's state-action features can come from: this module's actor prompt followed by
the action, or the stage-1 actionability question about it (:mod:`digiq_trl.representation`); see
:mod:`digiq_trl.models.features`."""

ACTION_FORMAT = (
    'Answer with one action in AutoUI format: Action Decision: "action_type": "<type>", '
    '"touch_point": "[y, x]", "lift_point": "[y, x]", "typed_text": "<text>", where <type> is one of '
    + ", ".join(member.name for member in ActionType)
    + '; points are fractions of the screen height and width ("[-1.0, -1.0]" when unused) and '
    'typed_text is empty unless the type is TYPE.'
)
"""The action format, stated in every prompt: a pretrained VLM that never saw AutoUI actions can
answer in it (behavior cloning on offline data then sharpens it), and the format is part of the
template, so features, critics and actors agree on it."""


def user_text(goal: str, history: str) -> str:
    """The text half of the user turn: goal, previous actions, the action format."""
    return f"Goal: {goal}\nPrevious actions: {history or 'none'}\n{ACTION_FORMAT}\nNext action:"


def build_messages(goal: str, history: str, action: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for one state, with the action as the assistant turn when given.

    Args:
        goal: the task instruction.
        history: previous actions (``digiq_trl.actions.format_history``); empty at the first step.
        action: the AutoUI action string to use as the assistant answer (for training), or None
            (for generation and state features).
    """
    messages: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": user_text(goal, history)}],
        }
    ]
    if action is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": action}]})
    return messages


def render_prompt(processor: Any, goal: str, history: str) -> str:
    """The generation prompt as text (the processor's chat template, generation prompt added)."""
    return processor.apply_chat_template(
        build_messages(goal, history), tokenize=False, add_generation_prompt=True
    )


def answer_token_ids(processor: Any, goal: str, history: str, action: str) -> list[int]:
    """Token ids the chat template puts after the generation prompt for ``action``.

    That is the action text and the end-of-turn marker (the stop token generation must learn),
    without trailing template whitespace: the tokens the actor is trained on and the feature
    extractor pools over, so both stages see the same answer.

    Raises:
        ValueError: the template renders the prompt differently once an answer is appended, so the
            answer cannot be split from it.
    """
    prompt = render_prompt(processor, goal, history)
    full = processor.apply_chat_template(build_messages(goal, history, action), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError(
            "the chat template's conversation with an answer does not start with its generation "
            f"prompt, so answer tokens cannot be located.\nprompt: {prompt!r}\nfull: {full!r}"
        )
    return processor.tokenizer(full[len(prompt) :].rstrip(), add_special_tokens=False)["input_ids"]
