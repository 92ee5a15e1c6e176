"""DigiQCriticTrainer on a tiny chain MDP whose features encode the true state.

Chain of 5 cells, goal at the right end, 4 steps of budget; episodes start anywhere left of the
goal, so V(s_0) must learn that starting closer to the goal succeeds more often.
"""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig
from digiq_trl.trainers.critic_collator import DigiQCriticCollator
from digiq_trl.trainers.critic_config import DigiQCriticConfig
from digiq_trl.trainers.critic_trainer import DigiQCriticTrainer


CELLS, HORIZON = 5, 4
V_DIM, Q_DIM = CELLS + HORIZON, CELLS + HORIZON + 2


def _state(position: int, step: int) -> list[float]:
    return np.eye(CELLS)[position].tolist() + np.eye(HORIZON)[step].tolist()


def _state_action(position: int, step: int, action: int) -> list[float]:
    return _state(position, step) + np.eye(2)[action].tolist()


def _episode(rng: np.random.Generator, episode: int, forward_prob: float) -> list[dict]:
    position, rows = int(rng.integers(0, CELLS - 1)), []
    for step in range(HORIZON):
        action = 0 if rng.random() < forward_prob else 1
        next_position = min(position + 1, CELLS - 1) if action == 0 else max(position - 1, 0)
        reward = float(next_position == CELLS - 1)
        done = reward > 0 or step == HORIZON - 1
        rows.append({
            "episode_id": f"ep{episode}", "step_id": step, "reward": reward, "done": done,
            "q_features": _state_action(position, step, action),
            "v_features": _state(position, step),
            "next_v_features": [0.0] * V_DIM if done else _state(next_position, step + 1),
            "alt_q_features": [_state_action(position, step, 1 - action)],
        })
        position = next_position
        if done:
            break
    total = sum(row["reward"] for row in rows)
    for index, row in enumerate(rows):
        row["trajectory_reward"] = total
        row["mc_return"] = sum(0.95 ** k * r["reward"] for k, r in enumerate(rows[index:]))
    return rows


def chain_dataset(episodes: int, seed: int, forward_prob: float = 0.6) -> Dataset:
    rng = np.random.default_rng(seed)
    rows = [row for episode in range(episodes) for row in _episode(rng, episode, forward_prob)]
    return Dataset.from_list(rows)


def _critic(**overrides) -> DigiQCritic:
    torch.manual_seed(0)
    settings = dict(q_input_dim=Q_DIM, v_input_dim=V_DIM, hidden_size=32, initializer_range=0.2)
    return DigiQCritic(DigiQCriticModelConfig(**{**settings, **overrides}))


def _args(tmp_path: Path, name: str = "run", **overrides) -> DigiQCriticConfig:
    settings = dict(
        output_dir=str(tmp_path / name), per_device_train_batch_size=16, gradient_accumulation_steps=1,
        learning_rate=1e-2, max_grad_norm=1.0, max_steps=8, logging_steps=2, save_strategy="no",
        report_to=[], use_cpu=True, bf16=False, dataloader_num_workers=0, disable_tqdm=True, seed=7,
    )
    return DigiQCriticConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def train_ds() -> Dataset:
    return chain_dataset(60, seed=1)


def _train(tmp_path, train_ds, critic=None, resume=None, callbacks=None, **overrides) -> DigiQCriticTrainer:
    trainer = DigiQCriticTrainer(critic or _critic(), _args(tmp_path, **overrides),
                                 train_dataset=train_ds, callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module, atol: float = 0.0) -> None:
    state_b = b.state_dict()
    for name, tensor in a.state_dict().items():
        assert torch.allclose(tensor, state_b[name], atol=atol, rtol=0), name


def test_collator_stacks_and_pads_alternatives() -> None:
    collator = DigiQCriticCollator({"q_features": "q", "alt_q_features": "alt"})
    batch = collator([
        {"q": [1.0, 2.0], "alt": [[3.0, 4.0], [5.0, 6.0]], "reward": 1.0, "done": True, "step_id": 0},
        {"q": [0.0, 1.0], "alt": [], "reward": 0.0, "done": False, "step_id": 3},
    ])
    assert batch["q_features"].dtype == torch.float32 and batch["q_features"].shape == (2, 2)
    assert batch["alt_q_features"].shape == (2, 2, 2)
    assert batch["alt_mask"].tolist() == [[True, True], [False, False]]
    assert batch["done"].dtype == torch.bool and batch["step_id"].tolist() == [0, 3]


class _Snapshots(TrainerCallback):
    """Online weights after every optimizer step, and the targets before training."""

    def __init__(self) -> None:
        self.online: list[list[torch.Tensor]] = []
        self.initial_targets: list[torch.Tensor] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.initial_targets = [p.detach().clone() for p in _target_params(model)]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.online.append([p.detach().clone() for p in _online_params(model)])


def _online_params(model: DigiQCritic) -> list[torch.Tensor]:
    return [*model.q_heads.parameters(), *model.v_heads.parameters()]


def _target_params(model: DigiQCritic) -> list[torch.Tensor]:
    return [*model.target_q_heads.parameters(), *model.target_v_heads.parameters()]


@pytest.mark.parametrize("interval", [1, 2])
def test_target_update_once_per_optimizer_step_under_accumulation(tmp_path, train_ds, interval) -> None:
    snapshots = _Snapshots()
    trainer = _train(tmp_path, train_ds, callbacks=[snapshots], gradient_accumulation_steps=2,
                     max_steps=4, tau=0.3, target_update_interval=interval)
    assert len(snapshots.online) == 4
    expected = snapshots.initial_targets
    for step, online in enumerate(snapshots.online, start=1):
        if step % interval == 0:
            expected = [0.7 * t + 0.3 * o for t, o in zip(expected, online)]
    for want, got in zip(expected, _target_params(trainer.model)):
        assert torch.allclose(want, got, atol=1e-6)
    assert not torch.allclose(expected[0], snapshots.initial_targets[0])


def test_td_loss_falls_and_value_separates_success(tmp_path, train_ds) -> None:
    held_out = chain_dataset(80, seed=2)
    args = _args(tmp_path, max_steps=150, per_device_train_batch_size=64, learning_rate=3e-3, logging_steps=10)
    trainer = DigiQCriticTrainer(_critic(), args, train_dataset=train_ds, eval_dataset=held_out)
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    logs = [entry for entry in trainer.state.log_history if "td_error" in entry]
    assert logs[-1]["loss"] < 0.5 * logs[0]["loss"]
    assert {"q1", "q2", "v1", "v2", "target_q", "target_v"} <= logs[0].keys()
    assert after["eval_loss"] < before["eval_loss"]
    assert after["eval_v_mc_mse"] < before["eval_v_mc_mse"]
    assert after["eval_v0_auroc"] >= 0.75
    assert after["eval_ranking_accuracy"] >= 0.7


def test_mc_loss_type_needs_no_next_state(tmp_path, train_ds) -> None:
    trainer = _train(tmp_path, train_ds.remove_columns("next_v_features"), loss_type="mc", max_steps=40)
    logs = [entry for entry in trainer.state.log_history if "q_loss" in entry]
    assert logs[-1]["loss"] < logs[0]["loss"]


def test_same_seed_same_result_and_other_seed_differs(tmp_path, train_ds) -> None:
    first = _train(tmp_path, train_ds, name="a", critic=_critic(dropout=0.1)).model
    second = _train(tmp_path, train_ds, name="b", critic=_critic(dropout=0.1)).model
    _assert_same_state(first, second)
    other = _train(tmp_path, train_ds, name="c", critic=_critic(dropout=0.1), seed=8).model
    assert not torch.equal(first.q_heads[0].layers[0].weight, other.q_heads[0].layers[0].weight)


def test_resume_continues_exactly(tmp_path, train_ds) -> None:
    settings = dict(max_steps=6, gradient_accumulation_steps=2, tau=0.2)
    full = _train(tmp_path, train_ds, name="full", critic=_critic(dropout=0.1), save_strategy="steps",
                  save_steps=3, **settings)
    checkpoint = tmp_path / "full" / "checkpoint-3"
    assert (checkpoint / "model.safetensors").exists()
    resumed = _train(tmp_path, train_ds, name="resumed", resume=str(checkpoint),
                     critic=_critic(dropout=0.1, initializer_range=0.5), **settings)
    _assert_same_state(full.model, resumed.model, atol=1e-6)
    assert not torch.allclose(full.model.target_q_heads[0].layers[0].weight,
                              full.model.q_heads[0].layers[0].weight)


def test_wrong_feature_dimension_names_column_and_dims(tmp_path, train_ds) -> None:
    with pytest.raises(ValueError, match=r"'q_features' has dimension 11 .* config.q_input_dim is 12"):
        DigiQCriticTrainer(_critic(q_input_dim=12), _args(tmp_path), train_dataset=train_ds)
    with pytest.raises(ValueError, match=r"'next_v_features' has dimension 9 .*v_input_dim is 10"):
        DigiQCriticTrainer(_critic(v_input_dim=10), _args(tmp_path),
                           train_dataset=train_ds.remove_columns("v_features").add_column(
                               "v_features", [[0.0] * 10] * len(train_ds)))


def test_missing_columns_are_named(tmp_path, train_ds) -> None:
    with pytest.raises(ValueError, match=r"missing feature column\(s\) \['next_v_features'\].*cache_features"):
        DigiQCriticTrainer(_critic(), _args(tmp_path), train_dataset=train_ds.remove_columns("next_v_features"))
    with pytest.raises(ValueError, match=r"eval dataset is missing column\(s\) \['trajectory_reward'\]"):
        DigiQCriticTrainer(_critic(), _args(tmp_path), train_dataset=train_ds,
                           eval_dataset=train_ds.remove_columns("trajectory_reward"))


def test_save_model_writes_heads_config_and_card(tmp_path, train_ds) -> None:
    critic = _critic(backbone_model_id="org/tiny-vlm", backbone_revision="0123abc", feature_layer=2,
                     feature_pooling="mean")
    trainer = DigiQCriticTrainer(critic, _args(tmp_path, max_steps=4), train_dataset=train_ds,
                                 eval_dataset=chain_dataset(20, seed=3))
    trainer.train()
    trainer.evaluate()
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    card = (out / "README.md").read_text()
    assert "library_name: digiq-trl" in card and "eval_v0_auroc" in card
    assert "| `backbone_model_id` | `org/tiny-vlm` |" in card and "| `backbone_revision` | `0123abc` |" in card
    assert "VLMFeatureExtractor.for_critic(critic.config)" in card and "bai2025digiq" in card
    loaded = DigiQCritic.from_pretrained(out)
    _assert_same_state(trainer.model, loaded)
    assert loaded.config.v_target_combine == "min"  # how its V heads learned: the advantage follows it


def test_feature_extractor_caches_features_and_records_provenance(tmp_path, train_ds, monkeypatch) -> None:
    calls = []

    def fake_cache_features(dataset, extractor, batch_size=8, alt_actions_column=None):
        calls.append((extractor, batch_size, alt_actions_column))
        return train_ds.select(range(len(dataset)))

    module = types.ModuleType("digiq_trl.models.feature_cache")
    module.cache_features = fake_cache_features
    monkeypatch.setitem(sys.modules, "digiq_trl.models.feature_cache", module)
    extractor = types.SimpleNamespace(provenance={
        "model_id": "org/vlm", "revision": "r1", "adapter": None, "weights_digest": "d",
        "layer": 3, "pooling": "last", "prompt_template_id": "digiq-trl/act-v2"})
    raw = train_ds.select_columns(["episode_id", "step_id", "reward", "done", "mc_return",
                                   "trajectory_reward"]).add_column("candidate_actions", [["a"]] * len(train_ds))
    trainer = DigiQCriticTrainer(_critic(), _args(tmp_path, feature_batch_size=4), train_dataset=raw,
                                 eval_dataset=raw, feature_extractor=extractor)
    assert calls == [(extractor, 4, None), (extractor, 4, "candidate_actions")]
    assert trainer.model.config.backbone_model_id == "org/vlm"
    assert trainer.model.config.feature_layer == 3
    with pytest.raises(ValueError, match="backbone_model_id is 'other/vlm'"):
        DigiQCriticTrainer(_critic(backbone_model_id="other/vlm"), _args(tmp_path), train_dataset=raw,
                           feature_extractor=extractor)


def _raw_transitions() -> Dataset:
    """Two schema-valid episodes with screenshots and candidate actions (one state has none)."""
    from PIL import Image

    from digiq_trl.actions import ActionType, DeviceAction, format_action
    from digiq_trl.data import transition_features

    rng = np.random.default_rng(0)
    screens = [Image.fromarray(rng.integers(0, 256, (56, 28, 3), dtype=np.uint8)) for _ in range(5)]
    home, back = (format_action(DeviceAction(t)) for t in (ActionType.PRESS_HOME, ActionType.PRESS_BACK))
    layout = [("e0", 0, False), ("e0", 1, False), ("e0", 2, True), ("e1", 0, False), ("e1", 1, True)]
    rows = [{
        "episode_id": episode, "step_id": step, "goal": "Open Settings", "history": "",
        "image": screens[index], "next_image": screens[(index + 1) % 5], "action": home,
        "reward": float(done and episode == "e0"), "done": done, "mc_return": float(episode == "e0") * 0.5 ** (2 - step),
        "trajectory_reward": float(episode == "e0"), "candidate_actions": [back] * (index % 2),
    } for index, (episode, step, done) in enumerate(layout)]
    return Dataset.from_list(rows, features=transition_features(with_candidates=True))


def test_raw_transitions_with_a_real_extractor(tmp_path) -> None:
    from digiq_trl.models.features import VLMFeatureExtractor
    from digiq_trl.models.tiny import tiny_qwen2_vl

    extractor = VLMFeatureExtractor(*tiny_qwen2_vl(), model_id="tiny/qwen2-vl")
    dim = extractor.hidden_size
    critic = DigiQCritic(DigiQCriticModelConfig(q_input_dim=dim, v_input_dim=dim, hidden_size=8))
    raw = _raw_transitions()
    trainer = DigiQCriticTrainer(critic, _args(tmp_path, max_steps=2, per_device_train_batch_size=4),
                                 train_dataset=raw, eval_dataset=raw, feature_extractor=extractor)
    trainer.train()
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_ranking_accuracy"] <= 1.0
    assert metrics["eval_v0_auroc"] in (0.0, 0.5, 1.0)
    assert critic.config.backbone_model_id == "tiny/qwen2-vl"
    assert critic.config.feature_layer == extractor.layer
    with pytest.raises(ValueError, match=rf"dimension {dim} but the critic's config.q_input_dim is {dim + 1}"):
        DigiQCriticTrainer(DigiQCritic(DigiQCriticModelConfig(q_input_dim=dim + 1, v_input_dim=dim)),
                           _args(tmp_path), train_dataset=raw, feature_extractor=extractor)


def _mean_gap(critic: DigiQCritic, ds: Dataset) -> float:
    data = ds.with_format("torch")[:]
    with torch.no_grad():
        logged = torch.maximum(*critic.q_values(data["q_features"].float()))
        alternative = torch.maximum(*critic.q_values(data["alt_q_features"].float()[:, 0]))
    return float((alternative - logged).mean())


def test_conservative_weight_lowers_q_of_actions_the_data_did_not_take(tmp_path, train_ds) -> None:
    settings = dict(max_steps=60, learning_rate=3e-3)
    plain = _train(tmp_path, train_ds, name="plain", **settings).model
    conservative = _train(tmp_path, train_ds, name="cons", conservative_weight=5.0, **settings).model
    assert _mean_gap(conservative, train_ds) < _mean_gap(plain, train_ds) - 0.05


def test_conservative_weight_without_alternatives_is_a_clear_error(tmp_path, train_ds) -> None:
    with pytest.raises(ValueError, match="needs alternative actions"):
        _train(tmp_path, train_ds.remove_columns("alt_q_features"), conservative_weight=1.0)


def _card(folder: Path) -> str:
    return (folder / "README.md").read_text()


def test_cards_show_the_latest_evaluation_on_save_checkpoint_and_create(tmp_path, train_ds) -> None:
    held_out = chain_dataset(20, seed=3)
    args = _args(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=4, save_strategy="steps", save_steps=4)
    trainer = DigiQCriticTrainer(_critic(), args, train_dataset=train_ds, eval_dataset=held_out)
    trainer.save_model(str(tmp_path / "before"))
    assert "Not evaluated yet: call `trainer.evaluate()`" in _card(tmp_path / "before")
    trainer.train()
    checkpoint = _card(tmp_path / "run" / "checkpoint-4")  # evaluated at step 4, then checkpointed
    assert "| eval_v0_auroc |" in checkpoint and "eval_runtime" not in checkpoint
    final = trainer.evaluate(metric_key_prefix="test")
    trainer.save_model(str(tmp_path / "saved"))
    trainer.create_model_card(model_name="my-critic")
    for card in (_card(tmp_path / "saved"), _card(tmp_path / "run")):
        assert f"| test_loss | {final['test_loss']:.4g} |" in card and "| eval_v0_auroc |" in card
        assert "Not evaluated yet" not in card and "No evaluation was run" not in card
        assert "| epoch |" not in card and "_runtime |" not in card
    assert _card(tmp_path / "run").split("\n# ")[1].startswith("my-critic")


def test_a_card_without_eval_dataset_says_how_to_get_metrics(tmp_path, train_ds) -> None:
    trainer = _train(tmp_path, train_ds, max_steps=2)
    trainer.save_model()
    assert "No evaluation was run; pass an `eval_dataset`" in _card(tmp_path / "run")


def test_evaluate_before_train_still_reaches_the_card(tmp_path, train_ds) -> None:
    # train() starts a fresh TrainerState (log history), so the card also keeps what evaluate() returned
    trainer = DigiQCriticTrainer(_critic(), _args(tmp_path, max_steps=2), train_dataset=train_ds,
                                 eval_dataset=chain_dataset(20, seed=3))
    metrics = trainer.evaluate()
    trainer.train()
    trainer.save_model()
    assert f"| eval_loss | {metrics['eval_loss']:.4g} |" in _card(tmp_path / "run")


def test_tags_reach_the_model_and_the_card(tmp_path, train_ds) -> None:
    trainer = _train(tmp_path, train_ds, max_steps=1)
    assert set(DigiQCriticTrainer._tag_names) <= set(trainer.model.model_tags)
    trainer.create_model_card(tags=["my-tag"])
    header = _card(tmp_path / "run").split("---")[1]
    assert all(f"- {tag}\n" in header for tag in ["digiq-trl", "digiq", *DigiQCriticTrainer._tag_names, "my-tag"])


def test_windowed_metrics_are_means_over_the_logging_window(tmp_path, train_ds) -> None:
    seen = []

    class Spy(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs) -> None:
            seen.append(list(trainer._metrics["train"]["q_loss"]))

    trainer = DigiQCriticTrainer(_critic(), _args(tmp_path, max_steps=4, logging_steps=2), train_dataset=train_ds,
                                 callbacks=[Spy()])
    trainer.train()
    logged = [entry["q_loss"] for entry in trainer.state.log_history if "q_loss" in entry]
    assert logged == pytest.approx([np.mean(seen[1]), np.mean(seen[3])])
    assert len(seen[1]) == 2 and len(seen[3]) == 2  # the window was cleared after the first log
