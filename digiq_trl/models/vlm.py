"""What digiq-trl reads of a transformers VLM's internals, shared by the feature extractor and the policy.

The model under a peft wrapper (:func:`unwrap_peft`), its text decoder's layer list
(:func:`decoder_layers`, which the feature extractor cuts and hooks), the families whose 3-D M-RoPE
positions are wired for prompt KV-cache reuse (:data:`PREFIX_SHARING_MODEL_TYPES`), and a cheap
digest of the weights (:func:`weights_digest`) that keys cached features and records which backbone
a critic was trained on.
"""

from __future__ import annotations

import hashlib

import torch
from transformers import PreTrainedModel


PREFIX_SHARING_MODEL_TYPES: tuple[str, ...] = ("qwen2_vl", "qwen2_5_vl")
"""Model types whose candidate features reuse the prompt's KV cache (3-D M-RoPE positions wired)."""


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
