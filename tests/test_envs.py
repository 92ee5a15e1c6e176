"""The simulated phone: Gymnasium API, Android-like dynamics, suites, splits and the expert."""

import gymnasium as gym
import numpy as np
import pytest

import digiq_trl.envs  # noqa: F401  (registers the environments)
from digiq_trl.actions import ActionType, DeviceAction, parse_action
from digiq_trl.envs import PhoneEnv, load_goals, parse_goal, random_action
from digiq_trl.envs.device import SETTINGS_APPS, Device, Layout, element_named
from digiq_trl.envs.expert import OPEN_SHADE, SCROLL_DOWN, SCROLL_UP, expert_action
from digiq_trl.envs.tasks import is_success, query_matches, with_pseudo_entities


BACK = DeviceAction.press(ActionType.PRESS_BACK)
HOME = DeviceAction.press(ActionType.PRESS_HOME)
ENTER = DeviceAction.press(ActionType.PRESS_ENTER)


def tap_element(env: PhoneEnv, name: str) -> DeviceAction:
    """A tap on the centre of the named on-screen element (fails the test if it is absent)."""
    element = element_named(env.device.elements(), name)
    assert element is not None, f"{name} not on screen {env.device.screen}"
    return DeviceAction.tap(*element.center)


def play(env: PhoneEnv, *steps: str | DeviceAction) -> tuple:
    """Step through ``steps`` (element names are tapped when reached); returns the last step's result."""
    result = None
    for step in steps:
        result = env.step(tap_element(env, step) if isinstance(step, str) else step)
    return result


def pixels(obs: dict) -> bytes:
    return obs["image"].tobytes()


@pytest.fixture
def env() -> PhoneEnv:
    return PhoneEnv("general")


def test_gym_make_both_suites_and_observation_format():
    for suite, horizon in (("general", 10), ("webshop", 20)):
        env = gym.make(f"digiq_trl/Phone-{suite}-v0")
        obs, info = env.reset(seed=3)
        assert env.unwrapped.horizon == horizon
        assert obs["image"].mode == "RGB" and obs["image"].size == (112, 224)
        assert obs["goal"] in load_goals(suite, "train") and obs["history"] == ""
        assert obs in env.observation_space
        assert parse_action(info["expert_action"]).action_type == ActionType.DUAL_POINT
        assert info["success"] is False and info["valid_action"] is True
        assert info["ui_boxes"] and all(0.0 <= v <= 1.0 for box in info["ui_boxes"] for v in box)


def test_env_checker_passes():
    from gymnasium.utils.env_checker import check_env

    check_env(PhoneEnv("webshop"), skip_render_check=True)


def test_reset_is_deterministic_by_seed():
    a, b = PhoneEnv("general", layout="random"), PhoneEnv("general", layout="random")
    obs_a, info_a = a.reset(seed=7)
    obs_b, info_b = b.reset(seed=7)
    assert obs_a["goal"] == obs_b["goal"] and pixels(obs_a) == pixels(obs_b) and info_a == info_b
    goals = {a.reset(seed=s)[0]["goal"] for s in range(12)}
    assert len(goals) > 6
    layouts = {a.reset(seed=s)[1]["expert_action"] for s in range(6)}
    assert len(layouts) > 1, "random layout should move the icons between episodes"


def test_custom_size_and_goal_option():
    env = PhoneEnv("webshop", width=56, height=112)
    obs, _ = env.reset(seed=0, options={"goal": "Go to ebay.com"})
    assert obs["goal"] == "Go to ebay.com" and obs["image"].size == (56, 112)


def test_tap_opens_app_and_completes_open_task(env):
    env.reset(seed=0, options={"goal": "Open the calculator"})
    obs, reward, terminated, truncated, info = env.step(tap_element(env, "app:Calculator"))
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["success"] and info["screen"] == "app" and env.device.screen.app == "Calculator"
    assert obs["history"].startswith("tap [")


def test_tap_on_empty_space_changes_nothing(env):
    obs, _ = env.reset(seed=0, options={"goal": "Open the calculator"})
    obs2, reward, *_ = env.step(DeviceAction.tap(0.03, 0.5))
    assert pixels(obs) == pixels(obs2) and reward == 0.0


def test_search_flow_focus_type_enter(env):
    goal = "What's the news in Chile?"
    obs, _ = env.reset(seed=0, options={"goal": goal})
    env.step(tap_element(env, "app:Chrome"))
    assert env.device.screen.kind == "search" and not env.device.screen.focused
    before = env.step(DeviceAction.type_text("news Chile"))[0]
    assert env.device.screen.text == "", "TYPE without a focused field must be wasted"
    focused = env.step(tap_element(env, "field"))[0]
    assert env.device.screen.focused and pixels(focused) != pixels(before)
    typed = env.step(DeviceAction.type_text("news Chile"))[0]
    assert env.device.screen.text == "news Chile" and pixels(typed) != pixels(focused)
    obs, reward, terminated, _, info = env.step(ENTER)
    assert info["screen"] == "results" and env.device.screen.query == "news Chile"
    assert reward == 1.0 and terminated


def test_enter_without_focus_or_text_is_a_no_op(env):
    env.reset(seed=0, options={"goal": "What's the news in Chile?"})
    env.step(tap_element(env, "app:Chrome"))
    env.step(ENTER)
    env.step(tap_element(env, "field"))
    env.step(ENTER)
    assert env.device.screen.kind == "search" and len(env.device.stack) == 2


def test_wrong_query_is_recoverable_with_clear(env):
    env.reset(seed=0, options={"goal": "What's the news in Chile?"})
    _, reward, terminated, _, info = play(env, "app:Chrome", "field", DeviceAction.type_text("cats"), ENTER)
    assert info["screen"] == "results" and reward == 0.0 and not terminated
    assert parse_action(info["expert_action"]) == tap_element(env, "clear")
    env.step(tap_element(env, "clear"))
    assert env.device.screen.text == "" and env.device.screen.focused


def test_back_hides_keyboard_then_pops_and_home_resets(env):
    env.reset(seed=0, options={"goal": "What's the news in Chile?"})
    play(env, "app:Chrome", "field", DeviceAction.type_text("cats"), ENTER, "field", BACK)
    assert env.device.screen.kind == "results" and not env.device.screen.focused
    env.step(BACK)
    assert env.device.screen.kind == "search"
    env.step(HOME)
    assert env.device.stack[-1].kind == "home" and len(env.device.stack) == 1
    env.step(BACK)
    assert env.device.screen.kind == "home"


def test_swipes_scroll_lists_and_open_the_shade(env):
    env.reset(seed=0, options={"goal": "Check the settings for the Zoom app"})
    env.step(tap_element(env, "app:Settings"))
    first = env.device.elements()[0]
    env.step(SCROLL_DOWN)
    assert env.device.screen.scroll == 8
    env.step(SCROLL_DOWN)
    env.step(SCROLL_DOWN)
    assert env.device.screen.scroll == len(SETTINGS_APPS) - 8, "scrolling stops at the end"
    env.step(SCROLL_UP)
    assert env.device.screen.scroll == 8
    env.step(DeviceAction.swipe((0.5, 0.2), (0.5, 0.8)))
    assert env.device.screen.scroll == 8, "horizontal swipes do not scroll"
    env.step(OPEN_SHADE)
    assert env.device.shade_open and env.device.elements() == []
    env.step(BACK)
    assert not env.device.shade_open and env.device.elements()[0].name == first.name


def test_toggle_and_settings_page(env):
    env.reset(seed=0, options={"goal": "Turn on notifications for the Google Maps app"})
    assert env.device.notifications["Google Maps"] is False
    index = SETTINGS_APPS.index("Google Maps")
    env.step(tap_element(env, "app:Settings"))
    env.step(SCROLL_DOWN)
    _, reward, *_ = env.step(tap_element(env, f"setting:{index - 8}"))
    assert env.device.screen.target == "Google Maps" and reward == 0.0
    _, reward, terminated, _, _ = env.step(tap_element(env, "toggle"))
    assert env.device.notifications["Google Maps"] is True and reward == 1.0 and terminated


def test_invalid_actions_are_wasted_steps(env):
    obs, _ = env.reset(seed=0, options={"goal": "Open the calculator"})
    for bad in ("tap the calculator", "", 'Action Decision: "action_type": "FLY"', DeviceAction.tap(1.5, 0.2)):
        obs2, reward, terminated, truncated, info = env.step(bad)
        assert info["valid_action"] is False and reward == 0.0 and not terminated
        assert pixels(obs2) == pixels(obs) and obs2["history"] == ""
    assert env.steps == 4


def test_episode_truncates_exactly_at_horizon():
    env = PhoneEnv("general", horizon=5)
    env.reset(seed=0, options={"goal": "Open the calculator"})
    flags = [env.step(BACK)[2:4] for _ in range(5)]
    assert flags[:-1] == [(False, False)] * 4 and flags[-1] == (False, True)


def test_status_actions_end_the_episode_without_reward(env):
    env.reset(seed=0, options={"goal": "Open the calculator"})
    _, reward, terminated, truncated, _ = env.step(DeviceAction.press(ActionType.STATUS_TASK_COMPLETE))
    assert (reward, terminated, truncated) == (0.0, True, False)


def test_webshop_flow_to_first_entry():
    env = PhoneEnv("webshop")
    goal = 'Go to costco.com, search for "razer kraken", and select the first entry'
    _, info = env.reset(seed=0, options={"goal": goal})
    kinds, rewards = [], []
    for _ in range(20):
        _, reward, terminated, truncated, info = env.step(info["expert_action"])
        kinds.append(info["screen"])
        rewards.append(reward)
        if terminated or truncated:
            break
    assert kinds == ["search", "search", "search", "site", "site", "site", "results", "product"]
    assert rewards == [0.0] * 7 + [1.0]


@pytest.mark.parametrize("suite", ["general", "webshop"])
@pytest.mark.parametrize("layout", ["fixed", "random"])
def test_expert_solves_every_goal_within_the_horizon(suite, layout):
    horizon = {"general": 10, "webshop": 20}[suite]
    goals = sorted({g for split in ("train", "test", "heldout") for g in load_goals(suite, split)})
    rng = np.random.default_rng(0)
    for goal in goals:
        task = parse_goal(goal).resolve(rng)
        device = Device(Layout.random(rng) if layout == "random" else Layout.fixed(), task.initial_notifications())
        assert not is_success(task, device), goal
        for _ in range(horizon):
            device.apply(expert_action(task, device))
            if is_success(task, device):
                break
        assert is_success(task, device), f"expert failed {goal!r}"


def test_expert_recovers_from_random_detours():
    env = PhoneEnv("webshop")
    rng = np.random.default_rng(1)
    for seed in range(15):
        _, info = env.reset(seed=seed)
        for _ in range(4):
            action = random_action(rng, env.task.goal)
            if action.action_type in (ActionType.STATUS_TASK_COMPLETE, ActionType.STATUS_TASK_IMPOSSIBLE):
                continue
            _, _, terminated, _, info = env.step(action)
            if terminated:
                break
        for _ in range(12):
            if info["success"]:
                break
            _, _, _, _, info = env.step(info["expert_action"])
        assert info["success"], env.task.goal


def test_goal_templates():
    assert parse_goal("Install the Spotify app").kind == "install"
    assert parse_goal("Checkthe settings for the Amazon Prime Music app").app == "Amazon Prime Music"
    assert parse_goal("Toggle notifications for the Google Photos app").kind == "toggle"
    assert parse_goal("Play the new Drake video on YouTube").query == "Drake"
    assert parse_goal("Open a new incognito tab in Chrome").incognito is True
    assert parse_goal("Open the downloads").app == "Files"
    assert parse_goal("Search for coffee shops on Maps").app == "Maps"
    assert parse_goal("What's the news in Chile?").query == "news Chile"
    shop = parse_goal("Go to ebay.com, search for 'usb-a to usb-b', and select the first entry")
    assert (shop.kind, shop.site, shop.query) == ("site_first", "ebay.com", "usb-a to usb-b")
    assert parse_goal("Book a flight to Mars").kind == "search"
    assert query_matches("Chile news today", "news in Chile") and not query_matches("news", "news in Chile")
    for goal in load_goals("general", "test"):
        if "settings for" in goal or "notifications for" in goal:
            assert parse_goal(goal).kind in ("app_settings", "toggle"), goal


def test_splits_heldout_is_disjoint_from_train():
    for suite in ("general", "webshop"):
        train, test, heldout = (set(load_goals(suite, s)) for s in ("train", "test", "heldout"))
        assert heldout and not heldout & train
        share = len(heldout) / len(train | test | heldout)
        assert 0.1 < share < 0.25
        assert len(load_goals(suite, "test")) == {"general": 432, "webshop": 360}[suite]
    with pytest.raises(ValueError):
        PhoneEnv("general", split="validation")


def test_expert_taps_land_in_reported_boxes():
    env = PhoneEnv("general")
    for seed in range(10):
        _, info = env.reset(seed=seed)
        action = parse_action(info["expert_action"])
        if action.is_tap:
            y, x = action.touch_point
            assert any(b[0] <= y <= b[0] + b[2] and b[1] <= x <= b[1] + b[3] for b in info["ui_boxes"])


def test_pseudo_entity_variants_keep_the_template_and_force_copying() -> None:
    goals = ("What's the news in Chile?", "Play the new Drake video on YouTube", "Open the camera")
    extended = with_pseudo_entities(goals, seed=1, word_probability=1.0)
    assert extended[:3] == goals and len(extended) == 5  # one variant per search / video goal
    for real, variant in zip(goals[:2], extended[3:]):
        assert parse_goal(variant).kind == parse_goal(real).kind
        assert parse_goal(variant).query != parse_goal(real).query
        assert set(parse_goal(variant).query.split()) <= set(variant.strip("?").split())  # copied from the goal
    assert with_pseudo_entities(goals, seed=1) == with_pseudo_entities(goals, seed=1)


def test_phone_with_pseudo_entities_plays_the_variants_to_success() -> None:
    env = gym.make("digiq_trl/Phone-general-v0", split="train", pseudo_entities=True).unwrapped
    assert len(env.goals) > len(load_goals("general", "train"))
    variant = env.goals[-1]
    obs, info = env.reset(seed=0, options={"goal": variant})
    for _ in range(env.horizon):
        obs, reward, terminated, truncated, info = env.step(info["expert_action"])
        if terminated or truncated:
            break
    assert reward == 1.0 and obs["goal"] == variant


def test_image_spaces_of_one_size_are_equal() -> None:
    from digiq_trl.envs.phone import ImageSpace

    assert ImageSpace(112, 224) == ImageSpace(112, 224)
    assert hash(ImageSpace(112, 224)) == hash(ImageSpace(112, 224))
    assert ImageSpace(112, 224) != ImageSpace(224, 112)
    assert PhoneEnv("general").observation_space == PhoneEnv("webshop").observation_space


@pytest.mark.parametrize("mode, kwargs", [("sync", {}), ("async", {"shared_memory": False})])
def test_make_vec_plays_expert_episodes_like_single_phones(mode: str, kwargs: dict) -> None:
    from digiq_trl.envs.collect import episode_seed

    seeds = [episode_seed(0, i) for i in range(4)]
    envs = gym.make_vec("digiq_trl/Phone-general-v0", num_envs=4, vectorization_mode=mode, vector_kwargs=kwargs)
    obs, info = envs.reset(seed=seeds)
    singles = [PhoneEnv("general").reset(seed=s)[0]["goal"] for s in seeds]
    assert list(obs["goal"]) == singles
    assert all(image.size == (112, 224) for image in obs["image"])
    ended, succeeded = np.zeros(4, dtype=bool), np.zeros(4, dtype=bool)
    for _ in range(10):  # the General suite's horizon; the expert solves every goal within it
        obs, reward, terminated, truncated, info = envs.step(info["expert_action"])
        succeeded |= ~ended & terminated & (reward == 1.0)
        ended |= terminated | truncated
    envs.close()
    assert succeeded.all()
