"""Hub I/O: load_transitions (disk round trip, validation) and push_transitions (card, failures)."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
from datasets import Dataset, DatasetDict, load_from_disk
from huggingface_hub import DatasetCard

from digiq_trl.actions import DeviceAction, format_action
from digiq_trl.data import TransitionValidationError, transition_features
from digiq_trl.data.hub import HubPushError, load_transitions, push_transitions


SCREEN = next((Path(__file__).parent / "data").glob("*.png")).read_bytes()


def _transitions(episode: str = "e0", steps: int = 2) -> Dataset:
    image = {"bytes": SCREEN, "path": None}
    rows = [
        {
            "episode_id": episode,
            "step_id": i,
            "goal": "open the app",
            "history": "",
            "image": image,
            "next_image": image,
            "action": format_action(DeviceAction.tap(0.5, 0.5)),
            "reward": float(i == steps - 1),
            "done": i == steps - 1,
            "mc_return": 0.5 ** (steps - 1 - i),
            "trajectory_reward": 1.0,
        }
        for i in range(steps)
    ]
    return Dataset.from_list(rows, features=transition_features())


def test_load_transitions_round_trip_and_splits(tmp_path: Path) -> None:
    ds = _transitions()
    ds.save_to_disk(str(tmp_path / "single"))
    loaded = load_transitions(tmp_path / "single")
    assert loaded.to_dict() == ds.to_dict()
    DatasetDict(train=ds, test=_transitions("e1", 3)).save_to_disk(str(tmp_path / "splits"))
    assert len(load_transitions(tmp_path / "splits", split="test")) == 3
    assert set(load_transitions(str(tmp_path / "splits"))) == {"train", "test"}
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_transitions(tmp_path / "splits", split="validation")


def test_load_transitions_validates(tmp_path: Path) -> None:
    bad = _transitions().map(lambda row: {"reward": 2.0})
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(TransitionValidationError, match=r"bad, row 0, field 'reward'"):
        load_transitions(tmp_path / "bad")


def test_push_offline_fails_clearly_and_leaves_local_copy(tmp_path: Path) -> None:
    assert huggingface_hub.is_offline_mode(), "tests run with HF_HUB_OFFLINE=1 (conftest)"
    local = tmp_path / "local"
    _transitions().save_to_disk(str(local))
    before = sorted((p.name, p.stat().st_size) for p in local.iterdir())
    with pytest.raises(HubPushError, match=r"'me/transitions'.*offline.*local copy is untouched"):
        push_transitions(load_from_disk(str(local)), "me/transitions")
    assert sorted((p.name, p.stat().st_size) for p in local.iterdir()) == before


def test_push_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)

    def refuse(self, repo_id, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(Dataset, "push_to_hub", refuse)
    with pytest.raises(
        HubPushError, match=r"'me/t' failed \(ConnectionError: no route to host\); the local"
    ):
        push_transitions(_transitions(), "me/t")


def test_push_writes_card_with_schema_and_citations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    pushed: dict = {}
    monkeypatch.setattr(
        Dataset, "push_to_hub", lambda self, repo_id, **kw: pushed.update(data=(repo_id, kw))
    )
    monkeypatch.setattr(
        DatasetCard,
        "load",
        classmethod(
            lambda cls, repo_id, **kw: cls("---\nconfigs:\n- config_name: default\n---\nold text")
        ),
    )
    monkeypatch.setattr(
        DatasetCard, "push_to_hub", lambda self, repo_id, **kw: pushed.update(card=str(self))
    )
    url = push_transitions(_transitions(), "me/t", private=True, description="From the simulator.")
    assert url == "https://huggingface.co/datasets/me/t"
    assert pushed["data"] == ("me/t", {"private": True, "token": None})
    card = pushed["card"]
    assert "config_name: default" in card and "old text" not in card
    assert "From the simulator." in card and "2 transitions in 1 episodes" in card
    assert "| `mc_return` | float32 |" in card and "CC BY 4.0" in card and "Apache-2.0" in card
