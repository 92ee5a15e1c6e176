"""The target phone: version drift, interruptions, the expert that handles them, failure modes."""

import gymnasium as gym
import numpy as np
import pytest

import digiq_trl.envs  # noqa: F401  (registers the environments)
from digiq_trl.actions import ActionType, DeviceAction, format_action
from digiq_trl.diagnostics import state_classes
from digiq_trl.envs import ExpertPolicy, PhoneEnv
from digiq_trl.envs.device import Device, Layout, Screen, element_named
from digiq_trl.envs.failures import FAILURE_MODES, failure_mode
from digiq_trl.envs.target_phone import DRIFT_HOME_SWAPS, DRIFT_SEARCH_ICON_APPS, OVERLAYS, Interruption
from digiq_trl.envs.tasks import parse_goal
from digiq_trl.evaluation import evaluate_policy


BACK = DeviceAction.press(ActionType.PRESS_BACK)
HOME = DeviceAction.press(ActionType.PRESS_HOME)
ENTER = DeviceAction.press(ActionType.PRESS_ENTER)


def tap(env: PhoneEnv, name: str) -> DeviceAction:
    element = element_named(env.device.elements(), name)
    assert element is not None, f"{name} not on screen {env.device.screen}"
    return DeviceAction.tap(*element.center)


def target_env(goal: str, kind: str | None = None, after: int = 1, drift: bool = True) -> PhoneEnv:
    env = PhoneEnv(phone="target", drift=drift, interruption_probability=0.0)
    env.reset(seed=0, options={"goal": goal})
    env.device.interruption = Interruption(kind, after) if kind else None
    return env


def test_registered_ids_name_the_phone() -> None:
    source = gym.make("digiq_trl/Phone-general-v0").unwrapped
    target = gym.make("digiq_trl/Phone-general-target-v0").unwrapped
    assert (source.drift, source.interruption_probability) == (False, 0.0)
    assert target.drift and target.interruption_probability > 0
    assert target.config["phone"] == "target"


def test_source_phone_is_unchanged_by_the_target_options() -> None:
    plain, source = PhoneEnv(), PhoneEnv(phone="source")
    for seed in range(5):
        a, _ = plain.reset(seed=seed)
        b, _ = source.reset(seed=seed)
        assert a["goal"] == b["goal"] and a["image"].tobytes() == b["image"].tobytes()


def test_drift_moves_home_icons_settings_rows_and_search_fields() -> None:
    source, drifted = Layout.fixed(), Layout.fixed().drifted()
    for a, b in DRIFT_HOME_SWAPS:
        assert drifted.home_order.index(a) == source.home_order.index(b)
    assert drifted.settings_order != source.settings_order
    assert sorted(drifted.settings_order) == sorted(source.settings_order)
    moved = drifted.moved_elements(source)
    assert {f"app:{a}" for pair in DRIFT_HOME_SWAPS for a in pair} <= moved
    assert "app:Chrome" not in moved and {f"field:{app}" for app in DRIFT_SEARCH_ICON_APPS} <= moved


def test_a_drifted_app_hides_its_field_behind_a_search_icon() -> None:
    env = target_env("Play the new Taylor Swift video on YouTube")
    env.step(tap(env, "app:YouTube"))
    names = [e.name for e in env.device.elements()]
    assert "search_icon" in names and "field" not in names
    _, _, _, _, info = env.step(tap(env, "search_icon"))
    assert env.device.screen.keyboard and info["screen"] == "search"


@pytest.mark.parametrize("kind", OVERLAYS)
def test_an_overlay_blocks_everything_but_its_controls_and_the_expert_closes_it(kind: str) -> None:
    env = target_env("What's the news in Chile?", kind)
    _, _, _, _, info = env.step(tap(env, "app:Chrome"))
    assert info["overlay"] == kind and state_classes(info) == ["overlay shown"]
    assert all(e.name.startswith("overlay:") for e in env.device.elements())
    before = env.render().tobytes()
    env.step(DeviceAction.type_text("news Chile"))
    env.step(DeviceAction.swipe((0.8, 0.5), (0.2, 0.5)))
    assert env.device.screen.overlay == kind and env.render().tobytes() == before
    obs, _, _, _, info = env.step(info["expert_action"])
    assert env.device.screen.overlay == "" and info["overlay"] == ""


def test_back_closes_dialogs_but_not_the_consent_sheet_or_the_ad() -> None:
    for kind in OVERLAYS:
        env = target_env("Open the settings app", kind)
        env.step(tap(env, "app:Settings"))
        env.step(BACK)
        assert (env.device.screen.overlay == "") == (kind in ("permission", "rating")), kind


def test_tapping_the_ad_opens_its_page_and_back_returns_without_it() -> None:
    env = target_env("Install the Spotify app", "ad")
    env.step(tap(env, "app:Play Store"))
    _, _, _, _, info = env.step(DeviceAction.tap(0.5, 0.5))
    assert info["screen"] == "ad" and info["expert_action"] == format_action(BACK)
    _, _, _, _, info = env.step(BACK)
    assert info["screen"] == "search" and info["overlay"] == ""


def test_no_success_while_an_overlay_covers_the_finished_task() -> None:
    env = target_env("Open the calculator", "consent")
    _, reward, terminated, _, info = env.step(tap(env, "app:Calculator"))
    assert (reward, terminated, info["success"]) == (0.0, False, False)
    _, reward, terminated, _, _ = env.step(tap(env, "overlay:accept"))
    assert (reward, terminated) == (1.0, True)


def test_an_interruption_opens_over_the_chosen_screen_once() -> None:
    env = target_env("What's the news in Chile?", "rating", after=2)
    env.step(tap(env, "app:Chrome"))
    assert env.device.screen.overlay == ""
    env.step(tap(env, "field"))  # focusing a field opens no screen
    env.step(DeviceAction.type_text("news Chile"))
    env.step(ENTER)
    assert env.device.screen.overlay == "rating" and env.device.screen.kind == "results"
    env.step(BACK)
    env.step(BACK)  # back to the search screen: returning is not opening
    assert env.device.screen.overlay == ""


def test_interruptions_follow_the_probability_and_the_seed() -> None:
    env = PhoneEnv(phone="target", interruption_probability=0.5)
    drawn = []
    for seed in range(200):
        env.reset(seed=seed)
        drawn.append(env.device.interruption)
    shown = [i for i in drawn if i is not None]
    assert 70 < len(shown) < 130 and {i.kind for i in shown} == set(OVERLAYS) and {i.after for i in shown} == {1, 2}
    env.reset(seed=3)
    first = env.device.interruption
    env.reset(seed=3)
    assert env.device.interruption == first


@pytest.mark.parametrize(("suite", "probability"), [("general", 1.0), ("webshop", 1.0), ("general", 0.5)])
def test_the_expert_solves_every_target_goal(suite: str, probability: float) -> None:
    result = evaluate_policy(ExpertPolicy(), suite, split="train", num_episodes=60, seed=2, phone="target",
                             interruption_probability=probability)
    assert result["success_rate"] == 1.0
    assert any(e["interruption"] for e in result["episodes"])


def test_moved_elements_are_marked_for_the_expert_target() -> None:
    env = target_env("Install the Spotify app")
    info = env._info(valid=True)
    assert info["expert_target_moved"] and state_classes(info) == ["moved element"]
    env = target_env("What's the news in Chile?")
    assert not env._info(valid=True)["expert_target_moved"]


def test_failure_modes_of_hand_made_end_states() -> None:
    search = parse_goal("What's the news in Chile?")
    device = Device(Layout.fixed())
    assert failure_mode(search, device, stopped=True) == "gave up early"
    assert failure_mode(search, device, stopped=False) == "ran out of steps"
    device.stack.append(Screen("search", app="Chrome", overlay="ad"))
    assert failure_mode(search, device, stopped=False) == "overlay never dismissed"
    device.stack[-1] = Screen("search", app="Chrome", text="news in chile", focused=True)
    assert failure_mode(search, device, stopped=False) == "never submitted"
    device.stack[-1] = Screen("results", app="Chrome", query="weather")
    assert failure_mode(search, device, stopped=False) == "wrong or missing query"
    device.stack[-1] = Screen("app", app="Gmail")
    assert failure_mode(search, device, stopped=False) == "wrong element tapped"
    settings = parse_goal("Check the settings for the Spotify app")
    device.stack[-1] = Screen("app_settings", app="Settings", target="Zoom")
    assert failure_mode(settings, device, stopped=False) == "wrong element tapped"


def test_every_failed_episode_gets_a_mode() -> None:
    rng = np.random.default_rng(0)

    class Home:
        def act(self, observations, infos):
            return [format_action(HOME if rng.random() < 0.5 else BACK) for _ in observations]

    result = evaluate_policy(Home(), "general", num_episodes=20, phone="target")
    failed = [e for e in result["episodes"] if not e["success"]]
    assert failed and all(e["failure_mode"] in FAILURE_MODES for e in failed)
    assert sum(result["failure_modes"].values()) == len(failed)
