"""Digi-Q critic: double Q and double V MLPs on frozen VLM features and a trainable text encoder.

The critic never sees pixels: it reads features that a frozen VLM computed once and that were cached
as dataset columns (``digiq_trl.models.feature_cache``), and, with a ``text_encoder_config``, the
goal, the previous action and the action as text (:mod:`digiq_trl.models.critic_text`) through a
small text encoder trained with the heads, as the reference critic reads them through RoBERTa
encoders trained with it. Its config records which backbone, revision, layer, pooling, feature input
and prompt template produced the features, so whoever downloads the critic can rebuild them.

With a text encoder the heads read ``Q: [text(goal, previous, action), v_features, q_features]`` and
``V: [text(goal, previous), v_features]``; without one, ``Q: q_features`` and ``V: v_features``.
Target copies (heads and text encoder) follow the online ones by Polyak averaging.

Example:
    >>> import torch
    >>> from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig
    >>> critic = DigiQCritic(DigiQCriticModelConfig(q_input_dim=8, v_input_dim=4, hidden_size=16))
    >>> critic.advantage(torch.randn(3, 8), torch.randn(3, 4)).shape
    torch.Size([3])
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from ..prompts import FEATURE_INPUTS, PROMPT_TEMPLATE_ID
from ..targets import advantage, polyak_update
from .critic_text import MATCH_FEATURES, TEXT_LAYOUTS, TEXT_POOLINGS, num_segments


Text = dict[str, torch.Tensor]
"""Tokenized critic texts: ``input_ids`` and ``attention_mask`` of shape ``(..., S, L)``."""


@strict
class DigiQCriticModelConfig(PreTrainedConfig):
    r"""Sizes of the critic heads and the provenance of the features they read.

    Defaults: two hidden layers of 1024 units per head. The reference uses 4096-unit heads
    (Q 10752->4096->4096->1, V 5120->4096->4096->1, ~200M parameters with targets ~400M) because
    its heads also mix in text-encoder outputs; on frozen, already-contextual VLM features 1024
    units hold ample capacity for datasets of ~10k transitions, train ~10x faster per step and
    overfit less. Raise ``hidden_size`` for larger datasets.

    Args:
        q_input_dim: width of the state-action features (``q_features`` column).
        v_input_dim: width of the state features (``v_features`` / ``next_v_features`` columns).
        hidden_size: units of each hidden layer of every head.
        num_hidden_layers: hidden layers per head (0 makes each head a linear probe).
        hidden_act: activation between layers, a key of ``transformers.activations.ACT2FN``.
        dropout: dropout after each hidden activation of the online heads (targets never drop).
        initializer_range: std of the normal initialization of the linear layers.
        backbone_model_id: Hub id or path of the VLM that produced the features.
        backbone_revision: exact revision (commit) of that VLM.
        backbone_adapter: Hub id or path of a peft adapter merged into the VLM (e.g. the stage-1
            representation fine-tune), or None.
        backbone_weights_digest: digest of the VLM weights (``VLMFeatureExtractor.provenance``), to
            verify that rebuilt features come from identical weights.
        feature_layer: index into the VLM's ``hidden_states`` the features were taken from.
        feature_pooling: how token states were pooled into one vector (e.g. ``"mean"``, ``"last"``).
        prompt_template_id: id of the prompt template (``digiq_trl.prompts.PROMPT_TEMPLATE_ID``).
        feature_input: which VLM input the Q features come from, one of
            :data:`~digiq_trl.prompts.FEATURE_INPUTS` (None: not recorded, read as ``"actor_prompt"``).
        v_target_combine: how the V heads were trained (``DigiQCriticConfig.v_target_combine``,
            recorded by the trainer); :meth:`DigiQCritic.advantage` combines the Q heads the same way.
        text_encoder_config: the config (``to_dict()``) of a transformers encoder (BERT, RoBERTa,
            ...) that reads the critic's texts, trained with the heads; None: no text input.
        text_encoder_name: the Hub id its weights were initialized from (None: random init), for cards.
        text_layout: one of :data:`~digiq_trl.models.critic_text.TEXT_LAYOUTS`.
        text_pooling: one of :data:`TEXT_POOLINGS`.
        text_max_length: tokens per text (longer ones keep their end).
        text_match: also give the heads :data:`~digiq_trl.models.critic_text.MATCH_FEATURES`, a
            token-level comparison of the typed text (Q: the action's, V: the previous action's) with
            the goal in the encoder's embedding space (not in the reference).
    """

    model_type = "digiq_critic"

    q_input_dim: int = 4096
    v_input_dim: int = 4096
    hidden_size: int = 1024
    num_hidden_layers: int = 2
    hidden_act: str = "relu"
    dropout: float | int = 0.0
    initializer_range: float = 0.02
    backbone_model_id: str | None = None
    backbone_revision: str | None = None
    backbone_adapter: str | None = None
    backbone_weights_digest: str | None = None
    feature_layer: int | None = None
    feature_pooling: str | None = None
    prompt_template_id: str | None = PROMPT_TEMPLATE_ID
    feature_input: str | None = None
    v_target_combine: str = "min"
    text_encoder_config: dict | None = None
    text_encoder_name: str | None = None
    text_layout: str = "joint"
    text_pooling: str = "mean"
    text_max_length: int = 64
    text_match: bool = False

    def validate_architecture(self) -> None:
        """Reject sizes and settings that cannot build a critic (called by ``@strict``)."""
        super().validate_architecture()
        for name in ("q_input_dim", "v_input_dim", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_hidden_layers < 0:
            raise ValueError(f"num_hidden_layers must be >= 0, got {self.num_hidden_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.v_target_combine not in ("min", "independent"):
            raise ValueError(f"v_target_combine must be 'min' or 'independent', got {self.v_target_combine!r}")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACT2FN)}")
        if self.feature_input is not None and self.feature_input not in FEATURE_INPUTS:
            raise ValueError(f"feature_input must be one of {FEATURE_INPUTS}, got {self.feature_input!r}")
        if self.text_layout not in TEXT_LAYOUTS:
            raise ValueError(f"text_layout must be one of {TEXT_LAYOUTS}, got {self.text_layout!r}")
        if self.text_pooling not in TEXT_POOLINGS:
            raise ValueError(f"text_pooling must be one of {TEXT_POOLINGS}, got {self.text_pooling!r}")
        if self.text_max_length < 1:
            raise ValueError(f"text_max_length must be >= 1, got {self.text_max_length}")

    @property
    def has_text(self) -> bool:
        """Whether the heads read texts through a text encoder."""
        return self.text_encoder_config is not None

    @property
    def text_width(self) -> int:
        """Width of one encoded text (the encoder's hidden size), 0 without a text encoder."""
        return int(self.text_encoder_config["hidden_size"]) if self.has_text else 0

    def head_input_dims(self) -> tuple[int, int]:
        """Input widths of the Q and V heads (see the module docstring)."""
        if not self.has_text:
            return self.q_input_dim, self.v_input_dim
        match = len(MATCH_FEATURES) if self.text_match else 0
        q_text = num_segments(self.text_layout, with_action=True) * self.text_width + match
        v_text = num_segments(self.text_layout, with_action=False) * self.text_width + match
        return q_text + self.v_input_dim + self.q_input_dim, v_text + self.v_input_dim


def is_sibling_reference(name_or_path: str) -> bool:
    """Whether a recorded ``backbone_model_id`` is a path relative to the critic's own folder
    (``../representation``, as a pipeline run records it), which
    :meth:`~digiq_trl.models.features.VLMFeatureExtractor.for_critic` resolves against it."""
    return name_or_path.startswith(("./", "../"))


PROVENANCE_FIELDS: dict[str, str] = {
    "model_id": "backbone_model_id",
    "revision": "backbone_revision",
    "adapter": "backbone_adapter",
    "weights_digest": "backbone_weights_digest",
    "layer": "feature_layer",
    "pooling": "feature_pooling",
    "prompt_template_id": "prompt_template_id",
    "feature_input": "feature_input",
}
"""Keys of ``VLMFeatureExtractor.provenance`` -> the critic config fields that record them."""


@dataclass
class DigiQCriticOutput(ModelOutput):
    """Outputs of the online heads; each is ``(...,)``, the feature shape without its last axis."""

    q1: torch.Tensor | None = None
    q2: torch.Tensor | None = None
    v1: torch.Tensor | None = None
    v2: torch.Tensor | None = None


class DigiQValueHead(nn.Module):
    """An MLP from a feature vector to one scalar: ``input -> [hidden] * layers -> 1``."""

    def __init__(self, input_dim: int, config: DigiQCriticModelConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for _ in range(config.num_hidden_layers):
            layers += [
                nn.Linear(width, config.hidden_size),
                ACT2FN[config.hidden_act],
                nn.Dropout(config.dropout),
            ]
            width = config.hidden_size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(..., input_dim) -> (...)``."""
        return self.layers(features).squeeze(-1)


def _head_pair(input_dim: int, config: DigiQCriticModelConfig) -> nn.ModuleList:
    return nn.ModuleList([DigiQValueHead(input_dim, config) for _ in range(2)])


def build_text_encoder(config: dict[str, Any]) -> PreTrainedModel:
    """A randomly initialized transformers encoder from a config dict (``model_type`` and sizes)."""
    values = dict(config)
    return AutoModel.from_config(AutoConfig.for_model(values.pop("model_type"), **values))


def tiny_text_encoder_config(vocab_size: int, pad_token_id: int = 0, hidden_size: int = 64,
                             num_hidden_layers: int = 2, num_attention_heads: int = 2,
                             max_position_embeddings: int = 128) -> dict[str, Any]:
    """A small BERT config for the critic's text encoder, for a tokenizer of ``vocab_size`` tokens
    (the embedded default reuses the tiny VLM's tokenizer, so typed words and goal words share ids)."""
    return {
        "model_type": "bert", "vocab_size": vocab_size, "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers, "num_attention_heads": num_attention_heads,
        "intermediate_size": 2 * hidden_size, "max_position_embeddings": max_position_embeddings,
        "pad_token_id": pad_token_id, "type_vocab_size": 1,
    }


class DigiQCritic(PreTrainedModel):
    """Digi-Q critic: online Q1, Q2 (state-action) and V1, V2 (state) heads, an optional text
    encoder, and their Polyak targets.

    The target modules are registered (so ``save_pretrained`` writes them to the same safetensors
    file and training resumes exactly) and their parameters never require grad; they stay in eval
    mode (no dropout) whatever mode the model is in.

    Texts (``q_text``, ``v_text``) are the tensors of
    :func:`~digiq_trl.models.critic_text.critic_text_inputs`; they are needed exactly when the config
    has a ``text_encoder_config``.
    """

    config_class = DigiQCriticModelConfig
    base_model_prefix = "critic"
    main_input_name = "q_features"

    def __init__(self, config: DigiQCriticModelConfig) -> None:
        super().__init__(config)
        q_dim, v_dim = config.head_input_dims()
        self.q_heads = _head_pair(q_dim, config)
        self.v_heads = _head_pair(v_dim, config)
        self.target_q_heads = _head_pair(q_dim, config)
        self.target_v_heads = _head_pair(v_dim, config)
        self.text_encoder = build_text_encoder(config.text_encoder_config) if config.has_text else None
        self.target_text_encoder = copy.deepcopy(self.text_encoder) if config.has_text else None
        self.post_init()
        self.reset_targets()

    @classmethod
    def with_pretrained_text_encoder(cls, config: DigiQCriticModelConfig, name_or_path: str,
                                     **kwargs: Any) -> DigiQCritic:
        """A critic whose text encoder starts from a Hub encoder (e.g. ``"roberta-base"``, as the
        reference); ``config``'s text encoder fields are set from it.

        Args:
            config: the critic's config (sizes of the heads, feature widths, text layout...).
            name_or_path: Hub id or folder of the encoder (``AutoModel``).
            **kwargs: passed to ``AutoModel.from_pretrained`` (``revision``, ``dtype``...).
        """
        encoder = AutoModel.from_pretrained(name_or_path, **kwargs)
        config.text_encoder_config = encoder.config.to_diff_dict() | {"model_type": encoder.config.model_type}
        config.text_encoder_name = str(name_or_path)
        critic = cls(config)
        critic.text_encoder.load_state_dict(encoder.state_dict())
        critic.reset_targets()
        return critic

    def _init_weights(self, module: nn.Module) -> None:
        """Normal init of the heads' linear layers; a text encoder keeps its own initialization."""
        if isinstance(module, nn.Linear) and not _inside(module, self.text_encoder, self.target_text_encoder):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                module.bias.data.zero_()

    def _targets(self) -> tuple[nn.Module, ...]:
        return tuple(m for m in (self.target_q_heads, self.target_v_heads, self.target_text_encoder) if m is not None)

    def _online(self) -> tuple[nn.Module, ...]:
        return tuple(m for m in (self.q_heads, self.v_heads, self.text_encoder) if m is not None)

    def freeze_targets(self) -> None:
        """Make sure no target parameter requires grad and the targets are in eval mode."""
        for module in self._targets():
            module.requires_grad_(False)
            module.eval()

    @torch.no_grad()
    def reset_targets(self) -> None:
        """Copy the online modules into the target modules (``tau = 1``)."""
        self.update_targets(1.0)
        self.freeze_targets()

    @torch.no_grad()
    def update_targets(self, tau: float) -> None:
        """Polyak step of every target module: ``target <- (1 - tau) * target + tau * online``."""
        for target, online in zip(self._targets(), self._online()):
            polyak_update(target, online, tau)

    def train(self, mode: bool = True) -> DigiQCritic:
        """Set the online modules' mode; the targets always stay in eval mode."""
        super().train(mode)
        self.freeze_targets()
        return self

    def _cast(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(dtype=self.dtype)

    def encode_text(self, text: Text, target: bool = False) -> torch.Tensor:
        """``(..., S, L)`` token tensors -> ``(..., S * H)``: each text pooled, the S concatenated."""
        encoder = self.target_text_encoder if target else self.text_encoder
        ids, mask = text["input_ids"], text["attention_mask"]
        lead, (segments, length) = ids.shape[:-2], ids.shape[-2:]
        device = next(encoder.parameters()).device
        flat_ids, flat_mask = ids.reshape(-1, length).to(device), mask.reshape(-1, length).to(device)
        out = encoder(input_ids=flat_ids, attention_mask=flat_mask)
        if self.config.text_pooling == "pooler":
            pooled = out.pooler_output
        else:
            weights = flat_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        pooled = pooled.reshape(*lead, segments * pooled.shape[-1]).to(self.dtype)
        if self.config.text_match:
            pooled = torch.cat([pooled, self.match_features(text, target)], dim=-1)
        return pooled

    def match_features(self, text: Text, target: bool = False) -> torch.Tensor:
        """``(..., 4)`` :data:`~digiq_trl.models.critic_text.MATCH_FEATURES` of ``text["match_ids"]``
        (goal, typed text), from the tokens' cosine similarities in the encoder's embedding space."""
        encoder = self.target_text_encoder if target else self.text_encoder
        ids, mask = text["match_ids"], text["match_mask"]
        device = next(encoder.parameters()).device
        lead, length = ids.shape[:-2], ids.shape[-1]
        embedded = encoder.get_input_embeddings()(ids.reshape(-1, 2, length).to(device))
        unit = torch.nn.functional.normalize(embedded.float(), dim=-1)
        goal, typed = unit[:, 0], unit[:, 1]
        goal_mask, typed_mask = (mask.reshape(-1, 2, length).to(device) > 0).unbind(1)
        similarity = torch.einsum("btd,bgd->btg", typed, goal).masked_fill(~goal_mask[:, None, :], -1.0)
        best = similarity.max(dim=-1).values
        has_text = typed_mask & (ids.reshape(-1, 2, length)[:, 1].to(device) != self._pad_id)
        count = has_text.sum(-1)
        mean = (best * has_text).sum(-1) / count.clamp(min=1)
        least = best.masked_fill(~has_text, 2.0).min(-1).values.masked_fill(count == 0, 0.0)
        covered = similarity.masked_fill(~has_text[:, :, None], -1.0).max(dim=1).values
        coverage = (covered * goal_mask).sum(-1) / goal_mask.sum(-1).clamp(min=1)
        coverage = coverage.masked_fill(count == 0, 0.0)
        features = torch.stack([(count > 0).float(), mean, least, coverage], dim=-1)
        return features.reshape(*lead, len(MATCH_FEATURES)).to(self.dtype)

    @property
    def _pad_id(self) -> int:
        return int(self.config.text_encoder_config.get("pad_token_id") or 0)

    def _q_input(self, q_features: torch.Tensor, v_features: torch.Tensor | None, q_text: Text | None,
                 target: bool) -> torch.Tensor:
        if not self.config.has_text:
            return self._cast(q_features)
        if v_features is None or q_text is None:
            raise ValueError("this critic reads texts: pass v_features and q_text with q_features")
        text = self.encode_text(q_text, target)
        state = self._cast(v_features).expand(*q_features.shape[:-1], v_features.shape[-1])
        return torch.cat([text, state, self._cast(q_features)], dim=-1)

    def _v_input(self, v_features: torch.Tensor, v_text: Text | None, target: bool) -> torch.Tensor:
        if not self.config.has_text:
            return self._cast(v_features)
        if v_text is None:
            raise ValueError("this critic reads texts: pass v_text with v_features")
        return torch.cat([self.encode_text(v_text, target), self._cast(v_features)], dim=-1)

    def q_values(self, q_features: torch.Tensor, v_features: torch.Tensor | None = None,
                 q_text: Text | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Online ``(Q1, Q2)`` of state-action features ``(..., q_input_dim)`` (with a text encoder:
        also the state features ``(..., v_input_dim)``, broadcast over the actions, and the Q texts)."""
        inputs = self._q_input(q_features, v_features, q_text, target=False)
        return self.q_heads[0](inputs), self.q_heads[1](inputs)

    def v_values(self, v_features: torch.Tensor, v_text: Text | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Online ``(V1, V2)`` of state features ``(..., v_input_dim)`` (and the V texts)."""
        inputs = self._v_input(v_features, v_text, target=False)
        return self.v_heads[0](inputs), self.v_heads[1](inputs)

    @torch.no_grad()
    def target_q_values(self, q_features: torch.Tensor, v_features: torch.Tensor | None = None,
                        q_text: Text | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ``(Qbar1, Qbar2)``, without grad."""
        inputs = self._q_input(q_features, v_features, q_text, target=True)
        return self.target_q_heads[0](inputs), self.target_q_heads[1](inputs)

    @torch.no_grad()
    def target_v_values(self, v_features: torch.Tensor, v_text: Text | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ``(Vbar1, Vbar2)``, without grad."""
        inputs = self._v_input(v_features, v_text, target=True)
        return self.target_v_heads[0](inputs), self.target_v_heads[1](inputs)

    @torch.no_grad()
    def advantage(self, q_features: torch.Tensor, v_features: torch.Tensor, q_text: Text | None = None,
                  v_text: Text | None = None) -> torch.Tensor:
        """The advantage of :func:`digiq_trl.targets.advantage` from the online heads, without grad,
        combining the Q heads the way the V heads were trained (``config.v_target_combine``; the
        formula as text: :func:`digiq_trl.targets.advantage_formula`).

        ``v_features`` (and ``v_text``) broadcast against ``q_features``: for N candidates of one state
        pass ``q_features`` of shape ``(B, N, q_input_dim)``, ``q_text`` of ``(B, N, S, L)``,
        ``v_features`` of ``(B, 1, v_input_dim)`` and ``v_text`` of ``(B, 1, S, L)``.
        """
        q1, q2 = self.q_values(q_features, v_features, q_text)
        v1, v2 = self.v_values(v_features, v_text)
        return advantage(q1, q2, v1, v2, self.config.v_target_combine)

    def forward(
        self,
        q_features: torch.Tensor | None = None,
        v_features: torch.Tensor | None = None,
        q_text: Text | None = None,
        v_text: Text | None = None,
    ) -> DigiQCriticOutput:
        """Online heads on whichever inputs are given (training goes through here, for DDP)."""
        q1, q2 = self.q_values(q_features, v_features, q_text) if q_features is not None else (None, None)
        v1, v2 = self.v_values(v_features, v_text) if v_features is not None else (None, None)
        return DigiQCriticOutput(q1=q1, q2=q2, v1=v1, v2=v2)


def _inside(module: nn.Module, *containers: nn.Module | None) -> bool:
    """Whether ``module`` is one of the submodules of any of ``containers``."""
    return any(c is not None and any(module is m for m in c.modules()) for c in containers)


AutoConfig.register(DigiQCriticModelConfig.model_type, DigiQCriticModelConfig, exist_ok=True)
AutoModel.register(DigiQCriticModelConfig, DigiQCritic, exist_ok=True)
