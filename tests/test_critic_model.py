"""DigiQCritic: shapes, targets, Polyak steps, save/load round trips and Auto classes."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel

from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig
from digiq_trl.prompts import PROMPT_TEMPLATE_ID


def _critic(**overrides) -> DigiQCritic:
    settings = dict(q_input_dim=6, v_input_dim=4, hidden_size=8, num_hidden_layers=2)
    return DigiQCritic(DigiQCriticModelConfig(**{**settings, **overrides}))


def _perturb(module: torch.nn.Module, amount: float) -> None:
    with torch.no_grad():
        for param in module.parameters():
            param.add_(amount)


def test_shapes_and_broadcast_advantage() -> None:
    critic = _critic()
    q1, q2 = critic.q_values(torch.randn(5, 6))
    v1, v2 = critic.v_values(torch.randn(5, 4))
    assert q1.shape == q2.shape == v1.shape == v2.shape == (5,)
    candidates = critic.advantage(torch.randn(2, 3, 6), torch.randn(2, 1, 4))
    assert candidates.shape == (2, 3)
    out = critic(q_features=torch.randn(5, 6))
    assert out.q1.shape == (5,) and out.v1 is None


def test_advantage_matches_formula_and_half_precision_features() -> None:
    critic = _critic()
    q_feat, v_feat = torch.randn(4, 6), torch.randn(4, 4)
    q1, q2 = critic.q_values(q_feat)
    v1, v2 = critic.v_values(v_feat)
    assert critic.config.v_target_combine == "min"  # the trainer's default V target
    expected = torch.minimum(q1, q2) - torch.maximum(v1, v2)
    assert torch.allclose(critic.advantage(q_feat, v_feat), expected)
    critic.config.v_target_combine = "independent"  # the paper's max(Q1, Q2) - max(V1, V2)
    assert torch.allclose(critic.advantage(q_feat, v_feat), torch.maximum(q1, q2) - torch.maximum(v1, v2))
    assert critic.advantage(q_feat.half(), v_feat.half()).dtype == torch.float32


def test_targets_start_equal_frozen_and_in_eval_mode() -> None:
    critic = _critic(dropout=0.5)
    q_feat = torch.randn(3, 6)
    critic.eval()
    assert torch.equal(critic.q_values(q_feat)[0], critic.target_q_values(q_feat)[0])
    trainable = {name for name, p in critic.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("q_heads", "v_heads")) for name in trainable)
    critic.train()
    assert critic.q_heads.training and not critic.target_q_heads.training
    assert torch.equal(critic.target_q_values(q_feat)[0], critic.target_q_values(q_feat)[0])


def test_update_targets_moves_by_exactly_tau() -> None:
    critic = _critic()
    _perturb(critic.q_heads, 1.0)
    _perturb(critic.v_heads, -2.0)
    before_q = [p.clone() for p in critic.target_q_heads.parameters()]
    before_v = [p.clone() for p in critic.target_v_heads.parameters()]
    critic.update_targets(0.1)
    for old, new, online in zip(before_q, critic.target_q_heads.parameters(), critic.q_heads.parameters()):
        assert torch.allclose(new, old + 0.1 * (online - old), atol=1e-6)
        assert torch.allclose(new - old, torch.full_like(old, 0.1), atol=1e-6)
    for old, new in zip(before_v, critic.target_v_heads.parameters()):
        assert torch.allclose(new - old, torch.full_like(old, -0.2), atol=1e-6)


def test_save_load_round_trip_keeps_targets_and_provenance(tmp_path) -> None:
    critic = _critic(backbone_model_id="org/vlm", backbone_revision="abc123", feature_layer=4,
                     feature_pooling="mean")
    _perturb(critic.q_heads, 0.3)
    critic.update_targets(0.5)
    critic.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "digiq_critic"
    loaded = DigiQCritic.from_pretrained(tmp_path)
    for name, tensor in critic.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    q_feat, v_feat = torch.randn(4, 6), torch.randn(4, 4)
    critic.eval()
    assert torch.equal(critic.advantage(q_feat, v_feat), loaded.advantage(q_feat, v_feat))
    assert torch.equal(critic.target_q_values(q_feat)[1], loaded.target_q_values(q_feat)[1])
    assert loaded.config.backbone_revision == "abc123"
    assert loaded.config.prompt_template_id == PROMPT_TEMPLATE_ID
    assert not any(p.requires_grad for p in loaded.target_v_heads.parameters())


def test_auto_classes_load_the_critic(tmp_path) -> None:
    _critic().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DigiQCriticModelConfig)
    assert isinstance(AutoModel.from_pretrained(tmp_path), DigiQCritic)


@pytest.mark.parametrize(
    "bad", [dict(q_input_dim=0), dict(num_hidden_layers=-1), dict(dropout=1.0), dict(hidden_act="nope")]
)
def test_config_rejects_bad_sizes(bad: dict) -> None:
    with pytest.raises(Exception, match=next(iter(bad))):
        DigiQCriticModelConfig(**bad)


def test_linear_probe_heads() -> None:
    critic = _critic(num_hidden_layers=0)
    assert len(critic.q_heads[0].layers) == 1
    assert critic.v_values(torch.randn(2, 4))[0].shape == (2,)
