"""Tiny offline VLMs: tokenizer, processor, save/reload and generation."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from digiq_trl.actions import ActionType, DeviceAction, format_action, parse_action
from digiq_trl.models.processing import Qwen2VLImageTextProcessor, load_processor
from digiq_trl.models.tiny import (
    IMAGE_TOKEN,
    QWEN_VL_MODEL_TYPES,
    SPECIAL_TOKENS,
    tiny_llava,
    tiny_qwen2_5_vl,
    tiny_qwen2_vl,
    tiny_qwen3_vl,
    tiny_qwen_vl,
    tiny_tokenizer,
)
from digiq_trl.prompts import build_messages, render_prompt


ACTIONS = [
    DeviceAction.tap(0.52, 0.31),
    DeviceAction.swipe((0.8, 0.5), (0.2, 0.5)),
    DeviceAction.type_text('hotels in "Paris" 2024'),
    DeviceAction.type_text("ünïcode ✓"),
    *(DeviceAction.press(t) for t in ActionType if t not in (ActionType.DUAL_POINT, ActionType.TYPE)),
]


def _screen(color: str = "white") -> Image.Image:
    return Image.new("RGB", (112, 224), color)


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.action_type.name)
def test_tokenizer_round_trips_action_strings(action: DeviceAction) -> None:
    tokenizer = tiny_tokenizer()
    text = format_action(action)
    decoded = tokenizer.decode(tokenizer(text)["input_ids"])
    assert decoded == text
    assert parse_action(decoded) == action


def test_tokenizer_has_special_tokens_and_splits_typed_words_like_goal_words() -> None:
    tokenizer = tiny_tokenizer()
    assert len(tokenizer) == 600
    for token in SPECIAL_TOKENS:
        assert len(tokenizer(token)["input_ids"]) == 1
    goal_tokens = tokenizer.tokenize("Search for hotels in Paris")
    typed_tokens = tokenizer.tokenize(format_action(DeviceAction.type_text("hotels in Paris")))
    copied = goal_tokens[goal_tokens.index("hotels") :]
    assert typed_tokens[-len(copied) - 1 : -1] == copied
    assert all(len(t) == 1 for t in tokenizer.tokenize("0123456789"))


def test_tap_is_short() -> None:
    tokenizer = tiny_tokenizer()
    assert len(tokenizer(format_action(DeviceAction.tap(0.52, 0.31)))["input_ids"]) <= 26
    assert len(tokenizer(format_action(DeviceAction.press(ActionType.PRESS_HOME)))["input_ids"]) <= 5


@pytest.mark.parametrize("model_type", QWEN_VL_MODEL_TYPES)
def test_qwen_vl_processor_image_token_count_matches_grid(model_type) -> None:
    model, processor = tiny_qwen_vl(model_type)
    assert model.config.model_type == model_type
    prompt = render_prompt(processor, "Open Settings", "")
    inputs = processor(images=[_screen()], text=[prompt], return_tensors="pt")
    n_image_tokens = (inputs["input_ids"] == processor.image_token_id).sum().item()
    assert n_image_tokens == 32
    assert n_image_tokens == inputs["image_grid_thw"].prod().item() // 4
    assert torch.equal(inputs["mm_token_type_ids"], (inputs["input_ids"] == model.config.image_token_id).int())


def test_chat_template_renders_prompt_and_answer() -> None:
    _, processor = tiny_qwen2_vl()
    action = format_action(DeviceAction.tap(0.5, 0.5))
    prompt = render_prompt(processor, "Open Settings", "back")
    full = processor.apply_chat_template(build_messages("Open Settings", "back", action), tokenize=False)
    assert prompt.count(IMAGE_TOKEN) == 1 and "Goal: Open Settings" in prompt
    assert full == prompt + action + "<|im_end|>\n"


@pytest.mark.parametrize("factory", [tiny_qwen2_vl, tiny_qwen2_5_vl, tiny_qwen3_vl, tiny_llava])
def test_save_reload_gives_equal_outputs_and_generates(factory, tmp_path) -> None:
    model, processor = factory()
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    reprocessor = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is type(model) and type(reprocessor) is type(processor)

    prompts = [render_prompt(processor, "Open Settings", ""), render_prompt(processor, "Search for milk", "home")]
    images = [_screen("white"), _screen("red")]
    inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    reinputs = reprocessor(images=images, text=prompts, return_tensors="pt", padding=True)
    assert inputs.keys() == reinputs.keys()
    assert all(torch.equal(inputs[k], reinputs[k]) for k in inputs)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reloaded(**reinputs).logits)
        out = reloaded.generate(**reinputs, max_new_tokens=4)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 4)


def test_models_are_tiny_and_sizes_overridable() -> None:
    model, _ = tiny_qwen2_vl()
    assert model.num_parameters() < 1_000_000
    assert model.config.text_config.rope_parameters["mrope_section"] == [8, 12, 12]
    bigger, _ = tiny_qwen2_vl(hidden_size=256, num_hidden_layers=3, num_attention_heads=4)
    assert bigger.config.text_config.num_hidden_layers == 3
    assert sum(bigger.config.text_config.rope_parameters["mrope_section"]) == 32
    with pytest.raises(ValueError, match="mrope_section"):
        tiny_qwen2_vl(mrope_section=(8, 8, 8))


def test_tiny_qwen3_vl_has_what_sets_qwen3_vl_apart() -> None:
    model, _ = tiny_qwen3_vl()
    text, vision = model.config.text_config, model.config.vision_config
    assert model.num_parameters() < 1_000_000
    assert text.rope_parameters["mrope_interleaved"] and text.rope_parameters["mrope_section"] == [12, 10, 10]
    assert text.head_dim == 64 and vision.patch_size == 16 and list(vision.deepstack_visual_indexes) == [0]
    with pytest.raises(ValueError, match="head_dim / 6"):
        tiny_qwen3_vl(mrope_section=(8, 12, 12))  # Qwen2-VL's split does not interleave into 32 pairs
    with pytest.raises(ValueError, match="model_type"):
        tiny_qwen_vl("qwen2_vl_moe")


@pytest.mark.parametrize(
    "model_type, processor_class",
    [("qwen2_vl", "Qwen2VLProcessor"), ("qwen2_5_vl", "Qwen2_5_VLProcessor"), ("qwen3_vl", "Qwen3VLProcessor")],
)
def test_load_processor_stands_in_for_qwen_vl_processors(tmp_path, model_type, processor_class) -> None:
    """A checkpoint saved by a stock Qwen-VL processor (which needs torchvision here) still loads."""
    _, processor = tiny_qwen_vl(model_type)
    processor.save_pretrained(tmp_path)
    config_path = tmp_path / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["processor_class"] = processor_class
    config_path.write_text(json.dumps(config))
    loaded = load_processor(str(tmp_path))
    assert isinstance(loaded, Qwen2VLImageTextProcessor)
    assert loaded.image_token_id == processor.image_token_id
    assert loaded.image_processor.patch_size == processor.image_processor.patch_size
