"""What each stage's output depends on: its fingerprint, which a finished output's manifest records.

:func:`stage_fingerprint` digests the fields of :data:`STAGE_FIELDS` that a stage reads, the
content of its inputs and the fingerprint of the stage before it, so a changed field recomputes
that stage and every later one (:mod:`digiq_trl.artifacts` checks manifests). Every field a stage
reads is in its own or an earlier stage's list or in :data:`UNFINGERPRINTED_FIELDS`, with the
reason it changes nothing (a test records what each stage reads).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from .pipeline_config import DigiQPipelineConfig


RUN_FORMAT = 2
"""Part of every stage fingerprint: raised when the library changes what a stage makes (e.g. a new
LoRA default), so outputs of an earlier version are recomputed rather than reused."""


def stage_fingerprint(config: DigiQPipelineConfig, stage: str, upstream: str = "",
                      inputs: dict[str, str] | None = None) -> str:
    """A digest of the fields of ``config`` that ``stage`` depends on, of the content of its ``inputs`` (the
    :func:`~digiq_trl.artifacts.content_digest` of ``dataset`` / ``base_actor``, by field name)
    and of the stage before it (``upstream``): equal fingerprints mean an existing output can be
    reused."""
    values = {name: getattr(config, name) for name in STAGE_FIELDS[stage]
              if name not in FINGERPRINTED_WHEN_SET or getattr(config, name) is not None}
    content = {name: digest for name, digest in (inputs or {}).items() if name in STAGE_FIELDS[stage]}
    text = json.dumps({"stage": stage, "format": RUN_FORMAT, "fields": values, "upstream": upstream,
                       **({"inputs": content} if content else {})}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "base_actor": ("seed", "suite", "layout", "base_actor", "dataset", "test_size", "bc_layers", "bc_heads",
                   "bc_episodes", "bc_noise", "bc_pseudo_entities", "bc_steps", "bc_learning_rate", "bc_batch_size",
                   "bc_gradient_accumulation_steps", "max_pixels", "min_pixels", "bf16",
                   # how every VLM of the run is loaded, so this stage's and every later one's: attn_implementation
                   # too, as kernels that sum in other orders change features, candidates and weights in their
                   # last bits, and a reused output would differ from a fresh run's
                   "model_dtype", "attn_implementation", "model_init_kwargs"),
    "data": ("seed", "suite", "layout", "phone", "drift", "interruption_probability", "dataset", "collect_episodes", "gamma",
             "behavior_temperature", "rollout_batch_size", "test_size", "ranking_alternatives"),
    "representation": ("seed", "representation_steps", "representation_learning_rate", "representation_batch_size",
                       "representation_gradient_accumulation_steps", "bf16",
                       "push_to_hub", "hub_model_prefix",  # the critic's config names the pushed backbone's id
                       "representation_model", "critic_model"),
    "features": ("feature_layer", "feature_pooling", "feature_input", "critic_conservative_weight"),
    "critic": ("seed", "critic_hidden_size", "critic_text_encoder", "critic_text_layout", "critic_text_match",
               "critic_text_pooling", "critic_steps", "critic_learning_rate", "critic_batch_size",
               "critic_gradient_accumulation_steps", "critic_max_grad_norm", "critic_conservative_weight",
               "critic_v_target_combine", "gamma", "bf16"),
    "actor": ("num_candidates", "candidate_temperature", "min_candidate_count", "candidate_resamples", "candidate_source", "advantage_threshold", "anchor",
              "anchor_weight",
              "actor_steps", "actor_learning_rate", "actor_batch_size", "actor_gradient_accumulation_steps", "actor_max_states",
              "actor_max_grad_norm", "actor_token_probability_clamp", "bf16"),
}
"""The fields whose values each stage's output depends on (``evaluate`` always runs). ``actor`` also
keys each adapter by its method and training seed."""

FINGERPRINTED_WHEN_SET = frozenset({"model_dtype", "attn_implementation", "model_init_kwargs"})
"""Fields of :data:`STAGE_FIELDS` that enter a fingerprint only when set: null is how every model was
loaded before they existed, so the outputs of earlier runs keep their fingerprints and are reused."""

UNFINGERPRINTED_FIELDS: dict[str, str] = {
    "output_dir": "where the run writes, not what it makes",
    "skip_stages": "which stages run, not what they make",
    "num_threads": "CPU threads per process: the same outputs",
    "activation_checkpointing": "recomputes activations in backward: the same outputs",
    "critic_save_steps": "the checkpoint interval: a resumed critic has the same weights",
    "representation_save_steps": "the checkpoint interval: a resumed representation has the same weights",
    "actor_save_steps": "the checkpoint interval: a resumed adapter has the same weights",
    "ddp_timeout": "how long processes wait for each other",
    "report_to": "where the trainers log",
    "actor_seeds": "which adapters are trained; each adapter's fingerprint carries its own seed",
    "evaluation": "the data's split is only checked for it (offline needs a successful test episode); "
                  "the evaluate stage always runs",
}
"""Fields that stages read but that do not change what a stage makes, so they are in no stage's
fingerprint (a test checks that every other field a stage reads is in its own or an earlier
stage's :data:`STAGE_FIELDS`)."""
