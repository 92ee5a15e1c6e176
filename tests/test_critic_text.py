"""The critic's text inputs: segments and tokens on hand-written cases, the match features, and a
critic with a trainable text encoder that learns, keeps its target apart, and reloads."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from digiq_trl.actions import DeviceAction, format_action
from digiq_trl.models.critic import DigiQCritic, DigiQCriticModelConfig, tiny_text_encoder_config
from digiq_trl.models.critic_text import (
    critic_segments,
    critic_text_inputs,
    num_segments,
    previous_action,
    tokenize_segments,
    typed_text,
)
from digiq_trl.models.pretrained import resolve_pretrained
from digiq_trl.targets import td_targets


GOAL = "Search for news in Chile"
HISTORY = 'tap [0.12, 0.41]; type "news; Chile"'
TYPE_RIGHT = format_action(DeviceAction.type_text("news in Chile"))
TYPE_WRONG = format_action(DeviceAction.type_text("weather"))
TAP = format_action(DeviceAction.tap(0.5, 0.25))
DIM = 8


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_pretrained("digiq-trl/phone-actor-tiny"))


def text_critic(tokenizer, layout: str = "joint", match: bool = True) -> DigiQCritic:
    torch.manual_seed(0)
    config = DigiQCriticModelConfig(q_input_dim=DIM, v_input_dim=DIM, hidden_size=16, text_layout=layout,
                                    text_match=match,
                                    text_encoder_config=tiny_text_encoder_config(len(tokenizer), tokenizer.pad_token_id))
    return DigiQCritic(config)


def test_segments_of_hand_written_states() -> None:
    assert previous_action(HISTORY) == 'type "news; Chile"'
    assert previous_action("") == ""
    assert critic_segments(GOAL, HISTORY, TYPE_RIGHT, "joint") == [
        f'goal: {GOAL} previous: type "news; Chile" action: type "news in Chile"']
    assert critic_segments(GOAL, "", TAP, "joint") == [f"goal: {GOAL} previous: none action: tap"]
    assert critic_segments(GOAL, HISTORY, None, "separate") == ["type", "news; Chile", GOAL]
    assert critic_segments(GOAL, "tap [0.1, 0.2]", TAP, "separate") == ["tap", "", GOAL, "tap", ""]
    assert [num_segments(layout, action) for layout in ("joint", "separate") for action in (True, False)] == [1, 1, 5, 3]
    assert typed_text(HISTORY, None) == "news; Chile" and typed_text(HISTORY, TAP) == ""
    assert typed_text("", TYPE_WRONG) == "weather"
    with pytest.raises(ValueError, match="text layout"):
        critic_segments(GOAL, "", None, "stacked")


def test_tokens_keep_the_end_of_long_texts_and_pad_right(tokenizer) -> None:
    tokens = tokenize_segments(tokenizer, [["a b c d e f g h", ""], ["h", "g"]], max_length=3)
    assert tokens["input_ids"].shape == (2, 2, 3)
    expected_end = tokenizer("a b c d e f g h", add_special_tokens=True)["input_ids"][-1]
    assert tokens["input_ids"][0, 0, -1].item() == expected_end  # truncated from the left
    assert tokens["attention_mask"][0, 1].tolist() == [1, 0, 0]  # an empty text: one pad token, attended
    assert tokenizer.truncation_side == "right", "the tokenizer is left as found"
    with pytest.raises(ValueError, match="same number"):
        tokenize_segments(tokenizer, [["a"], ["a", "b"]], max_length=3)


def test_match_features_on_a_copied_a_wrong_and_no_typed_text(tokenizer) -> None:
    critic = text_critic(tokenizer)
    texts = critic_text_inputs(tokenizer, [GOAL] * 3, [""] * 3, [TYPE_RIGHT, TYPE_WRONG, TAP],
                               "joint", 64, match=True)
    texts["match_ids"][0, 1] = texts["match_ids"][0, 0]  # the typed text is the goal itself
    texts["match_mask"][0, 1] = texts["match_mask"][0, 0]
    with torch.no_grad():
        has_text, mean, least, coverage = critic.match_features(texts).unbind(-1)
    assert has_text.tolist() == [1.0, 1.0, 0.0]
    assert mean[0].item() == pytest.approx(1.0, abs=1e-5) and least[0].item() == pytest.approx(1.0, abs=1e-5)
    assert coverage[0].item() == pytest.approx(1.0, abs=1e-5)
    assert coverage[1] < 1.0 and mean[1] < 1.0
    assert mean[2].item() == least[2].item() == coverage[2].item() == 0.0


@pytest.mark.parametrize("layout", ["joint", "separate"])
def test_a_text_critic_tells_typed_queries_apart_learns_and_reloads(tokenizer, layout, tmp_path: Path) -> None:
    critic = text_critic(tokenizer, layout)
    assert critic.config.head_input_dims()[0] == num_segments(layout, True) * 64 + 4 + 2 * DIM
    states = torch.randn(4, DIM)
    goals, histories = [GOAL] * 4, ["", "", HISTORY, HISTORY]
    actions = [TYPE_RIGHT, TYPE_WRONG, TYPE_RIGHT, TAP]
    q_text = critic_text_inputs(tokenizer, goals, histories, actions, layout, 64, match=True)
    v_text = critic_text_inputs(tokenizer, goals, histories, None, layout, 64, match=True)
    q = torch.stack(critic.q_values(torch.zeros(4, DIM), states[[0, 0, 2, 2]], q_text))
    assert (q[:, 0] - q[:, 1]).abs().max() > 1e-4, "the typed text changes Q"
    with pytest.raises(ValueError, match="reads texts"):
        critic.q_values(torch.zeros(4, DIM))

    encoder_before = [p.detach().clone() for p in critic.text_encoder.parameters()]
    target_before = [p.detach().clone() for p in critic.target_text_encoder.parameters()]
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)
    reward, done = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.ones(4, dtype=torch.bool)
    losses = []
    for _ in range(30):
        q1, q2 = critic.q_values(torch.zeros(4, DIM), states, q_text)
        next_v = critic.target_v_values(states, v_text)
        t1, t2 = td_targets(reward, done, *next_v, 0.95)
        loss = torch.nn.functional.mse_loss(q1, t1) + torch.nn.functional.mse_loss(q2, t2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, critic.text_encoder.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(target_before, critic.target_text_encoder.parameters()))
    critic.update_targets(0.5)
    assert any(not torch.equal(a, b) for a, b in zip(target_before, critic.target_text_encoder.parameters()))

    critic.eval().save_pretrained(tmp_path / "critic")
    again = DigiQCritic.from_pretrained(str(tmp_path / "critic")).eval()
    with torch.no_grad():
        torch.testing.assert_close(again.advantage(torch.zeros(4, DIM), states, q_text, v_text),
                                   critic.advantage(torch.zeros(4, DIM), states, q_text, v_text))


def test_a_hub_text_encoder_starts_from_its_weights(tmp_path: Path) -> None:
    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=64))
    encoder.save_pretrained(tmp_path / "encoder")
    config = DigiQCriticModelConfig(q_input_dim=DIM, v_input_dim=DIM, hidden_size=16, text_layout="separate")
    critic = DigiQCritic.with_pretrained_text_encoder(config, str(tmp_path / "encoder"))
    assert critic.config.text_encoder_name == str(tmp_path / "encoder") and critic.config.text_width == 32
    for name, weight in encoder.state_dict().items():
        torch.testing.assert_close(critic.text_encoder.state_dict()[name], weight)
        torch.testing.assert_close(critic.target_text_encoder.state_dict()[name], weight)
