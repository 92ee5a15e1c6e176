"""Actions: AutoUI round trips, parse errors, and every branch of the AitW matching rule."""

import pytest

from digiq_trl import (
    ActionParseError,
    ActionType,
    DeviceAction,
    actions_match,
    format_action,
    format_history,
    parse_action,
    try_parse_action,
)


ALL_ACTIONS = [
    DeviceAction.tap(0.52, 0.31),
    DeviceAction.swipe((0.8, 0.5), (0.2, 0.5)),
    DeviceAction.type_text('milk "2%" \\ bread'),
    DeviceAction.type_text(""),
    *(DeviceAction.press(t) for t in ActionType if t not in (ActionType.TYPE, ActionType.DUAL_POINT)),
]

REFERENCE_STRING = (
    'Action Plan: [DUAL_POINT,TYPE,PRESS_ENTER] ; Action Decision: "action_type": "DUAL_POINT", '
    '"touch_point": "[0.52, 0.31]", "lift_point": "[0.52, 0.31]", "typed_text": ""'
)


@pytest.mark.parametrize("action", ALL_ACTIONS, ids=lambda a: a.action_type.name)
@pytest.mark.parametrize("with_plan", [False, True])
def test_format_parse_round_trip(action: DeviceAction, with_plan: bool) -> None:
    assert parse_action(format_action(action, with_plan=with_plan)) == action


def test_parses_reference_autoui_string_with_multi_step_plan() -> None:
    assert parse_action(REFERENCE_STRING) == DeviceAction.tap(0.52, 0.31)


def test_non_point_actions_are_written_with_minus_one_points() -> None:
    text = format_action(DeviceAction.press(ActionType.PRESS_HOME))
    assert '"touch_point": "[-1.0, -1.0]"' in text and '"action_type": "PRESS_HOME"' in text


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "tap the button",
        REFERENCE_STRING.replace("DUAL_POINT\"", "LONG_PRESS\""),
        REFERENCE_STRING.replace("[0.52, 0.31]", "[1.52, 0.31]", 1),
        REFERENCE_STRING.replace('"typed_text": ""', '"typed_text": "'),
        'Action Decision: "action_type": "PRESS_BACK", "touch_point": "[0.5, 0.5]", '
        '"lift_point": "[0.5, 0.5]", "typed_text": ""',
    ],
)
def test_malformed_strings_raise_quoting_the_string_and_try_parse_returns_none(bad: str) -> None:
    with pytest.raises(ActionParseError) as excinfo:
        parse_action(bad)
    assert repr(bad)[:20] in str(excinfo.value)
    assert try_parse_action(bad) is None


def test_try_parse_never_raises_on_non_strings() -> None:
    assert try_parse_action(None) is None  # type: ignore[arg-type]


def test_tap_swipe_boundary_is_inclusive_at_0_04() -> None:
    assert DeviceAction.swipe((0.0, 0.5), (0.04, 0.5)).is_tap
    assert DeviceAction.swipe((0.5, 0.5), (0.541, 0.5)).is_swipe


def test_taps_match_within_0_14() -> None:
    gold = DeviceAction.tap(0.5, 0.5)
    assert actions_match(DeviceAction.tap(0.5, 0.63), gold)
    assert not actions_match(DeviceAction.tap(0.5, 0.65), gold)


def test_taps_match_inside_the_same_enlarged_box() -> None:
    gold, pred = DeviceAction.tap(0.5, 0.1), DeviceAction.tap(0.5, 0.4)
    box = [0.45, 0.05, 0.1, 0.2]  # x from 0.05 to 0.25; enlarged by 1.4 * 0.2: -0.09 .. 0.53
    assert not actions_match(pred, gold)
    assert actions_match(pred, gold, ui_boxes=[box])
    assert not actions_match(DeviceAction.tap(0.5, 0.6), gold, ui_boxes=[box])


def test_tap_never_matches_swipe() -> None:
    tap = DeviceAction.tap(0.5, 0.5)
    swipe = DeviceAction.swipe((0.5, 0.5), (0.2, 0.5))
    assert not actions_match(tap, swipe)
    assert not actions_match(swipe, tap)


def test_swipes_match_by_main_axis() -> None:
    up = DeviceAction.swipe((0.8, 0.5), (0.2, 0.5))
    assert actions_match(DeviceAction.swipe((0.7, 0.4), (0.3, 0.45)), up)
    assert actions_match(DeviceAction.swipe((0.2, 0.5), (0.8, 0.5)), up)  # AitW: axis only
    assert not actions_match(DeviceAction.swipe((0.5, 0.2), (0.5, 0.8)), up)


def test_type_matches_by_text() -> None:
    gold = DeviceAction.type_text("Best Buy")
    assert actions_match(DeviceAction.type_text("best  buy"), gold)
    assert actions_match(DeviceAction.type_text("best buy laptops"), gold)
    assert not actions_match(DeviceAction.type_text("walmart"), gold)
    assert not actions_match(DeviceAction.type_text(""), gold)


def test_other_actions_match_by_type_only() -> None:
    back = DeviceAction.press(ActionType.PRESS_BACK)
    assert actions_match(back, back)
    assert not actions_match(DeviceAction.press(ActionType.PRESS_HOME), back)
    assert not actions_match(None, back)


def test_history_is_short_and_ordered() -> None:
    history = format_history([DeviceAction.tap(0.1, 0.2), DeviceAction.type_text("x")])
    assert history == 'tap [0.1, 0.2]; type "x"'
