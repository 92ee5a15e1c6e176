"""Digi-Q critic heads: double Q and double V MLPs on frozen VLM features, with target copies.

The critic never sees pixels or tokens: it reads features that a frozen VLM computed once and that
were cached as dataset columns (``digiq_trl.models.feature_cache``). Its config records which backbone,
revision, layer, pooling and prompt template produced them, so whoever downloads the critic can
rebuild identical features.

Example:
    >>> import torch
    >>> from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig
    >>> critic = DigiQCritic(DigiQCriticModelConfig(q_input_dim=8, v_input_dim=4, hidden_size=16))
    >>> critic.advantage(torch.randn(3, 8), torch.randn(3, 4)).shape
    torch.Size([3])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from ..prompts import PROMPT_TEMPLATE_ID
from ..targets import advantage, polyak_update


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
        v_target_combine: how the V heads were trained (``DigiQCriticConfig.v_target_combine``,
            recorded by the trainer); :meth:`DigiQCritic.advantage` combines the Q heads the same way.
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
    v_target_combine: str = "min"

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


class DigiQCritic(PreTrainedModel):
    """Digi-Q critic: online Q1, Q2 (state-action) and V1, V2 (state) heads plus Polyak targets.

    The target heads are registered modules (so ``save_pretrained`` writes them to the same
    safetensors file and training resumes exactly) whose parameters never require grad; they stay
    in eval mode (no dropout) whatever mode the model is in.
    """

    config_class = DigiQCriticModelConfig
    base_model_prefix = "critic"
    main_input_name = "q_features"

    def __init__(self, config: DigiQCriticModelConfig) -> None:
        super().__init__(config)
        self.q_heads = _head_pair(config.q_input_dim, config)
        self.v_heads = _head_pair(config.v_input_dim, config)
        self.target_q_heads = _head_pair(config.q_input_dim, config)
        self.target_v_heads = _head_pair(config.v_input_dim, config)
        self.post_init()
        self.reset_targets()

    def _targets(self) -> tuple[nn.ModuleList, nn.ModuleList]:
        return self.target_q_heads, self.target_v_heads

    def freeze_targets(self) -> None:
        """Make sure no target parameter requires grad and the targets are in eval mode."""
        for heads in self._targets():
            heads.requires_grad_(False)
            heads.eval()

    @torch.no_grad()
    def reset_targets(self) -> None:
        """Copy the online heads into the target heads (``tau = 1``)."""
        self.update_targets(1.0)
        self.freeze_targets()

    @torch.no_grad()
    def update_targets(self, tau: float) -> None:
        """Polyak step of both target pairs: ``target <- (1 - tau) * target + tau * online``."""
        polyak_update(self.target_q_heads, self.q_heads, tau)
        polyak_update(self.target_v_heads, self.v_heads, tau)

    def train(self, mode: bool = True) -> DigiQCritic:
        """Set the online heads' mode; the targets always stay in eval mode."""
        super().train(mode)
        self.freeze_targets()
        return self

    def _cast(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(dtype=self.dtype)

    def q_values(self, q_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Online ``(Q1, Q2)`` of state-action features ``(..., q_input_dim)``."""
        features = self._cast(q_features)
        return self.q_heads[0](features), self.q_heads[1](features)

    def v_values(self, v_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Online ``(V1, V2)`` of state features ``(..., v_input_dim)``."""
        features = self._cast(v_features)
        return self.v_heads[0](features), self.v_heads[1](features)

    @torch.no_grad()
    def target_q_values(self, q_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ``(Qbar1, Qbar2)``, without grad."""
        features = self._cast(q_features)
        return self.target_q_heads[0](features), self.target_q_heads[1](features)

    @torch.no_grad()
    def target_v_values(self, v_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ``(Vbar1, Vbar2)``, without grad."""
        features = self._cast(v_features)
        return self.target_v_heads[0](features), self.target_v_heads[1](features)

    @torch.no_grad()
    def advantage(self, q_features: torch.Tensor, v_features: torch.Tensor) -> torch.Tensor:
        """The advantage of :func:`digiq_trl.targets.advantage` from the online heads, without grad:
        ``max(Q1, Q2)(s, a) - max(V1, V2)(s)`` for V heads trained on independent targets, ``min(Q1,
        Q2)(s, a) - max(V1, V2)(s)`` for V heads trained on ``min(Qbar1, Qbar2)`` (the default).

        ``v_features`` broadcasts against ``q_features``: for N candidates of one state pass
        ``q_features`` of shape ``(B, N, q_input_dim)`` and ``v_features`` of ``(B, 1, v_input_dim)``.
        """
        q1, q2 = self.q_values(q_features)
        v1, v2 = self.v_values(v_features)
        return advantage(q1, q2, v1, v2, self.config.v_target_combine)

    def forward(
        self, q_features: torch.Tensor | None = None, v_features: torch.Tensor | None = None
    ) -> DigiQCriticOutput:
        """Online heads on whichever features are given (training goes through here, for DDP)."""
        q1, q2 = self.q_values(q_features) if q_features is not None else (None, None)
        v1, v2 = self.v_values(v_features) if v_features is not None else (None, None)
        return DigiQCriticOutput(q1=q1, q2=q2, v1=v1, v2=v2)


AutoConfig.register(DigiQCriticModelConfig.model_type, DigiQCriticModelConfig, exist_ok=True)
AutoModel.register(DigiQCriticModelConfig, DigiQCritic, exist_ok=True)
