"""The one prompt every stage uses: screenshot + goal + history -> next action.

The actor generates, the representation model classifies and the feature extractor embeds with the
same messages, so features line up with what the actor sees. Messages follow TRL's conversational
vision format (``{"type": "image"}`` placeholders, images passed separately), so
``trl.SFTTrainer`` and ``processor.apply_chat_template`` consume them directly.

Example:
    >>> from digiq_trl.prompts import build_messages
    >>> build_messages("Open Settings", "")[0]["content"][1]["text"]
    'Goal: Open Settings\\nPrevious actions: none\\nNext action:'
"""

from __future__ import annotations

from typing import Any

PROMPT_TEMPLATE_ID = "digiq-trl/act-v1"
"""Names the template below; critics record it so their features can be rebuilt exactly."""


def user_text(goal: str, history: str) -> str:
    """The text half of the user turn."""
    return f"Goal: {goal}\nPrevious actions: {history or 'none'}\nNext action:"


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
