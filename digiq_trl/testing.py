"""Helpers for tests and examples: the tiny offline VLMs of :mod:`digiq_trl.models.tiny`.

The builders live in :mod:`digiq_trl.models.tiny` (the embedded default's base actor is one of
them); this module re-exports them so tests and user code can keep importing them from here.

Example:
    >>> from digiq_trl.testing import tiny_qwen2_vl
    >>> model, processor = tiny_qwen2_vl()
    >>> model.config.model_type
    'qwen2_vl'
"""

from .models.tiny import (
    CHAT_TEMPLATE,
    IM_END,
    IM_START,
    IMAGE_TOKEN,
    PAD_TOKEN,
    SCREEN_SIZE,
    SPECIAL_TOKENS,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
    action_scaffold_tokens,
    tiny_llava,
    tiny_qwen2_vl,
    tiny_tokenizer,
    tokenizer_corpus,
)


__all__ = [
    "CHAT_TEMPLATE",
    "IMAGE_TOKEN",
    "IM_END",
    "IM_START",
    "PAD_TOKEN",
    "SCREEN_SIZE",
    "SPECIAL_TOKENS",
    "VIDEO_TOKEN",
    "VISION_END",
    "VISION_START",
    "action_scaffold_tokens",
    "tiny_llava",
    "tiny_qwen2_vl",
    "tiny_tokenizer",
    "tokenizer_corpus",
]
