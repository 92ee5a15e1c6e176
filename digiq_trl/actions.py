"""Device actions: one dataclass, the AutoUI string format, and the AitW action-matching metric.

Android-in-the-Wild (AitW) agents act with seven action types. AutoUI (the behavior policy of the
Digi-Q paper) writes them as strings such as::

    Action Plan: [DUAL_POINT,TYPE] ; Action Decision: "action_type": "DUAL_POINT",
    "touch_point": "[0.52, 0.31]", "lift_point": "[0.52, 0.31]", "typed_text": ""

Points are normalized ``[y, x]`` in ``[0, 1]``; ``[-1.0, -1.0]`` marks "no point".

Example:
    >>> from digiq_trl import DeviceAction, parse_action, format_action
    >>> tap = DeviceAction.tap(0.52, 0.31)
    >>> parse_action(format_action(tap)) == tap
    True
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass


NO_POINT: tuple[float, float] = (-1.0, -1.0)

# Constants of the official AitW action-matching metric (google-research android_in_the_wild).
TAP_DISTANCE_THRESHOLD = 0.14
"""Two taps match when their touch points are closer than this (normalized screen units)."""
TAP_SWIPE_THRESHOLD = 0.04
"""A dual point whose touch and lift are at most this far apart is a tap, otherwise a swipe."""
BOX_ENLARGEMENT = 1.4
"""UI element boxes are scaled by this factor (around their centre) before tap matching."""


class ActionParseError(ValueError):
    """Raised when a string is not a valid AutoUI action; the message quotes the string."""


class ActionType(enum.IntEnum):
    """AitW action types, valued by their AitW ids (``results/action_type`` in the TFRecords)."""

    TYPE = 3
    DUAL_POINT = 4
    PRESS_BACK = 5
    PRESS_HOME = 6
    PRESS_ENTER = 7
    STATUS_TASK_COMPLETE = 10
    STATUS_TASK_IMPOSSIBLE = 11


@dataclass(frozen=True)
class DeviceAction:
    """One device action.

    Args:
        action_type: what the action does.
        touch_point: normalized ``(y, x)`` where the finger goes down; ``NO_POINT`` if unused.
        lift_point: normalized ``(y, x)`` where the finger lifts; ``NO_POINT`` if unused.
        typed_text: text entered by a ``TYPE`` action, empty otherwise.
    """

    action_type: ActionType
    touch_point: tuple[float, float] = NO_POINT
    lift_point: tuple[float, float] = NO_POINT
    typed_text: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "action_type", ActionType(self.action_type))
        object.__setattr__(self, "touch_point", _as_point(self.touch_point))
        object.__setattr__(self, "lift_point", _as_point(self.lift_point))

    @classmethod
    def tap(cls, y: float, x: float) -> DeviceAction:
        """A tap at normalized ``(y, x)``."""
        return cls(ActionType.DUAL_POINT, (y, x), (y, x))

    @classmethod
    def swipe(cls, touch: Sequence[float], lift: Sequence[float]) -> DeviceAction:
        """A swipe from ``touch`` to ``lift`` (both normalized ``(y, x)``)."""
        return cls(ActionType.DUAL_POINT, tuple(touch), tuple(lift))

    @classmethod
    def type_text(cls, text: str) -> DeviceAction:
        """Type ``text`` into the focused field."""
        return cls(ActionType.TYPE, typed_text=text)

    @classmethod
    def press(cls, action_type: ActionType) -> DeviceAction:
        """A button or status action without points (BACK, HOME, ENTER, COMPLETE, IMPOSSIBLE)."""
        if action_type in (ActionType.DUAL_POINT, ActionType.TYPE):
            raise ValueError(f"{action_type.name} needs points or text; use tap/swipe/type_text")
        return cls(action_type)

    @property
    def is_tap(self) -> bool:
        """True for a dual point whose touch and lift are within the tap/swipe threshold."""
        return (
            self.action_type == ActionType.DUAL_POINT
            and _distance(self.touch_point, self.lift_point) <= TAP_SWIPE_THRESHOLD
        )

    @property
    def is_swipe(self) -> bool:
        """True for a dual point that is not a tap."""
        return self.action_type == ActionType.DUAL_POINT and not self.is_tap

    @property
    def is_valid(self) -> bool:
        """Dual points lie in ``[0, 1]``; other types carry no points; only TYPE carries text."""
        if self.action_type == ActionType.DUAL_POINT:
            return all(0.0 <= c <= 1.0 for c in (*self.touch_point, *self.lift_point))
        if self.touch_point != NO_POINT or self.lift_point != NO_POINT:
            return False
        return self.action_type == ActionType.TYPE or self.typed_text == ""


def _as_point(point: Sequence[float]) -> tuple[float, float]:
    if len(point) != 2:
        raise ValueError(f"a point has two coordinates [y, x], got {list(point)!r}")
    return (float(point[0]), float(point[1]))


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.hypot(a[0] - b[0], a[1] - b[1])


def _format_point(point: tuple[float, float]) -> str:
    return f"[{round(point[0], 4)}, {round(point[1], 4)}]"


def format_action(action: DeviceAction, with_plan: bool = False) -> str:
    """Write ``action`` as an AutoUI action string.

    Args:
        action: the action to write.
        with_plan: prefix ``Action Plan: [TYPE] ; `` as AutoUI does (the plan is the action's own
            type; AutoUI's multi-step plans are not reproduced).
    """
    typed = action.typed_text.replace("\\", "\\\\").replace('"', '\\"')
    decision = (
        f'Action Decision: "action_type": "{action.action_type.name}", '
        f'"touch_point": "{_format_point(action.touch_point)}", '
        f'"lift_point": "{_format_point(action.lift_point)}", '
        f'"typed_text": "{typed}"'
    )
    if with_plan:
        return f"Action Plan: [{action.action_type.name}] ; {decision}"
    return decision


_NUMBER = r"\s*(-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*"
_POINT = rf"\[{_NUMBER},{_NUMBER}\]"
_ACTION_RE = re.compile(
    r'^\s*(?:Action Plan:.*?;\s*)?Action Decision:\s*'
    r'"action_type":\s*"(?P<type>[A-Z_]+)"\s*,\s*'
    rf'"touch_point":\s*"{_POINT}"\s*,\s*'
    rf'"lift_point":\s*"{_POINT}"\s*,\s*'
    r'"typed_text":\s*"(?P<text>(?:[^"\\]|\\.)*)"\s*$',
    re.DOTALL,
)


def parse_action(text: str) -> DeviceAction:
    """Parse an AutoUI action string (with or without the ``Action Plan: ... ;`` prefix).

    Raises:
        ActionParseError: the string is malformed, names an unknown type, or its points are
            outside ``[0, 1]`` (or not ``[-1, -1]`` for types without points).
    """
    if not isinstance(text, str):
        raise ActionParseError(f"expected an action string, got {type(text).__name__}: {text!r}")
    match = _ACTION_RE.match(text)
    if match is None:
        raise ActionParseError(f"not an AutoUI action string: {text!r}")
    type_name = match.group("type")
    if type_name not in ActionType.__members__:
        raise ActionParseError(f"unknown action_type {type_name!r} in {text!r}")
    ty, tx, ly, lx = (float(match.group(i)) for i in (2, 3, 4, 5))
    typed = re.sub(r"\\(.)", r"\1", match.group("text"))
    action = DeviceAction(ActionType[type_name], (ty, tx), (ly, lx), typed)
    if not action.is_valid:
        raise ActionParseError(f"invalid points or text for {type_name} in {text!r}")
    return action


def try_parse_action(text: str) -> DeviceAction | None:
    """Like :func:`parse_action`, but returns ``None`` for a malformed string (never raises)."""
    try:
        return parse_action(text)
    except ActionParseError:
        return None


def describe_action(action: DeviceAction) -> str:
    """A short human-readable form, used for the ``history`` of previous actions.

    Example: ``tap [0.52, 0.31]``, ``swipe [0.8, 0.5] -> [0.2, 0.5]``, ``type "milk"``, ``back``.
    """
    if action.action_type == ActionType.DUAL_POINT:
        if action.is_tap:
            return f"tap {_format_point(action.touch_point)}"
        return f"swipe {_format_point(action.touch_point)} -> {_format_point(action.lift_point)}"
    if action.action_type == ActionType.TYPE:
        return f'type "{action.typed_text}"'
    return action_kind(action)


ACTION_KINDS: dict[ActionType, str] = {
    ActionType.TYPE: "type",
    ActionType.PRESS_BACK: "back",
    ActionType.PRESS_HOME: "home",
    ActionType.PRESS_ENTER: "enter",
    ActionType.STATUS_TASK_COMPLETE: "complete",
    ActionType.STATUS_TASK_IMPOSSIBLE: "impossible",
}
"""The one-word name of every action type but DUAL_POINT (a tap or a swipe, by its points)."""


def action_kind(action: DeviceAction | None) -> str:
    """A coarse action class, for per-class diagnostics and the history's words for buttons: tap,
    swipe, type, back, home, enter, complete, impossible, or ``invalid`` for an unparsable answer."""
    if action is None:
        return "invalid"
    if action.action_type == ActionType.DUAL_POINT:
        return "tap" if action.is_tap else "swipe"
    return ACTION_KINDS[action.action_type]


def format_history(previous: Sequence[DeviceAction]) -> str:
    """The canonical ``history`` text: previous actions described and joined with ``"; "``."""
    return "; ".join(describe_action(a) for a in previous)


def _enlarged_box_contains(box: Sequence[float], point: tuple[float, float]) -> bool:
    """Whether ``point`` lies in the AitW box ``(y, x, height, width)`` after enlargement.

    As in AitW, each side grows by ``BOX_ENLARGEMENT`` times its length (split evenly around the
    box), the top-left corner is clipped to the screen, and containment includes the edges.
    """
    y, x, h, w = box
    dh, dw = BOX_ENLARGEMENT * h, BOX_ENLARGEMENT * w
    top, left = max(0.0, y - dh / 2), max(0.0, x - dw / 2)
    height, width = min(1.0, h + dh), min(1.0, w + dw)
    return top <= point[0] <= top + height and left <= point[1] <= left + width


def _taps_match(
    pred: tuple[float, float], gold: tuple[float, float], ui_boxes: Sequence[Sequence[float]] | None
) -> bool:
    if _distance(pred, gold) <= TAP_DISTANCE_THRESHOLD:
        return True
    return any(
        _enlarged_box_contains(box, pred) and _enlarged_box_contains(box, gold)
        for box in ui_boxes or ()
    )


def _main_axis(action: DeviceAction) -> int:
    dy = abs(action.lift_point[0] - action.touch_point[0])
    dx = abs(action.lift_point[1] - action.touch_point[1])
    return 0 if dy >= dx else 1


def _texts_match(pred: str, gold: str) -> bool:
    pred, gold = " ".join(pred.lower().split()), " ".join(gold.lower().split())
    if not pred or not gold:
        return pred == gold
    return pred in gold or gold in pred


def actions_match(
    pred: DeviceAction | None,
    gold: DeviceAction,
    ui_boxes: Sequence[Sequence[float]] | None = None,
) -> bool:
    """The AitW action-matching rule.

    * A dual point is a tap when touch and lift are at most 0.04 apart, else a swipe; a tap never
      matches a swipe.
    * Taps match when at most 0.14 apart, or when both lie inside the same UI element box
      (boxes ``(y, x, height, width)``, each side grown by 1.4x its length).
    * Swipes match when they share the main axis (the axis of the larger displacement), as in AitW.
    * TYPE matches when one typed text contains the other (case and whitespace insensitive), as in
      the AutoUI evaluation; AitW itself compares types only.
    * All other actions match by type.
    * ``pred=None`` (an unparsable prediction) never matches.
    """
    if pred is None or pred.action_type != gold.action_type:
        return False
    if gold.action_type == ActionType.DUAL_POINT:
        if pred.is_tap and gold.is_tap:
            return _taps_match(pred.touch_point, gold.touch_point, ui_boxes)
        if pred.is_swipe and gold.is_swipe:
            return _main_axis(pred) == _main_axis(gold)
        return False
    if gold.action_type == ActionType.TYPE:
        return _texts_match(pred.typed_text, gold.typed_text)
    return True
