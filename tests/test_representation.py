"""Representation fine-tuning: labels, drawing, the actionability dataset and a few training steps."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from PIL import Image

from digiq_trl.actions import ActionType, DeviceAction, format_action
from digiq_trl.prompts import ACTION_FORMAT
from digiq_trl.representation import (
    MARK_COLOR,
    NO,
    QUESTION,
    YES,
    SingleClassError,
    balance_indices,
    build_actionability_dataset,
    draw_action,
    label_stats,
    mark_radius,
    point_to_pixel,
    screen_change_mse,
    screen_changed,
)
from digiq_trl.trainers.representation_config import RepresentationConfig
from digiq_trl.trainers.representation_trainer import (
    RepresentationTrainer,
    actionability_metrics,
    train_representation,
    yes_no_margins,
    yes_no_token_ids,
)


SIZE = (56, 112)  # (width, height) of the crafted screenshots


def _screen(value: int | tuple[int, int, int]) -> Image.Image:
    color = (value, value, value) if isinstance(value, int) else value
    return Image.new("RGB", SIZE, color)


def _transitions(changed: list[bool], steps_per_episode: int = 4) -> Dataset:
    """Crafted transitions: black screens; a changed step's next screen is light grey."""
    rows = []
    for i, flag in enumerate(changed):
        action = DeviceAction.tap(0.2 + 0.6 * (i % 5) / 4, 0.5) if i % 3 else DeviceAction.press(ActionType.PRESS_BACK)
        rows.append(
            {
                "episode_id": f"ep{i // steps_per_episode}",
                "goal": "Open Settings",
                "history": "" if i % steps_per_episode == 0 else "tap [0.5, 0.5]",
                "image": _screen(0),
                "next_image": _screen(200 if flag else 0),
                "action": format_action(action),
            }
        )
    ds = Dataset.from_list(rows)
    return ds.cast_column("image", ImageFeature()).cast_column("next_image", ImageFeature())


def test_identical_screens_are_no_change():
    assert screen_change_mse(_screen(17), _screen(17)) == 0.0
    assert not screen_changed(_screen(17), _screen(17))


def test_big_change_is_a_change():
    assert screen_change_mse(_screen(0), _screen(255)) == pytest.approx(255.0**2)
    assert screen_changed(_screen(0), _screen(255))


def test_threshold_boundary_is_strict():
    before, after = _screen(0), _screen(5)  # every value differs by 5: MSE exactly 25
    assert screen_change_mse(before, after) == pytest.approx(25.0)
    assert not screen_changed(before, after, threshold=25.0)
    assert screen_changed(before, after, threshold=24.99)


def test_downscaling_averages_small_changes_away():
    before = _screen(0)
    after = before.copy()
    after.putpixel((10, 10), (255, 255, 255))
    assert screen_change_mse(before, after, downscale=4) < screen_change_mse(before, after, downscale=1)
    assert not screen_changed(before, after)


def test_tap_is_drawn_at_its_point():
    image = Image.new("RGB", (100, 200), (0, 0, 0))
    drawn = draw_action(image, DeviceAction.tap(0.25, 0.75))  # [y, x]
    x, y = point_to_pixel((0.25, 0.75), 100, 200)
    assert (x, y) == (75, 50)
    assert drawn.getpixel((75, 50)) == MARK_COLOR
    radius = mark_radius(100, 200)
    assert drawn.getpixel((75 + radius + 2, 50)) == (0, 0, 0)
    assert drawn.getpixel((10, 150)) == (0, 0, 0)
    assert image.getpixel((75, 50)) == (0, 0, 0), "the input image must not be modified"


def test_swipe_arrow_runs_from_touch_to_lift():
    image = Image.new("RGB", (100, 200), (0, 0, 0))
    drawn = draw_action(image, DeviceAction.swipe((0.8, 0.5), (0.2, 0.5)))
    assert drawn.getpixel((50, 160)) == MARK_COLOR  # touch point
    assert drawn.getpixel((50, 100)) == MARK_COLOR  # middle of the shaft
    assert drawn.getpixel((50, 41)) == MARK_COLOR  # next to the arrow tip at the lift point
    assert drawn.getpixel((50, 30)) == (0, 0, 0)  # beyond the tip
    assert drawn.getpixel((20, 100)) == (0, 0, 0)  # off the line


def test_actions_without_points_draw_nothing():
    image = Image.new("RGB", (100, 200), (9, 9, 9))
    drawn = draw_action(image, DeviceAction.type_text("milk"))
    assert drawn.tobytes() == image.tobytes()


def test_dataset_rows_are_prompt_completion_with_label():
    ds = build_actionability_dataset(_transitions([True, False, False, True]))
    assert ds.column_names == ["prompt", "completion", "images", "screen_changed", "pixel_mse", "episode_id"]
    assert ds["screen_changed"] == [True, False, False, True]
    answers = [row[0]["content"][0]["text"] for row in ds["completion"]]
    assert answers == [YES, NO, NO, YES]
    text = ds[1]["prompt"][0]["content"][1]["text"]
    assert text.startswith(f"Goal: Open Settings\nPrevious actions: tap [0.5, 0.5]\n{ACTION_FORMAT}\nNext action: ")
    assert "DUAL_POINT" in text and text.endswith(QUESTION)
    assert ds[1]["images"][0].getpixel(point_to_pixel((0.35, 0.5), *SIZE)) == MARK_COLOR


def test_all_one_class_is_refused():
    with pytest.raises(SingleClassError, match="all 4 actionability labels are 'No'"):
        build_actionability_dataset(_transitions([False] * 4))
    with pytest.raises(SingleClassError, match="'Yes'"):
        build_actionability_dataset(_transitions([True] * 4), threshold=10.0)


def test_balancing_downsamples_the_majority():
    changed = [True, False, False, False, False, True, False, False]
    ds = build_actionability_dataset(_transitions(changed), balance=True, seed=3)
    stats = label_stats(ds["screen_changed"])
    assert (stats["num_yes"], stats["num_no"], stats["majority_rate"]) == (2, 2, 0.5)
    indices = balance_indices(changed, seed=3)
    assert {0, 5} <= set(indices) and indices == sorted(indices)


def test_actionability_metrics():
    metrics = actionability_metrics(torch.tensor([2.0, -1.0, 0.5, -3.0]), [True, False, False, False])
    assert metrics["yes_no_accuracy"] == 0.75
    assert metrics["yes_no_balanced_accuracy"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert metrics["majority_rate"] == 0.75
    assert metrics["predicted_yes_rate"] == 0.5


@pytest.fixture(scope="module")
def tiny_vlm():
    from digiq_trl.models.tiny import tiny_qwen2_vl

    return tiny_qwen2_vl()


def _args(tmp_path, **kwargs) -> RepresentationConfig:
    defaults = {
        "output_dir": str(tmp_path), "max_steps": 3, "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4, "learning_rate": 1e-2, "lora_r": 4, "use_cpu": True, "bf16": False,
        "report_to": [], "save_strategy": "no", "logging_steps": 1, "seed": 0,
    }
    return RepresentationConfig(**{**defaults, **kwargs})


def test_answer_tokens_differ(tiny_vlm):
    yes_id, no_id = yes_no_token_ids(tiny_vlm[1])
    assert yes_id != no_id


def test_former_name_of_yes_no_token_ids_still_imports_with_a_warning(tiny_vlm):
    with pytest.warns(DeprecationWarning, match="yes_no_token_ids"):
        from digiq_trl.trainers.representation_trainer import answer_token_ids
    assert answer_token_ids(tiny_vlm[1]) == yes_no_token_ids(tiny_vlm[1])


def test_yes_no_margins_do_not_depend_on_padding(tiny_vlm):
    model, processor = tiny_vlm
    ds = build_actionability_dataset(_transitions([True, False, False, True, False, True]))
    lengths = {len(row[0]["content"][1]["text"]) for row in ds["prompt"]}
    assert len(lengths) > 1, "prompts of different lengths are needed to exercise the padding"
    one_by_one = yes_no_margins(model, processor, ds, batch_size=1)
    batched = yes_no_margins(model, processor, ds, batch_size=6)
    assert one_by_one.shape == (6,)
    assert torch.allclose(one_by_one, batched, atol=1e-5)


def test_lora_training_changes_adapters_and_freezes_base(tiny_vlm, tmp_path):
    model, processor = tiny_vlm
    ds = build_actionability_dataset(_transitions([True, False, False, True, False, True, False, False]))
    trainer = RepresentationTrainer(
        model, _args(tmp_path), train_dataset=ds, eval_dataset=ds, processing_class=processor
    )
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    lora = {n for n in before if "lora_" in n}
    assert lora, "LoRA adapters were not added"
    after = dict(trainer.model.named_parameters())
    assert all(after[n].requires_grad for n in lora)
    assert any(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)
    frozen = [n for n in before if n not in lora]
    assert frozen and not any(after[n].requires_grad for n in frozen)
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_yes_no_accuracy"] <= 1.0
    assert metrics["eval_majority_rate"] == 5 / 8


@pytest.mark.parametrize("merge", [True, False])
def test_saved_model_loads_in_feature_extractor(tiny_vlm, tmp_path, merge):
    from digiq_trl.models.features import VLMFeatureExtractor
    from digiq_trl.models.tiny import tiny_qwen2_vl

    model, processor = tiny_qwen2_vl()
    base_dir, out_dir = tmp_path / "base", tmp_path / "out"
    model.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)
    ds = build_actionability_dataset(_transitions([True, False, False, True]))
    trainer = RepresentationTrainer(
        model, _args(out_dir, max_steps=1, merge_adapter=merge), train_dataset=ds, processing_class=processor
    )
    trainer.train()
    trainer.save_representation()
    card = (out_dir / "README.md").read_text()
    assert "actionability" in card and "change_threshold" not in card and "30.0" in card
    assert ("adapter=" in card) != merge
    usage = card.split("## Usage", 1)[1].split("## Training", 1)[0]
    assert "None" not in usage and "in-memory" not in usage
    assert ("The base model has no Hub id: it was built in memory" in usage) != merge
    if merge:
        extractor = VLMFeatureExtractor.from_pretrained(str(out_dir), dtype=torch.float32)
    else:
        extractor = VLMFeatureExtractor.from_pretrained(str(base_dir), adapter=str(out_dir), dtype=torch.float32)
    expected = VLMFeatureExtractor(trainer.model, processor).state_features([_screen(0)], ["Open Settings"], [""])
    got = extractor.state_features([_screen(0)], ["Open Settings"], [""])
    untouched = VLMFeatureExtractor(*tiny_qwen2_vl()).state_features([_screen(0)], ["Open Settings"], [""])
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, untouched, atol=1e-5), "the fine-tuning did not reach the loaded model"


def test_train_representation_end_to_end(tmp_path):
    from digiq_trl.models.tiny import tiny_qwen2_vl

    model, processor = tiny_qwen2_vl()
    changed = [True, False, False, True, False, True, True, False]
    metrics = train_representation(
        model, processor, _transitions(changed), _args(tmp_path, max_steps=2, eval_fraction=0.5)
    )
    assert metrics["labels_num_examples"] == 8 and metrics["labels_num_yes"] == 4
    assert "eval_yes_no_accuracy" in metrics and "train_loss" in metrics
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "README.md").exists()
    card = (tmp_path / "README.md").read_text()
    assert f"| eval_yes_no_accuracy | {metrics['eval_yes_no_accuracy']:.4g} |" in card
