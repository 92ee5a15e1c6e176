"""What digiq-trl reads of a transformers VLM's internals, shared by the feature extractor and the policy.

The model under a peft wrapper (:func:`unwrap_peft`), its text decoder's layer list
(:func:`decoder_layers`, which the feature extractor cuts and hooks), the families whose 3-D M-RoPE
positions are wired for prompt KV-cache reuse (:data:`PREFIX_SHARING_MODEL_TYPES`) and whether the
installed transformers still has the internals that reuse reads (:func:`prefix_sharing_unavailable`),
and a cheap digest of the weights (:func:`weights_digest`) that keys cached features and records
which backbone a critic was trained on.
"""

from __future__ import annotations

import hashlib
import inspect
import logging

import torch
import transformers
from transformers import DynamicCache, PreTrainedModel, cache_utils


logger = logging.getLogger(__name__)

PREFIX_SHARING_MODEL_TYPES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
"""Model types whose candidate features and samples reuse the prompt's KV cache (3-D M-RoPE
positions wired: the text positions after the prompt are its own plus ``rope_deltas``). Qwen3-VL's
interleaved M-RoPE and DeepStack change nothing there: the rotary layout is inside the model, and
DeepStack only adds to image positions, which are all in the prompt."""

_CACHE_METHODS = ("batch_repeat_interleave", "batch_select_indices", "crop")
"""``DynamicCache`` methods prefix sharing calls (copy the prompt's cache per candidate, drop finished
rows, remove a batch of answers)."""


def prefix_sharing_unavailable(model: torch.nn.Module) -> str | None:
    """Why prompt KV-cache reuse cannot run on ``model``, or ``None`` when it can.

    Reuse needs a family of :data:`PREFIX_SHARING_MODEL_TYPES` and transformers internals that are
    not public API and may change in any release: the backbone's ``get_rope_index`` and
    ``rope_deltas``, a ``cache`` argument of the model's and the backbone's ``forward`` (the name
    transformers 5.24 gives the KV cache; a model that ignored it would decode without the prompt),
    ``DynamicCache``'s per-row methods and ``cache_utils.DynamicLayer``. Where one is missing the
    callers take their generic path (full forwards, ``generate``), which needs none.
    """
    base = unwrap_peft(model)
    model_type = base.config.model_type
    if model_type not in PREFIX_SHARING_MODEL_TYPES:
        return f"prefix sharing is wired for {PREFIX_SHARING_MODEL_TYPES}, not {model_type!r}"
    backbone = base.base_model
    needed = {
        f"{type(backbone).__name__}.get_rope_index": callable(getattr(backbone, "get_rope_index", None)),
        f"{type(backbone).__name__}.rope_deltas": hasattr(backbone, "rope_deltas"),
        **{f"{cls.__name__}.forward(cache=...)": "cache" in inspect.signature(cls.forward).parameters
           for cls in (type(base), type(backbone))},
        "cache_utils.DynamicLayer": hasattr(cache_utils, "DynamicLayer"),
        **{f"DynamicCache.{name}": callable(getattr(DynamicCache, name, None)) for name in _CACHE_METHODS},
    }
    missing = [name for name, present in needed.items() if not present]
    if missing:
        return f"prefix sharing needs {', '.join(missing)}, which transformers {transformers.__version__} lacks"
    return None


def choose_prefix_sharing(model: torch.nn.Module, requested: bool | None, generic_path: str) -> bool:
    """Whether a feature extractor or policy shares prompt caches: ``requested`` when given (``True``
    raises where :func:`prefix_sharing_unavailable` says it cannot run), else wherever it can run.

    A family that is wired but meets a transformers without the internals logs a warning and takes
    ``generic_path`` (named in the warning): slower, same results.
    """
    reason = prefix_sharing_unavailable(model)
    if requested and reason:
        raise ValueError(f"{reason}; pass prefix_sharing=None or False")
    if requested is None and reason and unwrap_peft(model).config.model_type in PREFIX_SHARING_MODEL_TYPES:
        logger.warning("%s: using %s instead", reason, generic_path)
    return reason is None if requested is None else requested


def unwrap_peft(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model under a peft wrapper (LoRA layers stay injected and active)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) else model


def decoder_layers(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.ModuleList]:
    """The text decoder module and its list of decoder layers."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__} "
            f"(expected a ModuleList at {type(decoder).__name__}.layers)"
        )
    return decoder, layers


def weights_digest(model: torch.nn.Module, samples_per_tensor: int = 1024) -> str:
    """A short digest of a model's weights: every tensor's name, shape, dtype and a strided sample.

    Cheap for any model size (at most ``samples_per_tensor`` values read per tensor), and any
    training step changes it, so a fine-tuned model never reuses features cached for its base.
    """
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // samples_per_tensor)].cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
