"""Transition schema: validation errors name row and field; returns and splits by episode."""

import pytest
from datasets import Dataset, Value
from PIL import Image

from digiq_trl import (
    DeviceAction,
    TransitionValidationError,
    compute_mc_returns,
    format_action,
    split_by_episode,
    transition_features,
    validate_transitions,
)
from digiq_trl.data import discounted_returns

TAP = format_action(DeviceAction.tap(0.5, 0.5))


def make_rows(num_episodes: int = 3, length: int = 3) -> list[dict]:
    image = Image.new("RGB", (4, 8), "white")
    return [
        {
            "episode_id": f"ep{e}",
            "step_id": s,
            "goal": "Open Settings",
            "history": "",
            "image": image,
            "next_image": image,
            "action": TAP,
            "reward": float(e == 0 and s == length - 1),
            "done": s == length - 1,
            "mc_return": 0.0,
            "trajectory_reward": 0.0,
        }
        for e in range(num_episodes)
        for s in range(length)
    ]


def make_ds(rows: list[dict]) -> Dataset:
    return Dataset.from_list(rows, features=transition_features())


def test_valid_dataset_passes_unchanged() -> None:
    ds = make_ds(make_rows())
    assert validate_transitions(ds) is ds


@pytest.mark.parametrize(
    ("row", "field", "value", "message"),
    [
        (4, "action", "tap somewhere", "not a valid AutoUI action"),
        (2, "reward", 1.5, "outside [0, 1]"),
        (4, "step_id", 2, "not contiguous"),
        (1, "done", True, "before the last step"),
    ],
)
def test_bad_rows_are_named(row: int, field: str, value, message: str) -> None:
    rows = make_rows()
    rows[row][field] = value
    with pytest.raises(TransitionValidationError) as excinfo:
        validate_transitions(make_ds(rows), source="train.arrow")
    text = str(excinfo.value)
    assert "train.arrow" in text and message in text and f"'{field}'" in text


def test_missing_done_on_last_step_names_that_row() -> None:
    rows = make_rows()
    rows[5]["done"] = False
    with pytest.raises(TransitionValidationError, match="row 5, field 'done'"):
        validate_transitions(make_ds(rows))


def test_missing_done_at_the_end_of_the_dataset() -> None:
    rows = make_rows()
    rows[-1]["done"] = False
    with pytest.raises(TransitionValidationError, match="row 8, field 'done'"):
        validate_transitions(make_ds(rows))


def test_episode_split_across_rows_is_refused() -> None:
    rows = make_rows()
    rows[6:] = [dict(r, episode_id="ep0") for r in rows[6:]]
    with pytest.raises(TransitionValidationError, match="non-adjacent"):
        validate_transitions(make_ds(rows))


def test_missing_column_and_wrong_type() -> None:
    ds = make_ds(make_rows())
    with pytest.raises(TransitionValidationError, match=r"missing required column\(s\) \['goal'\]"):
        validate_transitions(ds.remove_columns("goal"))
    with pytest.raises(TransitionValidationError, match="field 'step_id'.*int64"):
        validate_transitions(ds.cast_column("step_id", Value("int64")))


def test_discounted_returns_by_hand() -> None:
    assert discounted_returns([0.0, 0.0, 1.0], gamma=0.5) == [0.25, 0.5, 1.0]
    assert discounted_returns([1.0, 1.0], gamma=0.9) == pytest.approx([1.9, 1.0])


def test_compute_mc_returns_per_episode() -> None:
    ds = compute_mc_returns(make_ds(make_rows()), gamma=0.5)
    assert ds["mc_return"][:] == pytest.approx([0.25, 0.5, 1.0] + [0.0] * 6)
    assert ds["trajectory_reward"][:] == [1.0] * 3 + [0.0] * 6
    assert ds.features == transition_features()


def test_split_by_episode_keeps_episodes_whole_and_is_seeded() -> None:
    rows = make_rows(num_episodes=10)
    split = split_by_episode(make_ds(rows), test_size=0.3, seed=1)
    train, test = set(split["train"]["episode_id"]), set(split["test"]["episode_id"])
    assert not train & test and len(test) == 3 and len(train | test) == 10
    assert len(split["test"]) == 9
    assert split_by_episode(make_ds(rows), 0.3, seed=1)["test"]["episode_id"][:] == split["test"]["episode_id"][:]
