"""Where a run's models go: every VLM and critic is loaded onto this process's accelerator.

``VLMPolicy`` and ``VLMFeatureExtractor`` move their inputs to ``model.device``, so a model left on
the CPU of a GPU machine would run there; every stage, command and tool loads through
:func:`load_vlm` (or places what it loaded with :func:`on_process_device`).
"""

from __future__ import annotations

from typing import Any


def process_device() -> Any:
    """This process's accelerator as accelerate assigns it (``PartialState().device``): its local
    rank's GPU under ``accelerate launch``, else the GPU (or MPS) when there is one, else the CPU."""
    from accelerate import PartialState

    return PartialState().device


def on_process_device(model: Any) -> Any:
    """``model``, moved to :func:`process_device` (a no-op on a CPU machine): a VLM left on the CPU of
    a GPU machine would run there, since ``VLMPolicy`` and ``VLMFeatureExtractor`` move their inputs
    to ``model.device``. A model ``from_pretrained`` already placed (a ``device_map`` in
    ``model_init_kwargs``, or quantized weights, which cannot be moved) stays where it is."""
    if getattr(model, "hf_device_map", None) is None and not getattr(model, "is_quantized", False):
        model.to(process_device())
    return model


def load_vlm(name_or_path: str, **kwargs: Any) -> Any:
    """``AutoModelForImageTextToText.from_pretrained`` of a Hub id, path or shipped name
    (:func:`~digiq_trl.models.pretrained.resolve_pretrained`) with ``kwargs`` (``dtype``,
    ``attn_implementation``, ``quantization_config``, ...), on this process's accelerator."""
    from transformers import AutoModelForImageTextToText

    from .pretrained import resolve_pretrained

    return on_process_device(AutoModelForImageTextToText.from_pretrained(resolve_pretrained(name_or_path), **kwargs))
