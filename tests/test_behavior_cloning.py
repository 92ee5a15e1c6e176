"""Behavior cloning: SFT conversion, action-only labels, and a few steps that lower the loss."""

import pytest
import torch
from datasets import Dataset
from PIL import Image
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from digiq_trl.actions import ActionType, DeviceAction, format_action, parse_action
from digiq_trl.data.schema import transition_features
from digiq_trl.models.tiny import tiny_qwen2_vl
from digiq_trl.prompts import build_messages
from digiq_trl.trainers.behavior_cloning import behavior_clone, transitions_to_sft


ACTIONS = [DeviceAction.tap(0.2, 0.3), DeviceAction.press(ActionType.PRESS_HOME), DeviceAction.type_text("milk")]
COLORS = ["red", "green", "blue"]


def _transitions(n: int = 12) -> Dataset:
    """Three screens, each with its own action: learnable in a few steps."""
    rows = []
    for i in range(n):
        image = Image.new("RGB", (112, 224), COLORS[i % 3])
        rows.append(
            {
                "episode_id": f"e{i}", "step_id": 0, "goal": "Search for milk", "history": "",
                "image": image, "next_image": image, "action": format_action(ACTIONS[i % 3]),
                "reward": 1.0, "done": True, "mc_return": 1.0, "trajectory_reward": 1.0,
            }
        )
    return Dataset.from_list(rows, features=transition_features())


def test_transitions_to_sft_builds_conversations() -> None:
    sft = transitions_to_sft(_transitions(3))
    assert sft.column_names == ["prompt", "completion", "images"]
    row = sft[1]
    assert row["prompt"] + row["completion"] == build_messages("Search for milk", "", format_action(ACTIONS[1]))
    assert len(row["images"]) == 1 and row["images"][0].getpixel((0, 0)) == (0, 128, 0)


def test_only_action_tokens_carry_labels() -> None:
    _, processor = tiny_qwen2_vl()
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    batch = collator([dict(r) for r in transitions_to_sft(_transitions(3))])
    assert "mm_token_type_ids" in batch and "image_grid_thw" in batch
    for i, labels in enumerate(batch["labels"]):
        labelled = labels[labels != -100]
        assert processor.tokenizer.decode(labelled).strip() == format_action(ACTIONS[i]) + "<|im_end|>"
        assert (batch["input_ids"][i][labels != -100] == labelled).all()


def _action_loss(model, processor, dataset: Dataset) -> float:
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    model.eval()
    with torch.no_grad():
        return model(**collator([dict(r) for r in transitions_to_sft(dataset)])).loss.item()


def test_behavior_clone_lowers_loss_and_saves(tmp_path) -> None:
    model, processor = tiny_qwen2_vl()
    data = _transitions()
    before = _action_loss(model, processor, data)
    trained = behavior_clone(model, processor, data, str(tmp_path), max_steps=12, batch_size=6)
    after = _action_loss(trained, processor, data)
    assert after < 0.7 * before
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "processor_config.json").exists()


def _first_step_labels(demos: Dataset) -> list[tuple[str, str]]:
    rows = demos.select_columns(["goal", "history", "action"])
    return sorted((r["goal"], r["action"]) for r in rows if not r["history"])


def test_expert_demonstrations_label_noisy_states_with_expert_actions() -> None:
    pytest.importorskip("digiq_trl.envs")
    from digiq_trl.trainers.behavior_cloning import expert_demonstrations

    clean = expert_demonstrations(num_episodes=4, noise=0.0, seed=3)
    noisy = expert_demonstrations(num_episodes=4, noise=1.0, seed=3)
    assert all(parse_action(a) for a in noisy["action"])
    assert _first_step_labels(noisy) == _first_step_labels(clean)  # same goals, expert labels
    assert set(noisy["history"]) - set(clean["history"])  # but random actions were taken
