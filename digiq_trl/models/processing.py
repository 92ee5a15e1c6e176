"""Processors that work without torchvision, and a loader that picks them when needed.

``Qwen2VLProcessor`` (and ``Qwen2_5_VLProcessor``, ``Qwen3VLProcessor``) in transformers 5.x always
builds a video processor, and video processors need torchvision; on a machine without it,
constructing or loading the processor fails even though agents never see video.
:class:`Qwen2VLImageTextProcessor` is the same processor without the video half: same image tokens,
same ``image_grid_thw`` and ``mm_token_type_ids`` outputs, so it serves real Qwen2-VL, Qwen2.5-VL and
Qwen3-VL checkpoints (through :func:`load_processor`) as well as the tiny offline models of
:mod:`digiq_trl.models.tiny`. (Qwen3-VL's processor differs from Qwen2-VL's only for video, where it
writes frame timestamps; its image processor is Qwen2-VL's with 16-pixel patches, read from the
checkpoint.)

Example:
    >>> from digiq_trl.models.processing import load_processor
    >>> processor = load_processor("Qwen/Qwen2-VL-2B-Instruct")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from typing import Any

from transformers import AutoProcessor, PretrainedConfig, ProcessorMixin
from transformers.models.qwen2_vl import Qwen2VLProcessor
from transformers.utils import cached_file


QWEN2_VL_PROCESSOR_CLASSES = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor")
"""Processor classes whose checkpoints :class:`Qwen2VLImageTextProcessor` can stand in for."""


class Qwen2VLImageTextProcessor(Qwen2VLProcessor):
    """A Qwen2-VL / Qwen2.5-VL / Qwen3-VL processor for images and text only (no video processor).

    Args:
        image_processor: a Qwen2-VL image processor (``Qwen2VLImageProcessorPil`` works without
            torchvision).
        tokenizer: the tokenizer; it must know ``<|image_pad|>`` (or define ``image_token``).
        chat_template: a Jinja chat template; the messages of :func:`digiq_trl.prompts.build_messages`
            must render with it.
    """

    def __init__(
        self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None, **kwargs: Any
    ) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = getattr(tokenizer, "image_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.image_token
        )
        self.video_token_id = getattr(tokenizer, "video_token_id", None) or tokenizer.convert_tokens_to_ids(
            self.video_token
        )
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class _ImageTextProcessorConfig(PretrainedConfig):
    """Placeholder config so ``AutoProcessor`` can find our processor classes by name."""

    model_type = "digiq_trl_image_text_processor"


AutoProcessor.register(_ImageTextProcessorConfig, Qwen2VLImageTextProcessor, exist_ok=True)


def _saved_processor_class(name_or_path: str, **kwargs: Any) -> str | None:
    """The ``processor_class`` recorded in a checkpoint's processor or tokenizer config, if any."""
    for filename in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False, **kwargs)
        if path is None or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            processor_class = json.load(f).get("processor_class")
        if processor_class:
            return processor_class
    return None


def load_processor(name_or_path: str, **kwargs: Any) -> ProcessorMixin:
    """Load a checkpoint's processor, without torchvision where the checkpoint allows.

    Uses ``AutoProcessor``; for Qwen-VL checkpoints (:data:`QWEN2_VL_PROCESSOR_CLASSES`) whose
    processor cannot be built here (no torchvision for the video processor) it loads
    :class:`Qwen2VLImageTextProcessor` instead.

    Args:
        name_or_path: a Hub id, a local directory, or a shipped model's name
            (:func:`~digiq_trl.models.pretrained.resolve_pretrained`).
        **kwargs: passed to ``from_pretrained`` (e.g. ``min_pixels``, ``max_pixels``, ``revision``).
    """
    from .pretrained import resolve_pretrained

    name_or_path = resolve_pretrained(name_or_path)
    try:
        return AutoProcessor.from_pretrained(name_or_path, **kwargs)
    except (AttributeError, ImportError, OSError, ValueError):
        if _saved_processor_class(name_or_path) not in QWEN2_VL_PROCESSOR_CLASSES:
            raise
    return Qwen2VLImageTextProcessor.from_pretrained(name_or_path, **kwargs)
