"""Transition schema: validation errors name row and field; returns and splits by episode."""

import io
import math
import struct
import zlib

import pytest
from datasets import Dataset, Value
from PIL import Image

from digiq_trl import (
    DeviceAction,
    TransitionValidationError,
    compute_mc_returns,
    format_action,
    load_transitions,
    split_by_episode,
    transition_features,
    validate_transitions,
)
from digiq_trl.data import discounted_returns, validation


TAP = format_action(DeviceAction.tap(0.5, 0.5))
GAMMA = 0.5


def make_rows(num_episodes: int = 3, length: int = 3) -> list[dict]:
    """Episodes of ``length`` steps; only episode 0 succeeds (returns for :data:`GAMMA`)."""
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
            "mc_return": float(e == 0) * GAMMA ** (length - 1 - s),
            "trajectory_reward": float(e == 0),
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


def _png_bytes(size: tuple[int, int] = (16, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 64).save(buffer, "PNG")
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG announcing ``width`` x ``height`` RGB pixels, with no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b"")


def _image(data: bytes) -> dict:
    return {"bytes": data, "path": None}


@pytest.mark.parametrize(
    ("row", "field", "value", "message"),
    [
        (4, "reward", None, "is null"),
        (4, "done", None, "is null"),
        (4, "goal", None, "is null"),
        (4, "image", None, "is null"),
        (4, "image", _image(b"not an image"), "not a decodable image"),
        (4, "next_image", _image(_png_bytes()[:-40]), "not a decodable image"),
        (4, "image", _image(_png_header_only(12_000, 12_000)), "outside 1 to 25000000 pixels"),
        (4, "image", _image(_png_header_only(0, 5)), "not a decodable image (no image format"),
        (4, "mc_return", math.nan, "is not a finite number"),
        (4, "trajectory_reward", math.inf, "is not a finite number"),
        (4, "trajectory_reward", 1.0, "is not the sum of its episode's rewards, 0"),
    ],
)
def test_nulls_images_and_returns_are_checked(row: int, field: str, value, message: str) -> None:
    rows = make_rows()
    rows[row][field] = value
    with pytest.raises(TransitionValidationError) as excinfo:
        validate_transitions(make_ds(rows), source="train.arrow")
    assert f"train.arrow, row {row}, field '{field}': " in str(excinfo.value)
    assert message in str(excinfo.value)


def successful_rows(gamma: float, length: int = 4) -> list[dict]:
    """Three episodes of ``length`` steps that all succeed, with their returns for ``gamma``."""
    rows = make_rows(length=length)
    returns = discounted_returns([0.0] * (length - 1) + [1.0], gamma)
    for row in rows:
        row.update(
            reward=float(row["done"]), mc_return=returns[row["step_id"]], trajectory_reward=1.0
        )
    return rows


@pytest.mark.parametrize(
    ("row", "value", "expected"), [(1, 0.3, 0.25), (3, 0.5, 1.0), (0, 0.0, 0.125)]
)
def test_a_wrong_mc_return_is_named_by_its_own_row(row: int, value: float, expected: float) -> None:
    rows = successful_rows(GAMMA)
    rows[row]["mc_return"] = value
    with pytest.raises(TransitionValidationError) as excinfo:
        validate_transitions(make_ds(rows))
    assert str(excinfo.value) == (
        f"dataset, row {row}, field 'mc_return': {value:g} is not the discounted return of its "
        f"episode's rewards from this step, {expected:g} (gamma 0.5, as most rows imply)"
    )


@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.05])
def test_returns_of_any_discount_in_range_pass(gamma: float) -> None:
    validate_transitions(make_ds(successful_rows(gamma)))


def test_returns_of_a_discount_above_one_are_refused() -> None:
    rows = successful_rows(gamma=2.0**-1)
    for row in rows:
        row["mc_return"] = 2.0 ** (3 - row["step_id"])
    with pytest.raises(
        TransitionValidationError, match=r"field 'mc_return': \d+ implies a discount of 2 "
    ):
        validate_transitions(make_ds(rows))


def test_zero_rows_are_refused(tmp_path) -> None:
    with pytest.raises(TransitionValidationError, match=r"^empty: has no rows$"):
        validate_transitions(make_ds(make_rows()).select([]), source="empty")
    make_ds(make_rows()).select([]).flatten_indices().save_to_disk(str(tmp_path / "saved"))  # no data files
    with pytest.raises(TransitionValidationError, match=r"saved: has no rows"):
        load_transitions(str(tmp_path / "saved"))


def test_image_checks_can_be_relaxed_for_headers_only_and_larger_screens() -> None:
    rows = make_rows()
    rows[4]["image"] = _image(_png_bytes()[:-40])
    rows[7]["image"] = _image(_png_header_only(12_000, 12_000))
    ds = make_ds(rows)
    with pytest.raises(TransitionValidationError, match="row 7, field 'image'"):
        validate_transitions(ds, decode_images=False)
    with pytest.raises(TransitionValidationError, match="row 4, field 'image'"):
        validate_transitions(ds, max_image_pixels=200_000_000)
    assert validate_transitions(ds, decode_images=False, max_image_pixels=200_000_000) is ds


def test_each_distinct_image_is_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    check = validation.image_problem
    monkeypatch.setattr(
        validation, "image_problem", lambda data, *args: decoded.append(data) or check(data, *args)
    )
    rows = make_rows()
    rows[4]["next_image"] = _image(_png_bytes())
    validate_transitions(make_ds(rows))
    assert len(decoded) == 2 == len(set(decoded))


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


@pytest.mark.parametrize("gamma", [math.nan, 2.0, 0.0, -0.5])
def test_discount_outside_zero_one_is_refused(gamma: float) -> None:
    with pytest.raises(ValueError, match=r"gamma: .* is not in \(0, 1\]"):
        discounted_returns([0.0, 1.0], gamma)
    with pytest.raises(ValueError, match=r"gamma: .* is not in \(0, 1\]"):
        compute_mc_returns(make_ds(make_rows()), gamma)


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
    assert (
        split_by_episode(make_ds(rows), 0.3, seed=1)["test"]["episode_id"][:]
        == split["test"]["episode_id"][:]
    )
