"""Frozen-VLM features: prefix sharing equals full forwards, layers, LoRA, loading, caching.

The tiny models' hidden states are small (mean |h| ~ 0.01-0.03 at random init), so equality is
checked with ``rtol=1e-4, atol=1e-6``: a prefix-sharing bug such as dropping the M-RoPE
``rope_deltas`` gives errors near 6e-4 here and fails it.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from datasets import Dataset, List, Value, load_from_disk
from PIL import Image
from transformers import DynamicCache

from digiq_trl.actions import ActionType, DeviceAction, format_action
from digiq_trl.data import TransitionValidationError, transition_features
from digiq_trl.models.feature_cache import cache_features
from digiq_trl.models.features import VLMFeatureExtractor
from digiq_trl.models.tiny import tiny_llava, tiny_qwen2_vl, tiny_qwen_vl
from digiq_trl.prompts import build_messages, render_prompt


CLOSE = dict(rtol=1e-4, atol=1e-6)

GOALS = ["Open Settings", "Search for hotels in Paris"]
HISTORIES = ["", 'tap [0.1, 0.2]; type "hotels"']
ACTIONS = [
    [
        format_action(DeviceAction.tap(0.52, 0.31)),
        format_action(DeviceAction.type_text("hotels in paris near the station")),
        format_action(DeviceAction.press(ActionType.PRESS_BACK)),
    ],
    [
        format_action(DeviceAction.swipe((0.8, 0.5), (0.2, 0.5))),
        format_action(DeviceAction.press(ActionType.STATUS_TASK_COMPLETE)),
    ],
]


def _screens(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (224, 112, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def qwen():
    """A 4-layer tiny Qwen2-VL, so middle layers are not the (normed) last one."""
    return tiny_qwen2_vl(num_hidden_layers=4)


def _reference(model, processor, image, goal, history, action, layer, pooling):
    """Independent reference: the full conversation through the whole model, ``hidden_states``."""
    full = processor.apply_chat_template(build_messages(goal, history, action), tokenize=False)
    prompt = render_prompt(processor, goal, history)
    inputs = processor(text=[full], images=[image], return_tensors="pt")
    prompt_length = processor(text=[prompt], images=[image], return_tensors="pt")["input_ids"].shape[1]
    answer_length = len(processor.tokenizer(full[len(prompt):].rstrip(), add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states[layer][0]
    answer = hidden[prompt_length : prompt_length + answer_length]
    return hidden[prompt_length - 1], answer.mean(0) if pooling == "mean" else answer[-1]


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_prefix_sharing_equals_full_conversation_forward(qwen, pooling):
    model, processor = qwen
    extractor = VLMFeatureExtractor(model, processor, layer=2, pooling=pooling, candidate_batch_size=2)
    assert extractor.prefix_sharing
    images = _screens(2)
    states, actions = extractor.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    assert states.shape == (2, 128) and [a.shape for a in actions] == [(3, 128), (2, 128)]
    for i, state_actions in enumerate(ACTIONS):
        for j, action in enumerate(state_actions):
            ref_state, ref_action = _reference(
                model, processor, images[i], GOALS[i], HISTORIES[i], action, 2, pooling
            )
            torch.testing.assert_close(states[i], ref_state, **CLOSE)
            torch.testing.assert_close(actions[i][j], ref_action, **CLOSE)


def test_prefix_sharing_equals_naive_batched_forwards(qwen):
    model, processor = qwen
    images = _screens(2)
    shared = VLMFeatureExtractor(model, processor, layer=3)
    naive = VLMFeatureExtractor(model, processor, layer=3, prefix_sharing=False)
    s1, a1 = shared.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    s2, a2 = naive.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    torch.testing.assert_close(s1, s2, **CLOSE)
    for x, y in zip(a1, a2):
        torch.testing.assert_close(x, y, **CLOSE)


def test_answer_tokens_are_the_full_conversation_after_the_prompt(qwen):
    _, processor = qwen
    extractor = VLMFeatureExtractor(*qwen)
    tokenizer = processor.tokenizer
    action = ACTIONS[0][1]
    full = processor.apply_chat_template(build_messages(GOALS[1], HISTORIES[1], action), tokenize=False)
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(render_prompt(processor, GOALS[1], HISTORIES[1]), add_special_tokens=False)["input_ids"]
    answer = extractor.answer_ids(GOALS[1], HISTORIES[1], action)
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert full_ids[len(prompt_ids) : len(prompt_ids) + len(answer)] == answer
    assert tokenizer.convert_ids_to_tokens(answer[-1]) == "<|im_end|>"
    assert tokenizer.decode(full_ids[len(prompt_ids) + len(answer) :]).strip() == ""


def test_state_features_do_not_depend_on_the_candidates(qwen):
    extractor = VLMFeatureExtractor(*qwen)
    images = _screens(2)
    alone = extractor.state_features(images, GOALS, HISTORIES)
    with_a, _ = extractor.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    with_b, _ = extractor.state_action_features(images, GOALS, HISTORIES, [ACTIONS[1], ACTIONS[0][:1]])
    torch.testing.assert_close(with_a, with_b, rtol=0, atol=0)
    torch.testing.assert_close(alone, with_a, **CLOSE)


def test_layer_choice_changes_features_and_default_is_middle(qwen):
    model, processor = qwen
    images = _screens(1)
    assert VLMFeatureExtractor(model, processor).layer == 2
    assert VLMFeatureExtractor(model, processor, layer=-1).layer == 4
    assert VLMFeatureExtractor(model, processor, layer=-4).layer == 1
    one = VLMFeatureExtractor(model, processor, layer=1).action_features(images, GOALS[:1], [""], ACTIONS[:1])[0]
    two = VLMFeatureExtractor(model, processor, layer=2).action_features(images, GOALS[:1], [""], ACTIONS[:1])[0]
    assert (one - two).abs().max() > 1e-3


def test_model_is_left_as_found(qwen):
    model, processor = qwen
    model.train()
    VLMFeatureExtractor(model, processor, layer=1).action_features(_screens(1), GOALS[:1], [""], ACTIONS[:1])
    assert model.training and len(model.model.language_model.layers) == 4
    model.eval()


def test_bad_arguments_are_rejected(qwen):
    model, processor = qwen
    for layer in (0, 5, -5):
        with pytest.raises(ValueError, match="layer"):
            VLMFeatureExtractor(model, processor, layer=layer)
    with pytest.raises(ValueError, match="pooling"):
        VLMFeatureExtractor(model, processor, pooling="max")
    extractor = VLMFeatureExtractor(model, processor)
    with pytest.raises(ValueError, match="one entry per state"):
        extractor.state_features(_screens(1), GOALS, HISTORIES)
    with pytest.raises(ValueError, match="no actions"):
        extractor.action_features(_screens(1), GOALS[:1], [""], [[]])


def test_other_family_uses_full_forwards_and_matches_reference():
    model, processor = tiny_llava(num_hidden_layers=4)
    extractor = VLMFeatureExtractor(model, processor)
    assert not extractor.prefix_sharing
    with pytest.raises(ValueError, match="prefix sharing"):
        VLMFeatureExtractor(model, processor, prefix_sharing=True)
    image = _screens(1)[0]
    states, actions = extractor.state_action_features([image], GOALS[:1], [""], ACTIONS[:1])
    torch.testing.assert_close(extractor.state_features([image], GOALS[:1], [""]), states, **CLOSE)
    for j, action in enumerate(ACTIONS[0]):
        ref_state, ref_action = _reference(model, processor, image, GOALS[0], "", action, 2, "mean")
        torch.testing.assert_close(states[0], ref_state, **CLOSE)
        torch.testing.assert_close(actions[0][j], ref_action, **CLOSE)


def _lora(model):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(model, config)


def test_lora_wrapped_model_changes_features_and_still_matches_naive():
    base, processor = tiny_qwen2_vl(num_hidden_layers=4)
    images = _screens(2)
    before = VLMFeatureExtractor(base, processor).action_features(images, GOALS, HISTORIES, ACTIONS)
    peft_model = _lora(base)
    shared = VLMFeatureExtractor(peft_model, processor)
    naive = VLMFeatureExtractor(peft_model, processor, prefix_sharing=False)
    after = shared.action_features(images, GOALS, HISTORIES, ACTIONS)
    assert (after[0] - before[0]).abs().max() > 1e-4
    for x, y in zip(after, naive.action_features(images, GOALS, HISTORIES, ACTIONS)):
        torch.testing.assert_close(x, y, **CLOSE)


def test_from_pretrained_with_adapter_matches_in_memory(tmp_path):
    base, processor = tiny_qwen2_vl(num_hidden_layers=4)
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    peft_model = _lora(base)
    peft_model.save_pretrained(tmp_path / "adapter")
    images = _screens(2)
    in_memory = VLMFeatureExtractor(peft_model, processor, layer=3, pooling="last")
    loaded = VLMFeatureExtractor.from_pretrained(
        str(tmp_path / "base"), adapter=str(tmp_path / "adapter"), layer=3, pooling="last", dtype=torch.float32
    )
    s1, a1 = in_memory.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    s2, a2 = loaded.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    torch.testing.assert_close(s1, s2, **CLOSE)
    for x, y in zip(a1, a2):
        torch.testing.assert_close(x, y, **CLOSE)
    provenance = loaded.provenance
    assert provenance["model_id"] == str(tmp_path / "base")
    assert provenance["adapter"] == str(tmp_path / "adapter")
    assert (provenance["layer"], provenance["pooling"]) == (3, "last")
    assert provenance["prompt_template_id"] == "digiq-trl/act-v2"


def test_for_critic_rebuilds_the_recorded_backbone_and_refuses_other_weights(tmp_path):
    from digiq_trl.models.critic import DigiQCriticModelConfig

    base, processor = tiny_qwen2_vl(num_hidden_layers=4)
    for folder, model in (("base", base), ("other", tiny_qwen2_vl(num_hidden_layers=4, seed=1)[0])):
        model.save_pretrained(tmp_path / folder)
        processor.save_pretrained(tmp_path / folder)
    _lora(base).save_pretrained(tmp_path / "adapter")
    recorded = VLMFeatureExtractor.from_pretrained(
        str(tmp_path / "base"), adapter=str(tmp_path / "adapter"), layer=3, pooling="last").provenance
    config = DigiQCriticModelConfig(q_input_dim=128, v_input_dim=128, backbone_model_id=recorded["model_id"],
                                    backbone_adapter=recorded["adapter"], backbone_weights_digest=recorded["weights_digest"],
                                    feature_layer=3, feature_pooling="last")
    extractor = VLMFeatureExtractor.for_critic(config, device="cpu")
    assert {k: extractor.provenance[k] for k in ("model_id", "adapter", "weights_digest", "layer", "pooling")} == {
        k: recorded[k] for k in ("model_id", "adapter", "weights_digest", "layer", "pooling")}
    with pytest.raises(ValueError, match="weights digest"):
        VLMFeatureExtractor.for_critic(config, backbone=tmp_path / "other")
    with pytest.raises(ValueError, match="no backbone_model_id"):
        VLMFeatureExtractor.for_critic(DigiQCriticModelConfig(q_input_dim=128, v_input_dim=128))
    config.prompt_template_id = "someone-else/act-v9"
    with pytest.raises(ValueError, match="prompt template"):
        VLMFeatureExtractor.for_critic(config)


# ----------------------------------------------------------------------------- cache_features


def _transitions(with_candidates: bool = True) -> Dataset:
    """Two episodes (3 and 2 steps), valid under the transition schema, with candidate lists of
    different lengths (one empty)."""
    screens = _screens(5, seed=1)
    flat = [a for state in ACTIONS for a in state]
    rows = []
    for index, (episode, step, done) in enumerate(
        [("e0", 0, False), ("e0", 1, False), ("e0", 2, True), ("e1", 0, False), ("e1", 1, True)]
    ):
        rows.append(
            {
                "episode_id": episode, "step_id": step, "goal": GOALS[index % 2], "history": HISTORIES[index % 2],
                "image": screens[index], "next_image": screens[(index + 1) % 5], "action": flat[index],
                "reward": float(done and episode == "e0"), "done": done, "mc_return": float(episode == "e0") * 0.5 ** (2 - step),
                "trajectory_reward": float(episode == "e0"), "candidate_actions": flat[: index % 3],
            }
        )
    return Dataset.from_list(rows, features=transition_features(with_candidates=True))


def _column(ds: Dataset, name: str) -> np.ndarray:
    """A feature column as a ``[rows, D]`` array (stored float16; datasets' numpy format upcasts)."""
    return np.asarray(ds.select_columns([name]).with_format("numpy")[:][name])


class _Counting(VLMFeatureExtractor):
    """Counts state_action_features calls, to see whether the cache was used."""

    calls = 0

    def state_action_features(self, *args, **kwargs):
        type(self).calls += 1
        return super().state_action_features(*args, **kwargs)


@pytest.fixture()
def saved_transitions(tmp_path):
    """A file-backed transitions dataset (caches next to its Arrow files)."""
    _transitions().save_to_disk(str(tmp_path / "transitions"))
    return load_from_disk(str(tmp_path / "transitions"))


def test_cache_features_adds_float16_columns_with_right_values(qwen, saved_transitions):
    extractor = VLMFeatureExtractor(*qwen)
    ds = cache_features(saved_transitions, extractor, batch_size=2, alt_actions_column="candidate_actions")
    vector = List(Value("float16"), length=128)
    assert ds.features["v_features"] == vector and ds.features["q_features"] == vector
    assert ds.features["next_v_features"] == vector and ds.features["alt_q_features"] == List(vector)
    table = ds.select_columns(["v_features", "q_features", "next_v_features", "alt_q_features"]).with_format("numpy")
    row = ds[2]
    states, actions = extractor.state_action_features(
        [row["image"]], [row["goal"]], [row["history"]], [[row["action"], *row["candidate_actions"]]]
    )
    assert ds.data.schema.field("v_features").type.value_type == pa.float16()
    np.testing.assert_allclose(table[2]["v_features"], states[0].numpy(), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(table[2]["q_features"], actions[0][0].numpy(), rtol=1e-3, atol=1e-5)
    alternatives = np.stack(list(table[2]["alt_q_features"]))
    np.testing.assert_allclose(alternatives, actions[0][1:].numpy(), rtol=1e-3, atol=1e-5)
    assert [len(a) for a in ds["alt_q_features"]] == [len(c) for c in ds["candidate_actions"]]


def test_next_v_features_shift_within_episodes_with_zeros_at_done(qwen, saved_transitions):
    ds = cache_features(saved_transitions, VLMFeatureExtractor(*qwen), batch_size=2)
    v, following = _column(ds, "v_features"), _column(ds, "next_v_features")
    assert "alt_q_features" not in ds.column_names
    for i, done in enumerate(ds["done"]):
        expected = np.zeros_like(v[i]) if done else v[i + 1]
        np.testing.assert_array_equal(following[i], expected)
    assert np.abs(v).sum(axis=1).min() > 0


def test_cache_is_reused_and_a_changed_layer_recomputes(qwen, saved_transitions):
    model, processor = qwen
    _Counting.calls = 0
    first = cache_features(saved_transitions, _Counting(model, processor, layer=2), batch_size=2)
    assert _Counting.calls == 3
    again = cache_features(saved_transitions, _Counting(model, processor, layer=2), batch_size=2)
    assert _Counting.calls == 3
    np.testing.assert_array_equal(_column(again, "q_features"), _column(first, "q_features"))
    other = cache_features(saved_transitions, _Counting(model, processor, layer=1), batch_size=2)
    assert _Counting.calls == 6
    assert np.abs(_column(other, "q_features") - _column(first, "q_features")).max() > 1e-3


def test_in_memory_dataset_caches_in_cache_dir(qwen, tmp_path):
    model, processor = qwen
    _Counting.calls = 0
    first = cache_features(_transitions(), _Counting(model, processor), batch_size=5, cache_dir=str(tmp_path))
    again = cache_features(_transitions(), _Counting(model, processor), batch_size=5, cache_dir=str(tmp_path))
    assert _Counting.calls == 1
    np.testing.assert_array_equal(_column(again, "v_features"), _column(first, "v_features"))
    assert any(name.startswith("digiq-features-") for name in os.listdir(tmp_path))
    with_alternatives = cache_features(
        _transitions(), _Counting(model, processor), alt_actions_column="candidate_actions", cache_dir=str(tmp_path)
    )
    assert _Counting.calls == 2 and "alt_q_features" in with_alternatives.column_names


def test_cache_features_rejects_unsorted_rows_and_bad_columns(qwen):
    extractor = VLMFeatureExtractor(*qwen)
    with pytest.raises(TransitionValidationError, match="row"):
        cache_features(_transitions().select([1, 0, 2, 3, 4]), extractor)
    with pytest.raises(ValueError, match="alt_actions_column"):
        cache_features(_transitions(), extractor, alt_actions_column="nope")
    with pytest.raises(ValueError, match="list of strings"):
        cache_features(_transitions(), extractor, alt_actions_column="goal")


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def other_qwen(request):
    """A 4-layer tiny Qwen2.5-VL or Qwen3-VL (interleaved M-RoPE, DeepStack, 16-pixel patches)."""
    return tiny_qwen_vl(request.param, num_hidden_layers=4)


def test_other_qwen_families_share_prefixes_equal_to_the_full_conversation_forward(other_qwen):
    model, processor = other_qwen
    extractor = VLMFeatureExtractor(model, processor, layer=3, candidate_batch_size=2)
    naive = VLMFeatureExtractor(model, processor, layer=3, prefix_sharing=False)
    assert extractor.prefix_sharing
    images = _screens(2)
    states, actions = extractor.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    naive_states, naive_actions = naive.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    torch.testing.assert_close(states, naive_states, **CLOSE)
    for i, state_actions in enumerate(ACTIONS):
        torch.testing.assert_close(actions[i], naive_actions[i], **CLOSE)
        for j, action in enumerate(state_actions):
            ref_state, ref_action = _reference(model, processor, images[i], GOALS[i], HISTORIES[i], action, 3, "mean")
            torch.testing.assert_close(states[i], ref_state, **CLOSE)
            torch.testing.assert_close(actions[i][j], ref_action, **CLOSE)


def test_missing_transformers_internals_turn_prefix_sharing_off_with_equal_features(qwen, monkeypatch, caplog):
    model, processor = qwen
    images = _screens(1)
    shared = VLMFeatureExtractor(model, processor, layer=2).action_features(images, GOALS[:1], [""], ACTIONS[:1])
    monkeypatch.setattr(DynamicCache, "crop", None)  # as in a transformers without it
    with caplog.at_level("WARNING", logger="digiq_trl.models.vlm"):
        extractor = VLMFeatureExtractor(model, processor, layer=2)
    assert not extractor.prefix_sharing and "DynamicCache.crop" in caplog.text
    with pytest.raises(ValueError, match="DynamicCache.crop"):
        VLMFeatureExtractor(model, processor, prefix_sharing=True)
    generic = extractor.action_features(images, GOALS[:1], [""], ACTIONS[:1])
    torch.testing.assert_close(generic[0], shared[0], **CLOSE)


def test_weights_digest_follows_training(qwen):
    model, processor = qwen
    extractor = VLMFeatureExtractor(model, processor)
    before = extractor.provenance["weights_digest"]
    assert extractor.provenance["weights_digest"] == before
    weight = model.model.language_model.layers[0].mlp.down_proj.weight
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.mul_(1.01)
    try:
        assert extractor.provenance["weights_digest"] != before
    finally:
        with torch.no_grad():
            weight.copy_(saved)


def test_cache_features_with_two_processes_equals_one(qwen, tmp_path):
    # each map process gets its own copy of the model; the rows must come back in order, unchanged
    extractor = VLMFeatureExtractor(*qwen)
    one = cache_features(_transitions(), extractor, batch_size=2, alt_actions_column="candidate_actions",
                         cache_dir=str(tmp_path / "one"))
    two = cache_features(_transitions(), extractor, batch_size=2, alt_actions_column="candidate_actions",
                         cache_dir=str(tmp_path / "two"), num_proc=2)
    assert two["episode_id"] == one["episode_id"] and two["step_id"] == one["step_id"]
    for column in ("v_features", "q_features", "next_v_features"):
        np.testing.assert_array_equal(_column(two, column), _column(one, column))
    assert two["alt_q_features"] == one["alt_q_features"]


def test_actionability_features_read_the_marked_screen_whatever_the_batching(qwen):
    """The stage-1 input (the action drawn on the screenshot, the question): two taps on the same
    screen give different features; the same features come out one candidate at a time or batched
    (left padding); the state feature is the actor prompt's."""
    model, processor = qwen
    images = _screens(2)
    batched = VLMFeatureExtractor(model, processor, feature_input="actionability", candidate_batch_size=8)
    single = VLMFeatureExtractor(model, processor, feature_input="actionability", candidate_batch_size=1)
    states, per_state = batched.state_action_features(images, GOALS, HISTORIES, ACTIONS)
    assert [f.shape for f in per_state] == [(3, model.config.text_config.hidden_size), (2, model.config.text_config.hidden_size)]
    taps = batched.action_features(images[:1], GOALS[:1], [""], [[format_action(DeviceAction.tap(0.2, 0.2)),
                                                                  format_action(DeviceAction.tap(0.8, 0.8))]])[0]
    assert (taps[0] - taps[1]).abs().max() > 1e-4, "where the tap is drawn changes the feature"
    for one, many in zip(single.action_features(images, GOALS, HISTORIES, ACTIONS), per_state):
        torch.testing.assert_close(one, many, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(states, VLMFeatureExtractor(model, processor).state_features(images, GOALS, HISTORIES), **CLOSE)
    assert batched.provenance["feature_input"] == "actionability"
