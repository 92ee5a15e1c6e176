"""The adb device env: AitW coordinate mapping and text escaping on hand-written cases, and the whole
adb path proven against the simulated phone served over the adb protocol on loopback."""

import base64
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from digiq_trl.actions import ActionType, DeviceAction, format_action
from digiq_trl.cli import main
from digiq_trl.envs.android import AndroidDeviceEnv, action_commands, text_commands, to_normalized, to_pixels
from digiq_trl.envs.loopback import (
    AdbdStandIn,
    AdbServerStandIn,
    StandInPhone,
    attach_simulator,
    decode_input_text,
    split_commands,
)
from digiq_trl.envs.phone import PhoneEnv


adbutils = pytest.importorskip("adbutils", reason="the adb extra (pip install 'digiq-trl[adb]') is not installed")

SERIAL = "emulator-5554"


# ---------------------------------------------------------------------- coordinates
@pytest.mark.parametrize(("point", "size", "pixel"), [
    ((0.5, 0.25), (1080, 2400), (270, 1200)),       # AitW points are [y, x]; pixels (x, y)
    ((0.0, 0.0), (1080, 2400), (0, 0)),
    ((1.0, 1.0), (1080, 2400), (1079, 2399)),        # the bottom-right edge is the last pixel
    ((0.57, 0.57), (100, 100), (57, 57)),            # 0.57 * 100 is 56.99... in floating point
    ((0.0468, 0.9), (1080, 1920), (972, 89)),        # a point in the status bar
    ((0.52, 0.31), (112, 224), (34, 116)),           # the simulator's design size
])
def test_to_pixels_maps_normalized_yx_to_the_pixel_it_falls_in(point, size, pixel) -> None:
    assert to_pixels(point, size) == pixel


@pytest.mark.parametrize(("pixel", "size", "point"), [
    ((270, 1200), (1080, 2400), (0.5, 0.25)),
    ((0, 0), (1080, 2400), (0.0, 0.0)),
    ((540, 0), (1080, 2400), (0.0, 0.5)),
])
def test_to_normalized_is_the_inverse_on_the_pixel_grid(pixel, size, point) -> None:
    assert to_normalized(pixel, size) == point
    assert to_pixels(to_normalized(pixel, size), size) == pixel


def test_a_point_maps_back_to_its_pixels_corner_at_most_one_pixel_away() -> None:
    size = (1120, 2240)
    for y, x in np.random.default_rng(0).random((500, 2)):
        back_y, back_x = to_normalized(to_pixels((y, x), size), size)
        assert 0 <= y - back_y < 1 / size[1] and 0 <= x - back_x < 1 / size[0]


# ---------------------------------------------------------------------- text
@pytest.mark.parametrize(("text", "commands"), [
    ("", []),
    ("milk", ["input text milk"]),
    ("hello world", ["input text hello%sworld"]),                                 # a space is %s
    ("it's", ["input text 'it'\"'\"'s'"]),                                          # quotes for sh
    ('say "hi"', ["input text 'say%s\"hi\"'"]),
    ("50% off", ["input text 50%%soff"]),                                          # % then space
    ("100%sure", ["input text 100%", "input text sure"]),                          # a literal %s
    ("a;b && rm -rf /", ["input text 'a;b%s&&%srm%s-rf%s/'"]),                     # shell syntax stays text
    ("$(reboot) `id`", ["input text '$(reboot)%s`id`'"]),
    ("café", ["input text caf", "am broadcast -a ADB_INPUT_B64 --es msg w6k="]),   # non-ASCII via ADBKeyBoard
    ("東京 hotels", ["am broadcast -a ADB_INPUT_B64 --es msg 5p2x5Lqs", "input text %shotels"]),
])
def test_text_commands(text, commands) -> None:
    assert text_commands(text) == commands


def _typed(commands: list[str]) -> str:
    """What the device types for ``commands``: its shell's quoting, then ``input text`` or ADBKeyBoard."""
    typed = ""
    for command in commands:
        (argv,) = split_commands(command)
        typed += decode_input_text(argv[2]) if argv[:2] == ["input", "text"] else base64.b64decode(argv[-1]).decode()
    return typed


@pytest.mark.parametrize("text", ["it's 50% off", "%s%%s% s", "a'b\"c\\d", " lead and trail ", "naïve café 東京",
                                  "tab\there", "';rm -rf /;'", "%"])
def test_typed_text_round_trips_through_the_device_shell(text) -> None:
    assert _typed(text_commands(text)) == text


def test_action_commands() -> None:
    size = (1080, 2400)
    assert action_commands(DeviceAction.tap(0.5, 0.25), size) == ["input tap 270 1200"]
    assert action_commands(DeviceAction(ActionType.DUAL_POINT, (0.5, 0.25), (0.51, 0.25)), size) == ["input tap 270 1200"]  # AitW tap
    assert action_commands(DeviceAction.swipe((0.8, 0.5), (0.2, 0.5)), size) == ["input swipe 540 1920 540 480 400"]
    assert action_commands(DeviceAction.type_text("news Chile"), size) == ["input text news%sChile"]
    assert [action_commands(DeviceAction.press(kind), size) for kind in ActionType if kind >= 5] == [
        ["input keyevent KEYCODE_BACK"], ["input keyevent KEYCODE_HOME"], ["input keyevent KEYCODE_ENTER"], [], []]


# ---------------------------------------------------------------------- the loopback device
@pytest.fixture
def no_adb_spawned(monkeypatch: pytest.MonkeyPatch) -> None:
    """adbutils starts an adb server when none answers; make sure no test leaves one behind."""
    monkeypatch.setenv("ADBUTILS_ADB_PATH", "/bin/false")


def _device_env(server: AdbServerStandIn, serial: str = SERIAL, **kwargs) -> AndroidDeviceEnv:
    return attach_simulator(AndroidDeviceEnv(serial, settle_s=0.0, timeout_s=5.0,
                                             adb_server=("127.0.0.1", server.port), **kwargs))


@pytest.mark.parametrize(("suite", "phone"), [("general", "target"), ("webshop", "source")])
def test_the_expert_gets_the_same_screens_and_rewards_over_adb_as_in_the_simulator(
        suite: str, phone: str, no_adb_spawned: None) -> None:
    stand_in = StandInPhone(4, suite=suite, split="test", phone=phone)
    with AdbServerStandIn({SERIAL: stand_in}, lifetime_s=60) as server:
        device = _device_env(server, suite=suite)
        sim = PhoneEnv(suite=suite, split="test", phone=phone)
        for episode in range(2):
            expected, info = sim.reset(seed=episode)
            seen, device_info = device.reset(seed=episode)
            assert "error" not in device_info and seen["goal"] == expected["goal"]
            done = False
            while not done:
                action = info["expert_action"]
                expected, reward, terminated, truncated, info = sim.step(action)
                seen, device_reward, *ends, device_info = device.step(action)
                assert np.array_equal(np.asarray(seen["image"]), np.asarray(expected["image"]))
                assert (seen["history"], device_reward, *ends) == (expected["history"], reward, terminated, truncated)
                done = terminated or truncated
            assert device_info["judge"]["success"] and device_info["success"]
    home = "input keyevent KEYCODE_HOME"
    resets = [line for line in stand_in.log if line.endswith(home)]
    assert len(resets) == 2 and "am force-stop com.android.chrome" in resets[0]


def test_a_status_action_ends_the_episode_and_sends_nothing(no_adb_spawned: None) -> None:
    stand_in = StandInPhone(2, split="test")
    with AdbServerStandIn({SERIAL: stand_in}, lifetime_s=60) as server:
        device = _device_env(server)
        device.reset(seed=0)
        sent = len(stand_in.log)
        _, reward, terminated, _, info = device.step(format_action(DeviceAction.press(ActionType.STATUS_TASK_COMPLETE)))
    assert terminated and reward == 0.0 and not info["success"]
    assert stand_in.log[sent:] == ["screencap -p", "digiq-phone verdict"]


@pytest.fixture(scope="module")
def actor() -> tuple:
    """The shipped tiny actor and its processor, loaded once."""
    from transformers import AutoModelForImageTextToText

    from digiq_trl.models.pretrained import resolve_pretrained
    from digiq_trl.models.processing import load_processor

    name = "digiq-trl/phone-actor-tiny"
    return AutoModelForImageTextToText.from_pretrained(resolve_pretrained(name)), load_processor(name)


def _actor_outcomes(actor: tuple, env, episodes: int = 3) -> list[tuple]:
    """The actor's (goal, success, steps) on the first test goals, sampling at T = 0.8 (the paper's protocol)."""
    import torch

    from digiq_trl.envs.tasks import load_goals
    from digiq_trl.models.policy import VLMPolicy

    torch.manual_seed(0)
    policy = VLMPolicy(*actor, temperature=0.8, batch_size=1)
    records = _play([env], policy, episodes, goals=load_goals("general", "test")[:episodes])
    return [(r["goal"], r["success"], r["steps"]) for r in records]


def test_the_actor_gets_the_same_outcomes_over_adb_as_in_the_simulator(actor: tuple, no_adb_spawned: None) -> None:
    expected = _actor_outcomes(actor, PhoneEnv(split="test", phone="target"))
    with AdbServerStandIn({SERIAL: StandInPhone(4, split="test", phone="target")}, lifetime_s=120) as server:
        assert _actor_outcomes(actor, _device_env(server)) == expected
    assert [goal for goal, _, _ in expected] == [
        "Search for hotels in Washington DC", "What's the news in India?",
        "How much does a 2 bedroom apartment rent for in Philadelphia?"]


def _evaluate(tmp_path: Path, name: str, env: str, *extra: str) -> dict:
    one_phone = ["--batch-size", "1"] if env == "sim" else ["--settle", "0", "--step-timeout", "5"]
    assert main(["evaluate", "--env", env, "--output", str(tmp_path / name), *one_phone, *extra]) == 0
    return json.loads((tmp_path / name / "results.json").read_text())


def _outcomes(results: dict) -> list[tuple]:
    return [(e["goal"], e["success"], e["steps"]) for e in results["episodes"]]


@pytest.mark.slow
def test_digiq_trl_evaluate_gives_the_same_outcomes_over_adb_and_writes_its_files(
        tmp_path: Path, no_adb_spawned: None) -> None:
    protocol = ["--protocol", "paper", "--episodes", "3", "--phone", "target"]
    sim = _evaluate(tmp_path, "sim", "sim", *protocol)
    with AdbServerStandIn({SERIAL: StandInPhone(4, split="test", phone="target")}, lifetime_s=120) as server:
        adb = _evaluate(tmp_path, "adb", f"adb:{SERIAL}", "--adb-server", f"127.0.0.1:{server.port}",
                        "--judge", "simulator", *protocol)
    assert _outcomes(adb) == _outcomes(sim)
    assert (adb["temperature"], adb["split"], adb["horizon"], adb["num_episodes"]) == (0.8, "test", 10, 3)
    assert all(e["judge"]["reasoning"].startswith("simulator: goal") for e in adb["episodes"])
    lines = (tmp_path / "adb" / "episodes.jsonl").read_text().splitlines()
    assert [json.loads(line)["episode"] for line in lines] == [0, 1, 2]
    page = (tmp_path / "adb" / "viewer.html").read_text()
    assert "simulator: goal" in page and "Judge: " in page
    assert (tmp_path / "adb" / "report.md").read_text().startswith("# Evaluation: digiq-trl/phone-actor-tiny")


@pytest.mark.slow
def test_thirty_test_goals_give_the_same_outcomes_over_adb_as_in_the_simulator(
        tmp_path: Path, no_adb_spawned: None) -> None:
    protocol = ["--protocol", "paper", "--episodes", "30"]
    sim = _evaluate(tmp_path, "sim", "sim", *protocol)
    with AdbServerStandIn({SERIAL: StandInPhone(split="test")}, lifetime_s=600) as server:
        adb = _evaluate(tmp_path, "adb", f"adb:{SERIAL}", "--adb-server", f"127.0.0.1:{server.port}",
                        "--judge", "simulator", *protocol)
    assert _outcomes(adb) == _outcomes(sim)
    assert 0 < adb["success_rate"] < 1  # the comparison covers successes and failures


# ---------------------------------------------------------------------- bad device input
class Faulty:
    """The tiny stand-in of an actor: taps the centre; on its ``at``-th call it breaks something."""

    def __init__(self, at: int, fault) -> None:
        self.calls, self.at, self.fault = 0, at, fault

    def act(self, observations, infos) -> list[str]:
        self.calls += 1
        if self.calls == self.at:
            self.fault()
        return [format_action(DeviceAction.tap(0.5, 0.5))] * len(observations)


def _play(envs, policy, episodes: int, goals=None) -> list[dict]:
    from digiq_trl.envs.collect import run_episodes
    from digiq_trl.evaluation import episode_records

    return [record for _, record in sorted(episode_records(run_episodes(envs, policy, episodes, goals=goals)))]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "digiq_trl.envs.android"]


def test_no_device_ends_each_episode_with_an_error_and_one_line(caplog, no_adb_spawned: None) -> None:
    with AdbServerStandIn({}, lifetime_s=60) as server:
        records = _play([_device_env(server, serial="emulator-5556")], Faulty(0, None), 2)
    assert [(r["success"], r["steps"]) for r in records] == [(False, 0), (False, 0)]
    assert all("device 'emulator-5556' not found" in r["error"] for r in records)
    lines = _warnings(caplog)
    assert len(lines) == 2 and all("\n" not in line and "emulator-5556" in line for line in lines)


def test_no_adb_server_is_reported_and_none_is_started(caplog, no_adb_spawned: None) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = AndroidDeviceEnv(SERIAL, settle_s=0.0, timeout_s=1.0, adb_server=("127.0.0.1", port))
    (record,) = _play([env], Faulty(0, None), 1)
    assert f"no adb server at 127.0.0.1:{port}" in record["error"] and not record["success"]


def test_a_device_gone_mid_episode_ends_it_and_the_other_device_plays_on(caplog, no_adb_spawned: None) -> None:
    phones = {serial: StandInPhone(2, split="test") for serial in (SERIAL, "emulator-5556")}
    with AdbServerStandIn(phones, lifetime_s=60) as server:
        envs = [_device_env(server, serial=serial) for serial in phones]
        records = _play(envs, Faulty(2, lambda: server.unplug("emulator-5556")), 4)
    assert len(records) == 4 and not any(r["success"] for r in records)
    failed = [r for r in records if "error" in r]
    assert [r["steps"] for r in failed] == [2, 0]  # gone at its second step; its next reset failed too
    assert sum(r["steps"] == 10 for r in records) == 2  # the other device played the rest to the horizon
    assert len(_warnings(caplog)) == 2


def test_an_undecodable_screenshot_ends_that_episode_only(caplog, no_adb_spawned: None) -> None:
    phone = StandInPhone(2, split="test")
    with AdbServerStandIn({SERIAL: phone}, lifetime_s=60) as server:
        records = _play([_device_env(server)], Faulty(3, lambda: setattr(phone, "corrupt_screenshots", 1)), 2)
    assert "the screenshot is not an image" in records[0]["error"] and records[0]["steps"] == 3
    assert "error" not in records[1] and records[1]["steps"] == 10
    (line,) = _warnings(caplog)
    assert "\n" not in line


def test_a_device_that_hangs_past_the_step_timeout_ends_the_episode(caplog, no_adb_spawned: None) -> None:
    phone = StandInPhone(2, split="test")
    with AdbServerStandIn({SERIAL: phone}, lifetime_s=60) as server:
        env = _device_env(server)
        env.reset(seed=0)
        env.timeout_s, answer = 0.3, phone.run
        phone.run = lambda line: time.sleep(1) or answer(line)
        _, reward, terminated, truncated, info = env.step(format_action(DeviceAction.tap(0.5, 0.5)))
    assert (reward, terminated, truncated) == (0.0, True, False) and "timeout" in info["error"]


def test_collect_on_a_device_keeps_complete_episodes_only(tmp_path: Path, no_adb_spawned: None, capsys) -> None:
    from datasets import load_from_disk

    phone = StandInPhone(2, split="train")
    with AdbServerStandIn({SERIAL: phone}, lifetime_s=60) as server:
        assert main(["collect", "--env", f"adb:{SERIAL}", "--adb-server", f"127.0.0.1:{server.port}", "--judge",
                     "simulator", "--settle", "0", "--policy", "random", "--episodes", "3", "--seed", "1",
                     "--output", str(tmp_path / "data")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    data = load_from_disk(str(tmp_path / "data"))
    assert summary["episodes"] == 3 and summary["device_errors"] == 0
    assert set(data["episode_id"]) == {f"device-general-train-seed1-ep{i:06d}" for i in range(3)}
    assert data[0]["image"].size == (112, 224) and data[0]["ui_boxes"] == []


def test_expert_policies_are_refused_on_a_device() -> None:
    with pytest.raises(SystemExit, match="reads the simulator's expert"):
        main(["collect", "--env", f"adb:{SERIAL}", "--judge", "simulator", "--policy", "expert", "--episodes", "1",
              "--output", "unused"])
    with pytest.raises(SystemExit, match="choose a judge"):
        main(["evaluate", "--env", f"adb:{SERIAL}", "--output", "unused"])


# ---------------------------------------------------------------------- the real adb server
def _adb() -> str:
    """The adb binary adbutils uses (on PATH, else the one in its wheel), if it runs here."""
    try:
        path = adbutils.adb_path()
        subprocess.run([path, "version"], check=True, capture_output=True, timeout=10)
    except (adbutils.AdbError, OSError, subprocess.SubprocessError):
        pytest.skip("no runnable adb binary (install the distribution's `adb` package)")
    return path


@pytest.fixture
def adb_server(tmp_path: Path) -> int:
    """A real adb server on a free 127.0.0.1 port, in the foreground, stopped after the test (60 s at most)."""
    adb = _adb()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "ANDROID_USER_HOME": str(home / ".android"), "ADB_MDNS": "0"}
    server = subprocess.Popen(["timeout", "60", adb, "-P", str(port), "nodaemon", "server"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the adb server did not start")
                time.sleep(0.05)
        yield port
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.slow
def test_through_the_real_adb_server_the_actor_gets_the_simulators_outcomes(
        actor: tuple, adb_server: int, no_adb_spawned: None) -> None:
    expected = _actor_outcomes(actor, PhoneEnv(split="test"), episodes=2)
    with AdbdStandIn(StandInPhone(4, split="test"), lifetime_s=60) as device:
        client = adbutils.AdbClient(port=adb_server)
        serial = f"127.0.0.1:{device.port}"
        assert client.connect(serial, timeout=10).startswith("connected")
        deadline = time.monotonic() + 10
        while not any(d.serial == serial and d.state == "device" for d in client.list()):
            assert time.monotonic() < deadline, client.list()
            time.sleep(0.05)
        env = attach_simulator(AndroidDeviceEnv(serial, settle_s=0.0, timeout_s=5.0,
                                                adb_server=("127.0.0.1", adb_server)))
        assert _actor_outcomes(actor, env, episodes=2) == expected


def test_the_stand_in_answers_unknown_commands_like_a_shell(no_adb_spawned: None) -> None:
    phone = StandInPhone(2)
    assert phone.run("settings get global wifi_on") == b"/system/bin/sh: settings: inaccessible or not found\n"
    assert phone.run("input tap x y").startswith(b"input: bad arguments")
    with pytest.raises(ValueError):
        split_commands("input text 'unbalanced")
