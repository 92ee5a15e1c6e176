"""BestOfNActorTrainer on tiny offline models: selection, loss masking, LoRA, saving, baselines."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, List, Value
from peft import PeftModel
from PIL import Image as PILImage

from digiq_trl.actions import ActionType, DeviceAction, format_action, parse_action
from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig
from digiq_trl.models.tiny import tiny_qwen2_vl
from digiq_trl.prompts import answer_token_ids
from digiq_trl.trainers.actor_collator import BestOfNCollator, weighted_nll
from digiq_trl.trainers.actor_config import BestOfNActorConfig
from digiq_trl.trainers.actor_trainer import BestOfNActorTrainer
from digiq_trl.trainers.preparation_cache import PREPARATION_CACHE_DIR


FEATURES = Features(
    {
        "image": Image(),
        "goal": Value("string"),
        "history": Value("string"),
        "action": Value("string"),
        "trajectory_reward": Value("float32"),
        "candidate_actions": List(Value("string")),
    }
)


def tap(y: float) -> str:
    return format_action(DeviceAction.tap(y, 0.5))


def transitions(actions, candidates, rewards=None) -> Dataset:
    rng = np.random.default_rng(0)
    n = len(actions)
    return Dataset.from_dict(
        {
            "image": [PILImage.fromarray(rng.integers(0, 255, (224, 112, 3), dtype=np.uint8)) for _ in range(n)],
            "goal": ["Open Settings"] * n,
            "history": ["", "tap [0.1, 0.2]"] * (n // 2) + [""] * (n % 2),
            "action": actions,
            "trajectory_reward": rewards if rewards is not None else [1.0] * n,
            "candidate_actions": candidates,
        },
        features=FEATURES,
    )


class TouchYExtractor:
    """Stand-in feature extractor: a tap's feature is its touch y, so the critic below gives A = y."""

    def state_action_features(self, images, goals, histories, actions):
        per_state = [torch.tensor([[parse_action(a).touch_point[0], 0.0] for a in acts]) for acts in actions]
        return torch.zeros(len(images), 2), per_state


def linear_critic() -> DigiQCritic:
    """Q1 = Q2 = feature[0], V1 = V2 = 0: the advantage of a tap is its touch y."""
    critic = DigiQCritic(DigiQCriticModelConfig(q_input_dim=2, v_input_dim=2, hidden_size=4, num_hidden_layers=0))
    with torch.no_grad():
        for head in critic.q_heads:
            head.layers[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
            head.layers[0].bias.zero_()
        for head in critic.v_heads:
            head.layers[0].weight.zero_()
            head.layers[0].bias.zero_()
    return critic


def config(tmp_path, **kwargs) -> BestOfNActorConfig:
    defaults = dict(
        candidate_source="dataset", max_steps=2, per_device_train_batch_size=2, report_to=[], use_cpu=True,
        logging_steps=1, save_strategy="no", max_completion_length=24, num_candidates=3, anchor="none",
    )
    return BestOfNActorConfig(str(tmp_path / "out"), **{**defaults, **kwargs})


def make_trainer(tmp_path, dataset, **kwargs) -> BestOfNActorTrainer:
    model, processor = tiny_qwen2_vl()
    critic_kwargs = {}
    if kwargs.get("weighting", "threshold") in ("threshold", "awr", "pg"):
        critic_kwargs = dict(critic=linear_critic(), feature_extractor=TouchYExtractor())
    return BestOfNActorTrainer(
        model, args=config(tmp_path, **kwargs), train_dataset=dataset, processing_class=processor, **critic_kwargs
    )


def test_chosen_action_is_argmax_advantage(tmp_path):
    dataset = transitions(
        [tap(0.2), tap(0.05), tap(0.9)],
        [[tap(0.7), tap(0.4)], [tap(0.08), "not an action"], [tap(0.3)]],
    )
    trainer = make_trainer(tmp_path, dataset, advantage_threshold=0.1)
    prepared = trainer.prepared_dataset
    assert prepared["chosen_action"] == [tap(0.7), tap(0.08), tap(0.9)]
    assert prepared["chosen_advantage"] == pytest.approx([0.7, 0.08, 0.9])
    assert prepared["logged_advantage"] == pytest.approx([0.2, 0.05, 0.9])
    assert prepared["chosen_is_logged"] == [False, False, True]
    assert prepared["candidate_advantages"][1] == pytest.approx([0.05, 0.08, 0.0])
    assert prepared["weight"] == [1.0, 0.0, 1.0]
    assert len(trainer.train_dataset) == 2  # the state below the threshold is dropped
    stats = trainer.preparation_metrics
    assert stats["frac_invalid_candidates"] == pytest.approx(1 / 5)  # over the 5 proposals
    assert stats["frac_chosen_is_logged"] == pytest.approx(1 / 3)
    assert stats["frac_above_threshold"] == pytest.approx(2 / 3)


def test_logged_action_excluded_when_asked(tmp_path):
    dataset = transitions([tap(0.9), tap(0.1)], [[tap(0.3)], [tap(0.5)]])
    trainer = make_trainer(tmp_path, dataset, include_logged_action=False, advantage_threshold=0.0)
    assert trainer.prepared_dataset["chosen_action"] == [tap(0.3), tap(0.5)]
    assert trainer.prepared_dataset["logged_advantage"] == pytest.approx([0.9, 0.1])


def test_all_invalid_candidates_do_not_crash(tmp_path):
    dataset = transitions(["garbage", tap(0.6)], [["also garbage", "nope"], [tap(0.2)]])
    trainer = make_trainer(tmp_path, dataset, weighting="awr")
    row = trainer.prepared_dataset[0]
    assert row["candidate_advantages"] == [0.0, 0.0, 0.0]
    assert row["chosen_advantage"] == 0.0 and not row["chosen_is_valid"] and row["weight"] == 0.0
    assert row["num_invalid_proposals"] == 2
    assert trainer.train_dataset["target_action"] == [tap(0.6)]
    trainer.train()


def test_nothing_to_imitate_raises_a_clear_error(tmp_path):
    dataset = transitions([tap(0.05)], [[tap(0.01)]])
    with pytest.raises(ValueError, match="advantage_threshold"):
        make_trainer(tmp_path, dataset, advantage_threshold=0.1)


def test_baselines_need_no_critic(tmp_path):
    dataset = transitions([tap(0.2), tap(0.3), tap(0.4)], [[], [], []], rewards=[1.0, 0.0, 1.0])
    filtered = make_trainer(tmp_path, dataset, weighting="filtered_bc")
    assert filtered.critic is None and filtered.feature_extractor is None
    assert filtered.train_dataset["target_action"] == [tap(0.2), tap(0.4)]
    sft = make_trainer(tmp_path, dataset, weighting="sft")
    assert sft.train_dataset["target_action"] == [tap(0.2), tap(0.3), tap(0.4)]
    with pytest.raises(ValueError, match="needs a critic"):
        BestOfNActorTrainer(tiny_qwen2_vl()[0], args=config(tmp_path), train_dataset=dataset,
                            processing_class=tiny_qwen2_vl()[1])


def test_policy_candidates_come_from_one_prefill_per_batch(tmp_path):
    model, processor = tiny_qwen2_vl()
    prompts = []
    forward = model.forward

    def counting_forward(*args, **kwargs):
        if kwargs.get("pixel_values") is not None:  # a prompt (screenshot included) runs
            prompts.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    model.forward = counting_forward
    dataset = transitions([tap(0.2)] * 5, [[]] * 5)
    trainer = BestOfNActorTrainer(
        model, critic=linear_critic(), feature_extractor=TouchYExtractor(), train_dataset=dataset,
        processing_class=processor, args=config(tmp_path, candidate_source="policy", candidate_batch_size=4,
                                                num_candidates=3, advantage_threshold=0.0),
    )
    # one prompt forward per map batch of states; the N samples of each state continue its prompt
    # from one shared KV cache (VLMPolicy prefix sharing)
    assert prompts == [4, 1]
    assert trainer.prepared_dataset["num_proposals"] == [3] * 5
    assert 0.0 <= trainer.preparation_metrics["generation_time_share"] <= 1.0


def test_logged_anchor_keeps_every_state(tmp_path):
    dataset = transitions(
        [tap(0.2), tap(0.05), tap(0.9)], [[tap(0.7), tap(0.4)], [tap(0.08), "not an action"], [tap(0.3)]]
    )
    trainer = make_trainer(tmp_path, dataset, advantage_threshold=0.1, anchor="logged")
    prepared = trainer.prepared_dataset
    assert prepared["weight"] == [1.0, 0.0, 1.0]
    assert prepared["target_action"] == [tap(0.7), tap(0.05), tap(0.9)]
    assert prepared["target_weight"] == [1.0, 1.0, 1.0]
    assert trainer.train_dataset["target_action"] == prepared["target_action"]
    assert trainer.preparation_metrics["frac_imitated"] == pytest.approx(2 / 3)
    assert trainer.preparation_metrics["frac_anchored"] == pytest.approx(1 / 3)
    # anchor_weight 0: the state stays in the batch mean with no gradient of its own (the reference)
    kept = make_trainer(tmp_path, dataset, advantage_threshold=0.1, anchor="logged", anchor_weight=0.0)
    assert kept.train_dataset["target_weight"] == [1.0, 0.0, 1.0]


def test_greedy_anchor_is_the_starting_policys_greedy_action(tmp_path):
    from digiq_trl.models.policy import VLMPolicy

    model, processor = tiny_qwen2_vl()
    dataset = transitions([tap(0.2), tap(0.05), tap(0.3)], [[], [], []], rewards=[1.0, 0.0, 0.0])
    expected = VLMPolicy(model, processor, max_new_tokens=24).act(
        [{"image": r["image"], "goal": r["goal"], "history": r["history"]} for r in dataset]
    )
    trainer = BestOfNActorTrainer(model, args=config(tmp_path, weighting="filtered_bc", anchor="greedy"),
                                  train_dataset=dataset, processing_class=processor)
    assert trainer.prepared_dataset["base_action"] == expected  # greedy, not sampled at `temperature`


def test_greedy_anchor_is_a_candidate_and_the_fallback(tmp_path, monkeypatch):
    from digiq_trl.models.policy import VLMPolicy

    greedy = tap(0.01)  # A = 0.01: never above the threshold, so it only serves as the anchor
    monkeypatch.setattr(VLMPolicy, "act", lambda self, observations, infos=None: [greedy] * len(observations))
    dataset = transitions([tap(0.2), tap(0.05)], [[tap(0.7)], [tap(0.08)]], rewards=[0.0, 1.0])
    trainer = make_trainer(tmp_path, dataset, advantage_threshold=0.1, anchor="greedy")
    prepared = trainer.prepared_dataset
    assert prepared["base_action"] == [greedy, greedy]
    assert [greedy in c for c in prepared["candidates"]] == [True, True]
    assert prepared["target_action"] == [tap(0.7), greedy]
    # the baselines take the same anchor: filtered BC imitates the successful step, the greedy one elsewhere
    filtered = make_trainer(tmp_path, dataset, weighting="filtered_bc", anchor="greedy")
    assert filtered.prepared_dataset["target_action"] == [greedy, tap(0.05)]
    assert filtered.prepared_dataset["target_weight"] == [1.0, 1.0]


def test_collator_labels_only_the_answer(tmp_path):
    _, processor = tiny_qwen2_vl()
    dataset = transitions([tap(0.2), tap(0.35)], [[], []])
    rows = [dict(row, target_action=row["action"], target_weight=1.0) for row in dataset]
    batch = BestOfNCollator(processor)(rows)
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for row, labels, ids in zip(rows, batch["labels"], batch["input_ids"]):
        labelled = labels[labels != -100]
        assert tokenizer.decode(labelled) == row["action"] + "<|im_end|>"
        assert (ids[labels != -100] == labelled).all()
        assert not (labels == image_id).any()
        start = int((labels != -100).nonzero()[0])
        assert tokenizer.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    assert (batch["mm_token_type_ids"][batch["labels"] != -100] == 0).all()
    assert batch["pixel_values"].shape[0] > 0 and batch["weights"].tolist() == [1.0, 1.0]


def test_prompt_positions_do_not_enter_the_loss():
    torch.manual_seed(0)
    labels = torch.tensor([[-100, -100, -100, 5, 6, -100], [-100, -100, 7, 8, 9, 2]])
    logits = torch.randn(2, 6, 12, requires_grad=True)
    weights = torch.tensor([1.0, 0.5])
    loss = weighted_nll(logits, labels, weights)
    loss.backward()
    predicts_label = torch.zeros(2, 6, dtype=torch.bool)
    predicts_label[:, :-1] = labels[:, 1:] != -100
    assert logits.grad[~predicts_label].abs().max() == 0
    assert logits.grad[predicts_label].abs().sum(-1).min() > 0
    perturbed = logits.detach().clone()
    perturbed[~predicts_label] = torch.randn_like(perturbed[~predicts_label]) * 10
    assert weighted_nll(perturbed, labels, weights) == pytest.approx(loss.item())
    expected = (1.0 * _nll(logits, 0, [2, 3]) + 0.5 * _nll(logits, 1, [1, 2, 3, 4])) / 6
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def _nll(logits, row, positions):
    labels = {0: [None, None, None, 5, 6, None], 1: [None, None, 7, 8, 9, 2]}[row]
    logp = torch.log_softmax(logits.detach()[row], dim=-1)
    return float(-sum(logp[t, labels[t + 1]] for t in positions))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_lora_changes_and_base_stays(tmp_path, checkpointing):
    dataset = transitions([tap(0.6), tap(0.7)], [[], []])
    trainer = make_trainer(tmp_path, dataset, max_steps=3, learning_rate=1e-2, activation_checkpointing=checkpointing)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert lora and all(after[n].requires_grad for n in lora)
    assert any(not torch.equal(before[n], after[n]) for n in lora if "lora_B" in n)
    base = [n for n in before if "lora_" not in n]
    assert all(torch.equal(before[n], after[n]) and not after[n].requires_grad for n in base)
    assert "best_of_n/chosen_advantage" in trainer.state.log_history[0]


def test_adapter_save_and_reload_gives_equal_outputs(tmp_path):
    dataset = transitions([tap(0.6), tap(0.7)], [[], []])
    trainer = make_trainer(tmp_path, dataset, max_steps=2, learning_rate=1e-2)
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    card = (out / "README.md").read_text()
    assert "Best-of-N" in card and "base model: `" in card and "critic: `" in card and "data: `" in card
    assert "weighting: `threshold`" in card
    _, processor = tiny_qwen2_vl()
    rows = [dict(row, target_action=row["action"], target_weight=1.0) for row in dataset]
    batch = BestOfNCollator(processor)(rows)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights")}
    trainer.model.eval()
    with torch.no_grad():
        trained = trainer.model(**inputs).logits
        reloaded = PeftModel.from_pretrained(tiny_qwen2_vl()[0], str(out)).eval()(**inputs).logits
        base = tiny_qwen2_vl()[0].eval()(**inputs).logits
    assert torch.allclose(trained, reloaded, atol=1e-6)
    assert not torch.allclose(trained, base, atol=1e-4)


def test_the_loss_needs_logits_of_the_answer_columns_only(tmp_path):
    # left padding puts every answer at the end, so the logits kept do not grow with the prompt
    # (a long history here, a screenshot of thousands of tokens with a real VLM) and the loss is the
    # one computed from the whole sequence's logits
    dataset = transitions([tap(0.6), tap(0.7)], [[], []])
    trainer = make_trainer(tmp_path, dataset, weighting="sft")
    processor = trainer.processing_class
    short = [dict(row, target_action=row["action"], target_weight=1.0) for row in dataset]
    long = [dict(row, history="; ".join(["tap [0.5, 0.5]"] * 30)) for row in short]
    kept = []
    for rows in (short, long):
        batch = BestOfNCollator(processor)(rows)
        loss, outputs = trainer.compute_loss(trainer.model, batch, return_outputs=True)
        kept.append(outputs.logits.shape[1])
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights")}
        with torch.no_grad():
            full = trainer.model(**inputs).logits
        assert loss.item() == pytest.approx(weighted_nll(full, batch["labels"], batch["weights"]).item(), rel=1e-5)
        assert full.shape[1] > outputs.logits.shape[1]
    assert kept[0] == kept[1] == len(answer_token_ids(processor, "Open Settings", "", tap(0.6))) + 1


def _usage_code(card: str) -> str:
    """The Python block of the card's Usage section."""
    usage = card.split("## Usage", 1)[1]
    return usage.split("```python\n", 1)[1].split("```", 1)[0]


def _run_usage(code: str) -> list[str]:
    screenshot = transitions([tap(0.2)], [[]])[0]["image"]
    scope = {"screenshot": screenshot, "goal": "Open Settings"}
    exec(code, scope)  # noqa: S102 - the card's own code, as a reader would run it
    return scope["actions"]


def test_card_of_an_in_memory_base_says_so_and_its_code_runs_from_a_saved_copy(tmp_path, monkeypatch):
    dataset = transitions([tap(0.6), tap(0.7)], [[], []])
    trainer = make_trainer(tmp_path, dataset, weighting="sft")
    trainer.save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "in-memory" not in _usage_code(card) and "base_model:" not in card.split("---")[1]
    assert "The base model has no Hub id: it was built in memory (a `Qwen2VLForConditionalGeneration`)" in card
    base, processor = tiny_qwen2_vl()
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    code = _usage_code(card).replace("'path/to/base-model'", repr(str(tmp_path / "base")))
    monkeypatch.chdir(tmp_path)  # the card names the adapter by its folder, as a copy of it is found
    assert len(_run_usage(code)) == 1


def test_card_of_a_local_base_loads_it_from_that_folder(tmp_path, monkeypatch):
    base, processor = tiny_qwen2_vl()
    base.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    dataset = transitions([tap(0.6), tap(0.7)], [[], []])
    trainer = BestOfNActorTrainer(str(tmp_path / "base"), args=config(tmp_path, weighting="sft"),
                                  train_dataset=dataset)
    trainer.save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"it was loaded from the local folder `{tmp_path / 'base'}`" in card
    monkeypatch.chdir(tmp_path)
    assert len(_run_usage(_usage_code(card))) == 1


@pytest.fixture()
def saved_states(tmp_path):
    """File-backed transitions (datasets writes map caches next to such files unless told otherwise)."""
    transitions([tap(0.2), tap(0.4), tap(0.6)], [[], [], []]).save_to_disk(str(tmp_path / "states"))
    return tmp_path / "states"


def _sampling_trainer(tmp_path, states, output="out", **kwargs):
    from datasets import load_from_disk

    model, processor = tiny_qwen2_vl()
    settings = dict(candidate_source="policy", anchor="greedy", num_candidates=4, advantage_threshold=0.0,
                    max_completion_length=16, seed=3)
    args = config(tmp_path / output, **{**settings, **kwargs})
    return BestOfNActorTrainer(model, critic=linear_critic(), feature_extractor=TouchYExtractor(),
                               train_dataset=load_from_disk(str(states)), processing_class=processor, args=args)


def test_preparation_is_reproducible_cached_and_recomputed_when_a_setting_changes(tmp_path, saved_states, monkeypatch):
    from digiq_trl.models.policy import VLMPolicy

    calls = {"sample": 0, "act": 0}
    for name in calls:
        original = getattr(VLMPolicy, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(VLMPolicy, name, counted)
    before = sorted(p.name for p in saved_states.iterdir())
    first = _sampling_trainer(tmp_path, saved_states).prepared_dataset
    assert calls["sample"] > 0 and calls["act"] > 0
    fresh = _sampling_trainer(tmp_path, saved_states, output="elsewhere").prepared_dataset  # samples again
    assert fresh["candidates"] == first["candidates"]
    calls.update(sample=0, act=0)
    again = _sampling_trainer(tmp_path, saved_states)  # same output_dir: the cache is read
    assert calls == {"sample": 0, "act": 0}
    assert again.prepared_dataset.to_dict() == first.to_dict()
    assert again.preparation_metrics["generation_time_share"] == 0.0
    changed = _sampling_trainer(tmp_path, saved_states, temperature=0.5)
    assert calls["sample"] > 0 and calls["act"] == 0  # the greedy actions do not depend on the temperature
    assert changed.prepared_dataset["base_action"] == first["base_action"]
    assert sorted(p.name for p in saved_states.iterdir()) == before  # nothing written next to the dataset
    cached = sorted(p.name for p in (tmp_path / "out" / "out" / PREPARATION_CACHE_DIR).iterdir())
    assert len([name for name in cached if name.startswith("best-of-n-")]) == 2
    assert len([name for name in cached if name.startswith("greedy-")]) == 1


def test_another_seed_samples_other_candidates(tmp_path, saved_states):
    first = _sampling_trainer(tmp_path, saved_states).prepared_dataset["candidates"]
    other = _sampling_trainer(tmp_path, saved_states, output="other", seed=4).prepared_dataset["candidates"]
    assert other != first


def test_invalid_candidates_are_redrawn_up_to_the_set_rounds() -> None:
    """As the reference's get_pi_action_guarantee_valid: only the unparsable samples are drawn again,
    at most ``invalid_resamples`` times; one still unparsable then stays (scored as invalid)."""
    from types import SimpleNamespace

    from digiq_trl.trainers.best_of_n_preparation import _CandidateScorer

    home = format_action(DeviceAction.press(ActionType.PRESS_HOME))

    class Redraws:
        """Answers each single redraw of state 0 with junk until its third call, then HOME."""

        def __init__(self) -> None:
            self.calls: list[list[str]] = []

        def sample(self, observations, n, temperature):
            self.calls.append([o["goal"] for o in observations])
            return [[home if o["goal"] == "b" or len(self.calls) >= 3 else "junk"] for o in observations]

    observations = [{"goal": "a"}, {"goal": "b"}]
    first = [["junk", home], ["junk", "junk"]]
    for rounds, expected, calls in ((0, first, 0), (1, [["junk", home], [home, home]], 1),
                                    (3, [[home, home], [home, home]], 3)):
        policy = Redraws()
        trainer = SimpleNamespace(policy=policy, args=SimpleNamespace(invalid_resamples=rounds, temperature=1.2))
        assert _CandidateScorer._resample_invalid(trainer, observations, first) == expected
        assert len(policy.calls) == calls
    assert policy.calls[0] == ["a", "b", "b"] and policy.calls[1] == ["a"]


def test_clamped_token_probabilities_as_the_reference() -> None:
    """Probabilities 0.995, 0.5 and 0.0001 of three labelled tokens, clamped to [0.001, 0.99]: the
    loss is -(log 0.99 + log 0.5 + log 0.001) / 3, and only the 0.5 token gets a gradient."""
    probabilities = torch.tensor([0.995, 0.5, 0.0001])
    logits = torch.zeros(1, 4, 2)
    logits[0, :3, 1] = torch.log(probabilities / (1 - probabilities))  # softmax over 2 classes gives p
    logits.requires_grad_(True)
    labels = torch.tensor([[-100, 1, 1, 1]])
    loss = weighted_nll(logits, labels, torch.ones(1), probability_clamp=(0.001, 0.99))
    loss.backward()
    assert loss.item() == pytest.approx(-(math.log(0.99) + math.log(0.5) + math.log(0.001)) / 3, rel=1e-5)
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 2].abs().sum() == 0
    assert logits.grad[0, 1].abs().sum() > 0
    unclamped = weighted_nll(logits.detach(), labels, torch.ones(1))
    assert unclamped.item() == pytest.approx(-torch.log(probabilities).mean().item(), rel=1e-4)
    from digiq_trl.trainers.actor_config import BestOfNActorConfig

    with pytest.raises(ValueError, match="token_probability_clamp"):
        BestOfNActorConfig(output_dir="unused", token_probability_clamp=[0.99, 0.001])


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "qwen3_vl"])
def test_one_actor_step_on_the_other_qwen_families(tmp_path, model_type):
    """As for Qwen2-VL: policy candidates continue each state's prompt from one shared prefill (a
    repeated prompt would run 3 rows per state), the greedy anchor decodes, and one LoRA step
    changes the adapter only."""
    from digiq_trl.models.tiny import tiny_qwen_vl

    model, processor = tiny_qwen_vl(model_type)
    prompt_rows = []
    forward = model.forward

    def counting_forward(*args, **kwargs):
        if kwargs.get("pixel_values") is not None:
            prompt_rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    model.forward = counting_forward
    dataset = transitions([tap(0.2), tap(0.4), tap(0.6)], [[], [], []])
    trainer = BestOfNActorTrainer(
        model, critic=linear_critic(), feature_extractor=TouchYExtractor(), train_dataset=dataset,
        processing_class=processor, args=config(tmp_path, candidate_source="policy", anchor="greedy", num_candidates=3,
                                                candidate_batch_size=4, advantage_threshold=0.0, max_steps=1,
                                                learning_rate=1e-2),
    )
    assert prompt_rows and max(prompt_rows) <= 3
    assert trainer.prepared_dataset["num_proposals"] == [3 + 1] * 3  # the samples and the greedy anchor
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)
    assert all(torch.equal(before[n], after[n]) for n in before if "lora_" not in n)
    assert math.isfinite(trainer.state.log_history[0]["loss"])
