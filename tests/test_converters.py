"""Converters: reference .pt files and AitW TFRecords -> transitions; the convert CLI."""

from __future__ import annotations

import io
import math
import os
import pickle
import re
import shutil
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import datasets.config
import numpy as np
import pytest
import torch
from datasets import load_from_disk
from PIL import Image

from digiq_trl import cli, staging
from digiq_trl.actions import ActionType, DeviceAction, format_action, format_history
from digiq_trl.data.aitw_tfrecord import (
    MAX_RECORD_BYTES,
    TFRecordError,
    _masked_crc,
    convert_aitw_tfrecord,
    encode_example,
    encode_png,
    read_tfrecord,
    write_tfrecord,
)
from digiq_trl.data.conversion import ConversionError
from digiq_trl.data.digiq_pt import UnsafePickleError, convert_digiq_pt, load_reference_file


DATA = Path(__file__).parent / "data"
SCREENS = sorted(DATA.glob("*.png"))

TAP = DeviceAction.tap(0.5, 0.25)
TYPE = DeviceAction.type_text('say "hi"')
ENTER = DeviceAction.press(ActionType.PRESS_ENTER)
SWIPE = DeviceAction.swipe((0.8, 0.5), (0.2, 0.5))
COMPLETE = DeviceAction.press(ActionType.STATUS_TASK_COMPLETE)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder of real (downscaled) Android screenshots."""
    folder = tmp_path / "images"
    folder.mkdir()
    for screen in SCREENS:
        shutil.copy(screen, folder / screen.name)
    return folder


def _step(task: str, image: str, action: str, reward: float, **extra) -> dict:
    """A reference step dict, with the keys of the Digi-Q / DigiRL files."""
    return {
        "observation": f"Previous Actions: Goal: {task}</s>",
        "next_observation": f"Previous Actions: ... Goal: {task}</s>",
        "image_path": image,
        "image_features": torch.zeros(1408),
        "task": task,
        "reward": reward,
        "done": False,
        "action": action,
        "trajectory_reward": 0.0,
        "mc_return": 0.0,
        **extra,
    }


def _reference_file(tmp_path: Path) -> Path:
    """Two trajectories: a success with candidates, and a failure with numpy rewards."""
    names = [s.name for s in SCREENS]
    success = [
        _step(
            "Search for milk",
            f"/nfs/old/{names[0]}",
            format_action(TAP, with_plan=True),
            0.0,
            action_list=f"{format_action(TAP)}<split>not an action<split>{format_action(ENTER)}",
            traj_id=7,
            q_rep_out_list=torch.zeros(4, 16),
        ),
        _step(
            "Search for milk",
            names[1],
            format_action(TYPE),
            np.float32(0.0),
            action_list=format_action(TYPE),
        ),
        _step(
            "Search for milk", names[2], format_action(COMPLETE), torch.tensor(1.0), action_list=""
        ),
    ]
    failure = [
        _step(
            "Open the alarm",
            names[2],
            format_action(SWIPE),
            np.float64(0.0),
            image_array=np.ones((2, 2)),
        ),
        _step("Open the alarm", names[0], format_action(ENTER), 0),
    ]
    path = tmp_path / "general_train.pt"
    torch.save([success, failure], path)
    return path


def test_digiq_pt_converts_every_field(tmp_path: Path, images: Path) -> None:
    ds = convert_digiq_pt(
        [_reference_file(tmp_path)], images_dir=images, gamma=0.5, cache_dir=tmp_path / "c"
    )
    names = [s.name for s in SCREENS]
    screen = {n: (images / n).read_bytes() for n in names}
    assert ds["episode_id"] == ["general_train/7"] * 3 + ["general_train/1"] * 2
    assert ds["step_id"] == [0, 1, 2, 0, 1]
    assert ds["goal"] == ["Search for milk"] * 3 + ["Open the alarm"] * 2
    assert ds["history"] == [
        "",
        format_history([TAP]),
        format_history([TAP, TYPE]),
        "",
        format_history([SWIPE]),
    ]
    assert ds["action"] == [format_action(a) for a in (TAP, TYPE, COMPLETE, SWIPE, ENTER)]
    assert ds["reward"] == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert ds["done"] == [False, False, True, False, True]
    assert ds["mc_return"] == [0.25, 0.5, 1.0, 0.0, 0.0]
    assert ds["trajectory_reward"] == [1.0] * 3 + [0.0] * 2
    assert ds["candidate_actions"] == [
        [format_action(TAP), "not an action", format_action(ENTER)],
        [format_action(TYPE)],
        [],
        [],
        [],
    ]
    raw = ds.cast_column("image", ds.features["image"].__class__(decode=False))
    raw = raw.cast_column("next_image", ds.features["next_image"].__class__(decode=False))
    order = [names[0], names[1], names[2], names[2], names[0]]
    assert [r["bytes"] for r in raw["image"]] == [screen[n] for n in order]
    assert [r["bytes"] for r in raw["next_image"]] == [
        screen[n] for n in (order[1], order[2], order[2], order[4], order[4])
    ]
    assert ds[0]["image"].size == Image.open(images / names[0]).size


def _evil_payload(marker: Path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return Payload()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = [[_step("goal", "a.png", format_action(TAP), 1.0, extra=_evil_payload(marker))]]
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafePickleError) as caught:
        convert_digiq_pt([path], cache_dir=tmp_path / "c")
    assert str(path) in str(caught.value) and "Nothing in the file was executed" in str(
        caught.value
    )
    if writer == "torch.save":
        assert "'posix.system'" in str(caught.value) or "'os.system'" in str(caught.value)
    assert not marker.exists()
    unsafe_load = (
        (lambda: torch.load(path, weights_only=False))
        if writer == "torch.save"
        else (lambda: pickle.loads(path.read_bytes()))
    )
    unsafe_load()
    assert marker.exists(), "the payload is live: an unsafe load runs it"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"image_path": "missing.png"}, "image_path"),
        ({"next_image_path": "missing.png"}, "next_image_path"),
        ({"reward": 1.5}, "reward"),
        ({"reward": "high"}, "reward"),
        ({"action": None}, "action"),
    ],
)
def test_bad_reference_steps_name_file_trajectory_step_and_field(
    tmp_path: Path, images: Path, change: dict, field: str
) -> None:
    good = _step("goal", SCREENS[0].name, format_action(TAP), 0.0)
    path = tmp_path / "bad.pt"
    torch.save([[good, {**good, **change}]], path)
    with pytest.raises(ConversionError) as caught:
        convert_digiq_pt([path], images_dir=images, cache_dir=tmp_path / "c")
    assert f"{path}, trajectory 0, step 1, field {field!r}" in str(caught.value)


def test_an_unparsable_logged_action_skips_its_trajectory_by_name(tmp_path: Path, images: Path, caplog) -> None:
    good = _step("goal", SCREENS[0].name, format_action(TAP), 0.0)
    path = tmp_path / "rollouts.pt"
    torch.save([[good, good], [good, {**good, "action": "tap the button"}], [good]], path)
    caplog.set_level("WARNING", logger="digiq_trl.data.digiq_pt")
    ds = convert_digiq_pt([path], images_dir=images, cache_dir=tmp_path / "c")
    assert ds["episode_id"] == ["rollouts/0", "rollouts/0", "rollouts/2"]
    assert f"{path}, trajectory 1, step 1, field 'action'" in caplog.text and "skipped 1 trajector" in caplog.text
    with pytest.raises(ConversionError, match=r"trajectory 1, step 1, field 'action'"):
        convert_digiq_pt([path], images_dir=images, cache_dir=tmp_path / "d", on_unparsable_action="error")


def test_next_image_path_is_the_next_screenshot_where_given(tmp_path: Path, images: Path) -> None:
    first, second, third = (s.name for s in SCREENS[:3])
    path = tmp_path / "next.pt"
    torch.save([[_step("goal", first, format_action(TAP), 0.0, next_image_path=third),
                 _step("goal", second, format_action(TAP), 1.0, next_image_path=third),
                 _step("goal", first, format_action(TAP), 1.0)]], path)
    ds = convert_digiq_pt([path], images_dir=images, cache_dir=tmp_path / "c")
    raw = ds.cast_column("next_image", ds.features["next_image"].__class__(decode=False))
    assert [r["bytes"] for r in raw["next_image"]] == [(images / n).read_bytes() for n in (third, third, first)]


def test_missing_key_is_named(tmp_path: Path, images: Path) -> None:
    step = _step("goal", SCREENS[0].name, format_action(TAP), 0.0)
    del step["reward"]
    path = tmp_path / "bad.pt"
    torch.save([[step]], path)
    with pytest.raises(ConversionError, match=r"trajectory 0, step 0, field 'reward': missing"):
        convert_digiq_pt([path], images_dir=images, cache_dir=tmp_path / "c")


def _pixels(screen: Path) -> np.ndarray:
    return np.asarray(Image.open(screen).convert("RGB"))


def _aitw_record(
    episode: str,
    step: int,
    length: int,
    action: DeviceAction,
    screen: Path,
    boxes: list[float],
    type_id: int | None = None,
    replace: dict[str, list] | None = None,
) -> bytes:
    """One AitW step as the original shards store it (raw pixels, AitW action ids); ``replace``
    overrides features by name."""
    pixels = _pixels(screen)
    return encode_example(
        {
            "episode_id": [episode],
            "episode_length": [length],
            "step_id": [step],
            "goal_info": [f"goal of {episode}"],
            "device_type": ["pixel"],
            "current_activity": ["a.b/.Main"],
            "image/height": [pixels.shape[0]],
            "image/width": [pixels.shape[1]],
            "image/channels": [3],
            "image/encoded": [pixels.tobytes()],
            "image/ui_annotations_positions": boxes,
            "image/ui_annotations_text": ["Search"] * (len(boxes) // 4),
            "image/ui_annotations_ui_types": ["TEXT"] * (len(boxes) // 4),
            "results/action_type": [type_id if type_id is not None else int(action.action_type)],
            "results/type_action": [action.typed_text],
            "results/yx_touch": list(action.touch_point),
            "results/yx_lift": list(action.lift_point),
            **(replace or {}),
        }
    )


BOX = [0.125, 0.25, 0.0625, 0.5]  # exact in float32


def test_aitw_tfrecord_converts_every_field(tmp_path: Path) -> None:
    a, b, c = SCREENS
    records = [  # episodes interleaved and steps out of order, as shards may hold them
        _aitw_record("ep2", 1, 2, COMPLETE, a, []),
        _aitw_record("ep1", 0, 3, TAP, a, BOX + BOX),
        _aitw_record("ep1", 2, 3, ENTER, c, BOX),
        _aitw_record("ep2", 0, 2, SWIPE, c, BOX),
        _aitw_record("ep1", 1, 3, TYPE, b, []),
    ]
    path = tmp_path / "general-00000-of-00001"
    write_tfrecord(path, records)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    ds = convert_aitw_tfrecord([path], gamma=0.5, cache_dir=tmp_path / "c")
    assert ds["episode_id"] == ["ep2", "ep2", "ep1", "ep1", "ep1"]
    assert ds["step_id"] == [0, 1, 0, 1, 2]
    assert ds["goal"] == ["goal of ep2"] * 2 + ["goal of ep1"] * 3
    assert ds["action"] == [format_action(x) for x in (SWIPE, COMPLETE, TAP, TYPE, ENTER)]
    assert ds["history"] == [
        "",
        format_history([SWIPE]),
        "",
        format_history([TAP]),
        format_history([TAP, TYPE]),
    ]
    assert ds["reward"] == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert ds["done"] == [False, True, False, False, True]
    assert ds["mc_return"] == [0.5, 1.0, 0.25, 0.5, 1.0]
    assert ds["trajectory_reward"] == [1.0] * 5
    assert ds["ui_boxes"] == [[BOX], [], [BOX, BOX], [], [BOX]]
    for row, (now, after) in zip(ds, [(c, a), (a, a), (a, b), (b, c), (c, c)], strict=True):
        assert np.array_equal(np.asarray(row["image"]), _pixels(now))
        assert np.array_equal(np.asarray(row["next_image"]), _pixels(after))
    assert (
        ds.features["image"].decode
        and Image.open(
            io.BytesIO(
                ds.cast_column("image", ds.features["image"].__class__(decode=False))[0]["image"][
                    "bytes"
                ]
            )
        ).format
        == "PNG"
    )


def test_example_encoding_matches_tensorflow_wire_format() -> None:
    # tf.train.Example(features={"a": bytes_list ["x"]}).SerializeToString(), worked out by hand.
    assert encode_example({"a": [b"x"]}) == b"\n\x0c\n\n\n\x01a\x12\x05\n\x03\n\x01x"


def test_tfrecord_round_trip_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "plain.tfrecord"
    write_tfrecord(path, [b"abc", b"", b"x" * 1000], compress=False)
    assert list(read_tfrecord(path)) == [b"abc", b"", b"x" * 1000]
    original = path.read_bytes()
    data = bytearray(original)
    data[12] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(TFRecordError, match=r"record 0 \(byte 0\): bad data checksum"):
        list(read_tfrecord(path))
    path.write_bytes(original[:40])
    with pytest.raises(TFRecordError, match="truncated"):
        list(read_tfrecord(path))


@pytest.mark.parametrize(
    "record, message",
    [
        (
            lambda: _aitw_record("ep", 0, 1, TAP, SCREENS[0], [], type_id=8),
            r"record 0 \(episode 'ep', step 0\), field 'results/action_type': unknown AitW id 8",
        ),
        (lambda: _aitw_record("ep", 0, 2, TAP, SCREENS[0], []), r"1/2 steps"),
        (
            lambda: _aitw_record("ep", 0, 1, TAP, SCREENS[0], [0.1, 0.2]),
            r"'image/ui_annotations_positions'",
        ),
        (lambda: encode_example({"episode_id": ["ep"]}), r"record 0, field 'step_id': missing"),
    ],
)
def test_bad_aitw_records_are_named(tmp_path: Path, record, message: str) -> None:
    path = tmp_path / "shard.tfrecord"
    write_tfrecord(path, [record()])
    with pytest.raises(ConversionError, match=message) as caught:
        convert_aitw_tfrecord([path], cache_dir=tmp_path / "c")
    assert str(path) in str(caught.value)


@pytest.fixture
def convert_cli(monkeypatch: pytest.MonkeyPatch):
    """``digiq_trl.cli.main`` (it imports only the module of the command it runs)."""
    return cli.main


def test_cli_converts_and_keeps_old_output_on_failure(
    tmp_path: Path, images: Path, convert_cli, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "out" / "general"
    args = [
        "convert",
        "--format",
        "digiq-pt",
        "--input",
        str(_reference_file(tmp_path)),
        "--images",
        str(images),
        "--output",
        str(output),
    ]
    row_group_size = datasets.config.MAX_ROW_GROUP_SIZE
    assert convert_cli(args) == 0
    assert datasets.config.MAX_ROW_GROUP_SIZE == row_group_size  # set only while saving
    saved = load_from_disk(str(output))
    assert len(saved) == 5 and saved["mc_return"][0] == pytest.approx(0.95**2)
    card = (output / "README.md").read_text()
    assert "| `candidate_actions` |" in card and "CC BY 4.0" in card and "2502.15760" in card

    bad = tmp_path / "bad.pt"
    torch.save([[_step("goal", "gone.png", format_action(TAP), 1.0)]], bad)
    assert convert_cli([*args[:4], str(bad), *args[5:]]) == 1
    assert f"{bad}, trajectory 0, step 0, field 'image_path'" in capsys.readouterr().err
    assert load_from_disk(str(output))["action"] == saved["action"]
    assert sorted(p.name for p in output.parent.iterdir()) == ["general"]


def test_cli_aitw_and_refuses_a_folder_that_is_not_a_dataset(
    tmp_path: Path, convert_cli, capsys: pytest.CaptureFixture
) -> None:
    shard = tmp_path / "shard"
    write_tfrecord(shard, [_aitw_record("ep", 0, 1, COMPLETE, SCREENS[0], BOX)])
    output = tmp_path / "aitw"
    assert (
        convert_cli(
            ["convert", "--format", "aitw-tfrecord", "--input", str(shard), "--output", str(output)]
        )
        == 0
    )
    assert load_from_disk(str(output))["ui_boxes"] == [[BOX]]
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    assert (
        convert_cli(
            [
                "convert",
                "--format",
                "aitw-tfrecord",
                "--input",
                str(shard),
                "--output",
                str(precious),
            ]
        )
        == 1
    )
    assert "is not a saved dataset" in capsys.readouterr().err
    assert (precious / "todo.txt").read_text() == "keep me"


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_encode_png_is_lossless(channels: int) -> None:
    pixels = np.random.default_rng(channels).integers(0, 256, size=(7, 5, channels), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(pixels))))
    assert np.array_equal(decoded.reshape(pixels.shape), pixels)


def test_reader_thread_stops_on_errors(tmp_path: Path) -> None:
    good = _aitw_record("ep", 0, 1, TAP, SCREENS[0], [])
    bad = _aitw_record("bad", 0, 1, TAP, SCREENS[0], [], type_id=9)
    path = tmp_path / "shard"
    write_tfrecord(
        path, [bad] + [good] * 12, compress=False
    )  # the consumer fails, the reader is ahead
    with pytest.raises(ConversionError, match="unknown AitW id 9"):
        convert_aitw_tfrecord([path], cache_dir=tmp_path / "c")
    write_tfrecord(
        path, [_aitw_record(f"ep{i}", 0, 1, TAP, SCREENS[0], []) for i in range(3)], compress=False
    )
    path.write_bytes(path.read_bytes()[:-3])  # the reader fails: truncated last record
    with pytest.raises(TFRecordError, match="truncated footer"):
        convert_aitw_tfrecord([path], cache_dir=tmp_path / "c")
    assert not [t for t in threading.enumerate() if t.name == "tfrecord-reader"]


def test_numpy_arrays_of_numpy_1_and_2_files_load(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    content = [[{"features": np.arange(3, dtype=np.float32), "reward": np.float32(1.0)}]]
    torch.save(content, buffer, _use_new_zipfile_serialization=False)  # GLOBALs stay plain text
    for module in (b"numpy._core.multiarray", b"numpy.core.multiarray"):  # numpy 2.x, 1.x names
        path = tmp_path / "arrays.pt"
        path.write_bytes(buffer.getvalue().replace(b"numpy._core.multiarray", module))
        loaded = load_reference_file(path)
        assert np.array_equal(loaded[0][0]["features"], content[0][0]["features"])
        assert loaded[0][0]["reward"] == np.float32(1.0)


def test_cli_push_offline_keeps_the_converted_output(
    tmp_path: Path, convert_cli, capsys: pytest.CaptureFixture
) -> None:
    shard = tmp_path / "shard"
    write_tfrecord(shard, [_aitw_record("ep", 0, 1, COMPLETE, SCREENS[0], [])])
    output = tmp_path / "aitw"
    argv = ["convert", "--format", "aitw-tfrecord", "--input", str(shard), "--output", str(output)]
    assert convert_cli([*argv, "--push-to-hub", "me/aitw"]) == 1
    assert "'me/aitw'" in capsys.readouterr().err
    assert len(load_from_disk(str(output))) == 1


# ----------------------------------------------------------------------------- bad inputs, faults


def _aitw_shard(path: Path, records: list[bytes], compress: bool = True) -> Path:
    write_tfrecord(path, records, compress=compress)
    return path


@pytest.mark.parametrize(
    "records, message",
    [
        (
            lambda: [
                _aitw_record(
                    "ep",
                    0,
                    1,
                    TAP,
                    SCREENS[0],
                    [],
                    replace={"image/width": [0], "image/encoded": [b""]},
                )
            ],
            r"record 0 \(episode 'ep', step 0\), field 'image/width': 0 is not a positive size",
        ),
        (
            lambda: [
                _aitw_record(
                    "ep",
                    0,
                    1,
                    TAP,
                    SCREENS[0],
                    [],
                    replace={
                        "image/height": [12_000],
                        "image/width": [12_000],
                        "image/encoded": [b""],
                    },
                )
            ],
            r"fields 'image/height'/'image/width': a 12000x12000 image, more than 25000000",
        ),
        (
            lambda: [_aitw_record("ep", s, 2, TAP, SCREENS[0], []) for s in (0, 7)],
            r"record 1 \(episode 'ep', step 7\), field 'step_id': 7 is outside 0 \.\. 1 \(episode_",
        ),
        (
            lambda: [_aitw_record("ep", s, 2, TAP, SCREENS[0], []) for s in (-5, 1)],
            r"record 0 \(episode 'ep', step -5\), field 'step_id': -5 is outside 0 \.\. 1",
        ),
        (
            lambda: [_aitw_record("ep", 0, 0, TAP, SCREENS[0], [])],
            r"record 0 \(episode 'ep', step 0\), field 'episode_length': 0 is not a positive",
        ),
        (
            lambda: [_aitw_record("ep", 0, -3, TAP, SCREENS[0], [])],
            r"field 'episode_length': -3 is not a positive number of steps",
        ),
        (
            lambda: [
                _aitw_record("ep", 0, 2, TAP, SCREENS[0], []),
                _aitw_record("ep", 1, 3, TAP, SCREENS[0], []),
            ],
            r"record 1 \(episode 'ep', step 1\), field 'episode_length': 3, but earlier steps "
            r"of the episode say 2",
        ),
    ],
    ids=[
        "width-0",
        "144-Mpx",
        "steps-0-7",
        "steps-minus-5-1",
        "length-0",
        "length-minus-3",
        "lengths-differ",
    ],
)
def test_aitw_images_steps_and_lengths_that_do_not_fit_are_refused(
    tmp_path: Path, records, message: str
) -> None:
    path = _aitw_shard(tmp_path / "shard", records())
    with pytest.raises(ConversionError, match=message) as caught:
        convert_aitw_tfrecord([path], cache_dir=tmp_path / "c")
    assert str(caught.value).startswith(f"{path}, record ")


def test_an_episode_split_across_shards_converts(tmp_path: Path) -> None:
    first = _aitw_shard(
        tmp_path / "a",
        [
            _aitw_record("ep1", 0, 2, TAP, SCREENS[0], []),
            _aitw_record("ep2", 0, 1, COMPLETE, SCREENS[1], []),
        ],
    )
    second = _aitw_shard(tmp_path / "b", [_aitw_record("ep1", 1, 2, COMPLETE, SCREENS[2], [])])
    ds = convert_aitw_tfrecord([first, second], gamma=0.5, cache_dir=tmp_path / "c")
    assert ds["episode_id"] == ["ep2", "ep1", "ep1"] and ds["step_id"] == [0, 0, 1]
    assert ds["mc_return"] == [1.0, 0.5, 1.0]
    assert np.array_equal(np.asarray(ds[1]["next_image"]), _pixels(SCREENS[2]))
    again = _aitw_shard(tmp_path / "c2", [_aitw_record("ep2", 0, 1, COMPLETE, SCREENS[1], [])])
    with pytest.raises(
        ConversionError, match=r"step 0\), field 'step_id': the episode already had all"
    ):
        convert_aitw_tfrecord([first, second, again], cache_dir=tmp_path / "c")


def test_a_record_length_beyond_the_bound_is_refused_before_reading(tmp_path: Path) -> None:
    length = struct.pack("<Q", 2**40)
    path = tmp_path / "huge.tfrecord"
    path.write_bytes(length + struct.pack("<I", _masked_crc(length)) + b"x" * 64)
    with pytest.raises(TFRecordError) as caught:
        convert_aitw_tfrecord([path], cache_dir=tmp_path / "c")
    assert str(caught.value) == (
        f"{path}: record 0 (byte 0): length field says 1099511627776 bytes, more than "
        f"MAX_RECORD_BYTES ({MAX_RECORD_BYTES}); the file is corrupt"
    )


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG announcing ``width`` x ``height`` RGB pixels, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "content, message",
    [
        (
            lambda: SCREENS[0].read_bytes()[:-200],
            r"bytes that are not a decodable image \(OSError: image file is",
        ),
        (
            lambda: _png_header_only(12_000, 12_000),
            r"is a 12000x12000 image, outside 1 to 25000000 pixels",
        ),
        (
            lambda: b"<html>not a screenshot</html>",
            r"bytes that are not a decodable image \(no image format",
        ),
    ],
    ids=["truncated", "144-Mpx", "not-an-image"],
)
def test_reference_screenshots_are_decoded_at_conversion(
    tmp_path: Path, images: Path, content, message: str
) -> None:
    (images / "bad.png").write_bytes(content())
    path = tmp_path / "ref.pt"
    torch.save([[_step("goal", "bad.png", format_action(TAP), 1.0)]], path)
    with pytest.raises(ConversionError, match=message) as caught:
        convert_digiq_pt([path], images_dir=images, cache_dir=tmp_path / "c")
    assert str(caught.value).startswith(
        f"{path}, trajectory 0, step 0, field 'image_path': {images / 'bad.png'} is "
    )


@pytest.mark.parametrize("image_path", ["../secret.png", "sub/../../secret.png"])
def test_image_paths_stay_inside_the_images_folder(
    tmp_path: Path, images: Path, image_path: str
) -> None:
    shutil.copy(SCREENS[0], tmp_path / "secret.png")
    (images / "sub").mkdir()
    path = tmp_path / "ref.pt"
    torch.save([[_step("goal", image_path, format_action(TAP), 1.0)]], path)
    with pytest.raises(ConversionError) as caught:
        convert_digiq_pt([path], images_dir=images, cache_dir=tmp_path / "c")
    assert str(caught.value) == (
        f"{path}, trajectory 0, step 0, field 'image_path': {image_path!r} leads outside the "
        f"images folder {images}"
    )


def test_repeated_episode_ids_across_reference_files_are_refused(
    tmp_path: Path, images: Path
) -> None:
    trajectory = [_step("goal", SCREENS[0].name, format_action(COMPLETE), 1.0, traj_id=3)]
    (tmp_path / "x").mkdir()
    torch.save([trajectory], tmp_path / "ref.pt")
    torch.save([trajectory], tmp_path / "x" / "ref.pt")
    with pytest.raises(
        ConversionError, match=r"x/ref.pt, trajectory 0, field 'traj_id': episode id 'ref/3'"
    ):
        convert_digiq_pt(
            [tmp_path / "ref.pt", tmp_path / "x" / "ref.pt"],
            images_dir=images,
            cache_dir=tmp_path / "c",
        )


@pytest.mark.parametrize("gamma", [math.nan, 2.0, 0.0])
def test_gamma_outside_zero_one_is_refused(tmp_path: Path, images: Path, gamma: float) -> None:
    shard = _valid_shard(tmp_path)
    message = rf"^gamma: {gamma} is not in \(0, 1\] \(the discount of returns and TD targets\)$"
    with pytest.raises(ConversionError, match=message):
        convert_aitw_tfrecord([shard], gamma=gamma, cache_dir=tmp_path / "c")
    with pytest.raises(ConversionError, match=message):
        convert_digiq_pt(
            [_reference_file(tmp_path)], images_dir=images, gamma=gamma, cache_dir=tmp_path / "c"
        )


def _truncated_gzip_shard(tmp_path: Path) -> Path:
    shard = _aitw_shard(
        tmp_path / "shard.gz", [_aitw_record(f"ep{i}", 0, 1, TAP, SCREENS[i], []) for i in range(3)]
    )
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return shard


def _empty_reference_file(tmp_path: Path) -> Path:
    torch.save([], tmp_path / "empty.pt")
    return tmp_path / "empty.pt"


def _empty_file(tmp_path: Path) -> Path:
    (tmp_path / "empty").write_bytes(b"")
    return tmp_path / "empty"


def _valid_shard(tmp_path: Path) -> Path:
    return _aitw_shard(tmp_path / "shard", [_aitw_record("ep", 0, 1, COMPLETE, SCREENS[0], [])])


BAD_INPUTS = {
    "truncated-gzip": (
        "aitw-tfrecord",
        _truncated_gzip_shard,
        r"{input}: record 1 \(byte \d+\): the gzip stream is truncated or corrupt "
        r"\(Compressed file ended",
    ),
    "empty-tfrecord": (
        "aitw-tfrecord",
        _empty_file,
        r"{input}: holds no records \(an empty TFRecord file\)",
    ),
    "empty-pt": (
        "digiq-pt",
        _empty_reference_file,
        r"{input}: holds no trajectories \(an empty list\)",
    ),
    "missing-input": (
        "aitw-tfrecord",
        lambda tmp_path: tmp_path / "nowhere",
        r"{input}: no such file",
    ),
    "directory-input": (
        "aitw-tfrecord",
        lambda tmp_path: tmp_path,
        r"{input}: is a directory or special file, not a data file",
    ),
    "gamma-nan": (
        "aitw-tfrecord",
        _valid_shard,
        r"gamma: nan is not in \(0, 1\] \(the discount of returns and TD targets\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_cli_bad_inputs_end_in_one_line_and_write_nothing(
    tmp_path: Path, convert_cli, capsys: pytest.CaptureFixture, case: str
) -> None:
    fmt, make_input, message = BAD_INPUTS[case]
    inputs = make_input(tmp_path)
    output = tmp_path / "out" / "ds"
    gamma = ["--gamma", "nan"] if case == "gamma-nan" else []
    argv = ["convert", "--format", fmt, "--input", str(inputs), "--output", str(output), *gamma]
    assert convert_cli(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("digiq-trl convert:")]
    assert len(lines) == 1 and "Traceback" not in err
    assert re.fullmatch(
        "digiq-trl convert: error: " + message.format(input=re.escape(str(inputs))) + ".*", lines[0]
    )
    assert list(output.parent.iterdir()) == []


def test_cli_read_only_output_folder_ends_in_one_line(
    tmp_path: Path, convert_cli, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    shard = _valid_shard(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: let the check see what the kernel tells other users
        access = os.access
        monkeypatch.setattr(
            staging.os, "access", lambda p, mode: Path(p) != locked and access(p, mode)
        )
    argv = [
        "convert",
        "--format",
        "aitw-tfrecord",
        "--input",
        str(shard),
        "--output",
        str(locked / "ds"),
    ]
    try:
        assert convert_cli(argv) == 1
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"digiq-trl convert: error: {locked}: not writable; choose another output"
    )


def test_cli_sweeps_the_scratch_folders_of_killed_conversions(tmp_path: Path, convert_cli) -> None:
    shard = _valid_shard(tmp_path)
    output = tmp_path / "out" / "ds"
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = output.parent / f".ds.staging-{staging._host()}-{dead.pid}-abcd1234"
    (leftover / "cache").mkdir(parents=True)
    (leftover / "cache" / "tmpk3j2h1").write_bytes(b"half an arrow file")
    argv = ["convert", "--format", "aitw-tfrecord", "--input", str(shard), "--output", str(output)]
    assert convert_cli(argv) == 0
    assert [p.name for p in output.parent.iterdir()] == ["ds"]
