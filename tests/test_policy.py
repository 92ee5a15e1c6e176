"""VLMPolicy: one action string per observation, N samples per observation, peft models too; the
prefix-shared decoding loop gives ``generate``'s answers for every Qwen-VL family, and ``generate``
takes over where transformers lacks what the loop reads."""

from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import DynamicCache, cache_utils

from digiq_trl.models.policy import VLMPolicy
from digiq_trl.models.tiny import tiny_llava, tiny_qwen2_vl, tiny_qwen_vl
from digiq_trl.models.vlm import PREFIX_SHARING_MODEL_TYPES, prefix_sharing_unavailable


def _observations() -> list[dict]:
    return [
        {"image": Image.new("RGB", (112, 224), "white"), "goal": "Open Settings", "history": ""},
        {"image": Image.new("RGB", (112, 224), "red"), "goal": "Search for hotels in Paris", "history": "home"},
        {"image": np.zeros((224, 112, 3), np.uint8), "goal": "Go to ebay.com", "history": "tap [0.5, 0.5]"},
    ]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return tiny_qwen2_vl()


@pytest.fixture(scope="module", params=PREFIX_SHARING_MODEL_TYPES)
def family(request):
    """A tiny model of each family the decoding loop serves (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)."""
    return tiny_qwen_vl(request.param)


def test_act_returns_one_string_per_observation_batched_like_single(tiny) -> None:
    policy = VLMPolicy(*tiny, max_new_tokens=12, batch_size=2)
    observations = _observations()
    actions = policy.act(observations, [{}] * 3)
    assert len(actions) == 3 and all(isinstance(a, str) for a in actions)
    assert actions == [policy.act([obs], [{}])[0] for obs in observations]
    assert policy.act([], []) == []


def test_sample_returns_num_candidates_diverse_strings_per_observation(family) -> None:
    policy = VLMPolicy(*family, max_new_tokens=12, batch_size=16)
    assert policy.prefix_sharing
    samples = policy.sample(_observations(), num_candidates=5, temperature=1.0)
    assert [len(s) for s in samples] == [5, 5, 5]
    assert all(isinstance(a, str) for s in samples for a in s)
    assert len(set(samples[0])) > 1
    with pytest.raises(ValueError):
        policy.sample(_observations(), num_candidates=2, temperature=0.0)


def test_generation_keeps_train_mode_and_works_for_peft(tiny) -> None:
    model, processor = tiny
    model.train()
    greedy = VLMPolicy(model, processor, max_new_tokens=8).act(_observations())
    assert model.training
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    try:
        policy = VLMPolicy(peft_model, processor, max_new_tokens=8)
        assert policy.act(_observations()) == greedy  # LoRA starts as the identity
        assert [len(s) for s in policy.sample(_observations()[:2], num_candidates=3)] == [3, 3]
    finally:
        peft_model.unload()


def test_act_works_for_llava() -> None:
    policy = VLMPolicy(*tiny_llava(), max_new_tokens=6)
    samples = policy.sample(_observations(), num_candidates=2)
    assert len(policy.act(_observations())) == 3 and [len(s) for s in samples] == [2, 2, 2]


def _greedy_copies(policy: VLMPolicy, observations: list[dict], n: int) -> list[list[str]]:
    return policy._generate(observations, n, temperature=0.0)


@pytest.mark.parametrize("lora", [False, True])
def test_prefix_shared_samples_continue_the_prompt_exactly(family, lora) -> None:
    # greedy decoding from the shared, expanded prompt cache must give every copy the answer that
    # plain generation gives (different history lengths make the batch left-padded)
    model, processor = family
    if lora:  # a non-identity adapter: the prefill has to go through the LoRA layers too
        model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    try:
        shared = VLMPolicy(model, processor, max_new_tokens=10, batch_size=12)
        plain = VLMPolicy(model, processor, max_new_tokens=10, prefix_sharing=False)
        assert shared.prefix_sharing and not plain.prefix_sharing
        expected = plain.act(_observations())
        assert _greedy_copies(shared, _observations(), 4) == [[a] * 4 for a in expected]
        assert plain.act(_observations()[:2]) == expected[:2]  # no state left behind in the model
    finally:
        if lora:
            model.unload()


def test_prefix_sharing_is_refused_where_it_is_not_wired() -> None:
    model, processor = tiny_llava()
    assert not VLMPolicy(model, processor).prefix_sharing
    with pytest.raises(ValueError, match="prefix sharing is wired for"):
        VLMPolicy(model, processor, prefix_sharing=True)


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(family) -> None:
    # make a token that greedy decoding emits mid-answer in some rows the stop token, so rows finish
    # at different steps and the shared decoder drops them from its batch and cache
    model, processor = family
    plain = VLMPolicy(model, processor, max_new_tokens=12, prefix_sharing=False)
    observations = _observations() * 3
    observations[4] = {**observations[4], "history": "tap [0.5, 0.5]; back; home"}
    inputs = plain._encode(observations)
    answers = plain._decode_with_generate(inputs, 1, 0.0)
    counts: dict[int, int] = {}
    for answer in answers:
        for token in set(answer[1:-1]):
            counts[token] = counts.get(token, 0) + 1
    stop = max(counts, key=lambda t: (0 < counts[t] < len(answers), counts[t]))
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop
    try:
        expected = plain.act(observations)
        shared = VLMPolicy(model, processor, max_new_tokens=12, batch_size=64)
        assert shared.act(observations) == expected
        assert _greedy_copies(shared, observations, 3) == [[a] * 3 for a in expected]
        lengths = {len(a) for a in expected}
        assert len(lengths) > 1  # some rows really stopped early
    finally:
        model.generation_config.eos_token_id = original


def test_missing_transformers_internals_fall_back_to_generate(tiny, monkeypatch, caplog) -> None:
    model, processor = tiny
    expected = VLMPolicy(model, processor, max_new_tokens=8, prefix_sharing=False).act(_observations())
    monkeypatch.setattr(DynamicCache, "batch_select_indices", None)  # as in a transformers without it
    with caplog.at_level("WARNING", logger="digiq_trl.models.vlm"):
        policy = VLMPolicy(model, processor, max_new_tokens=8)
    assert not policy.prefix_sharing and "DynamicCache.batch_select_indices" in caplog.text
    assert policy.act(_observations()) == expected
    with pytest.raises(ValueError, match="DynamicCache.batch_select_indices"):
        VLMPolicy(model, processor, prefix_sharing=True)


@pytest.mark.parametrize("internal", ["DynamicLayer", "rope_deltas", "forward(cache=...)", "get_rope_index"])
def test_every_internal_the_loop_reads_is_checked(tiny, monkeypatch, internal) -> None:
    model, processor = tiny
    if internal == "DynamicLayer":
        monkeypatch.delattr(cache_utils, "DynamicLayer")
    elif internal == "rope_deltas":
        monkeypatch.delattr(model.model, "rope_deltas")
    elif internal == "forward(cache=...)":  # a transformers whose KV cache argument has another name
        monkeypatch.setattr(type(model), "forward", lambda self, input_ids=None, past_key_values=None, **kwargs: None)
    else:
        monkeypatch.setattr(model.model, "get_rope_index", None)
    assert internal in prefix_sharing_unavailable(model)
    assert not VLMPolicy(model, processor).prefix_sharing


def test_a_prompt_forward_without_rope_deltas_falls_back_to_generate(tiny, monkeypatch, caplog) -> None:
    # a transformers that stops caching rope_deltas on the backbone: the loop cannot continue the
    # prompts' positions, so it hands the batch to generate (which then decodes every batch)
    model, processor = tiny
    forward = model.model.forward

    def forgetting_forward(*args, **kwargs):
        output = forward(*args, **kwargs)
        model.model.rope_deltas = None
        return output

    monkeypatch.setattr(model.model, "forward", forgetting_forward)
    expected = VLMPolicy(model, processor, max_new_tokens=8, prefix_sharing=False).act(_observations())
    policy = VLMPolicy(model, processor, max_new_tokens=8)
    assert policy.prefix_sharing
    with caplog.at_level("WARNING", logger="digiq_trl.models.policy"):
        assert policy.act(_observations()) == expected
    assert not policy.prefix_sharing and "rope_deltas" in caplog.text


def test_transformers_is_bounded_below_the_next_major_and_the_installed_one_fits() -> None:
    # the loop reads internals (see prefix_sharing_unavailable): a major release may move them all
    tomllib = pytest.importorskip("tomllib")
    import transformers
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = [Requirement(line) for line in pyproject["project"]["dependencies"]]
    specifier = next(r.specifier for r in requirements if r.name == "transformers")
    assert "6.0" not in specifier and "5.999" in specifier and transformers.__version__ in specifier
