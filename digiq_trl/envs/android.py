"""``AndroidDeviceEnv``: a real Android phone or emulator over adb, as a Gymnasium environment.

It has :class:`~digiq_trl.envs.phone.PhoneEnv`'s observation and action spaces, so the same actor,
rollout loop (:func:`~digiq_trl.envs.collect.run_episodes`), evaluation and data collection run on
it unchanged. AitW actions become ``adb shell`` commands (:func:`action_commands`): a tap is
``input tap``, a swipe ``input swipe``, typing ``input text`` (:func:`text_commands`), BACK / HOME /
ENTER key events; a status action sends nothing and ends the episode. Observations are ``screencap``
PNGs resized to the actor's screenshot size. Nothing on a device knows whether the goal is reached,
so a pluggable judge (:mod:`digiq_trl.judges`) decides after every step from the last two screens
and the goal, as the Digi-Q and DigiRL evaluations do.

A device that fails (no device, gone mid-episode, a screenshot that is no image) ends the episode:
``info["error"]`` says what happened, one warning line is logged, and the next episode tries again.

Example:
    >>> from digiq_trl.envs.android import AndroidDeviceEnv
    >>> from digiq_trl.judges import EndpointJudge
    >>> env = AndroidDeviceEnv("emulator-5554", judge=EndpointJudge("http://127.0.0.1:8000/v1", "Qwen/Qwen2.5-VL-7B-Instruct"))
    >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import io
import logging
import math
import re
import shlex
import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from ..actions import ActionType, DeviceAction, format_history, try_parse_action
from ..judges import Judge, Verdict
from .phone import _TEXT_CHARSET, DEFAULT_HORIZONS, ImageSpace
from .tasks import SUITES, load_goals, parse_goal


logger = logging.getLogger(__name__)

KEYCODES = {
    ActionType.PRESS_BACK: "KEYCODE_BACK",
    ActionType.PRESS_HOME: "KEYCODE_HOME",
    ActionType.PRESS_ENTER: "KEYCODE_ENTER",
}
"""The Android key event of each AitW button action."""
SWIPE_MS = 400
"""How long an ``input swipe`` takes: a deliberate scroll, not a fling."""
RESET_PACKAGES = (
    "com.android.chrome", "com.android.settings", "com.android.vending", "com.google.android.youtube",
    "com.google.android.apps.maps", "com.google.android.gm", "com.google.android.calendar",
    "com.google.android.deskclock", "com.android.camera2", "com.google.android.apps.photos",
    "com.google.android.apps.messaging", "com.google.android.contacts", "com.google.android.calculator",
    "com.google.android.apps.nbu.files", "com.google.android.dialer",
)
"""Apps closed at every reset (``am force-stop``): those the AitW General and WebShop goals use on a
stock Google emulator image."""
ADB_KEYBOARD_ACTION = "ADB_INPUT_B64"
"""The broadcast that the ADBKeyBoard input method types from (base64 text); ``input text`` types
only what the virtual keyboard's key map holds, so nothing outside printable ASCII."""
_PIXEL_EPSILON = 1e-6
"""Absorbs the float error of ``x * width`` when the product is a whole pixel (0.57 * 100 is 56.99...)."""


class DeviceError(RuntimeError):
    """The device could not carry out a command or return a screenshot; ends the episode."""


def to_pixels(point: Sequence[float], size: tuple[int, int]) -> tuple[int, int]:
    """The pixel ``(x, y)`` that the normalized AitW point ``(y, x)`` falls in, on a ``(width, height)`` screen.

    Pixel ``i`` covers ``[i, i + 1)``; points on the right or bottom edge go to the last pixel.

    Example:
        >>> to_pixels((0.5, 0.25), (1080, 2400))
        (270, 1200)
    """
    y, x = point
    width, height = size
    return (min(width - 1, max(0, math.floor(x * width + _PIXEL_EPSILON))),
            min(height - 1, max(0, math.floor(y * height + _PIXEL_EPSILON))))


def to_normalized(pixel: Sequence[float], size: tuple[int, int]) -> tuple[float, float]:
    """The normalized AitW point ``(y, x)`` of pixel coordinates ``(x, y)`` (a pixel's top-left corner).

    The inverse of :func:`to_pixels` on the pixel grid: ``to_pixels(to_normalized(p, s), s) == p``.

    Example:
        >>> to_normalized((270, 1200), (1080, 2400))
        (0.5, 0.25)
    """
    x, y = pixel
    width, height = size
    return (float(y) / height, float(x) / width)


def text_commands(text: str) -> list[str]:
    """Shell commands that type ``text`` into the focused field.

    Printable ASCII goes through ``input text``, single-quoted for the device's shell, with each
    space written ``%s`` (how ``input text`` spells a space); a ``%`` followed by ``s`` in the text
    is cut between two commands so that it is not read as one. Other characters (non-ASCII, tabs,
    newlines), which ``input text`` cannot type, go base64-encoded in an :data:`ADB_KEYBOARD_ACTION`
    broadcast: the ADBKeyBoard input method must be installed and selected for those.

    Example:
        >>> text_commands("it's 50% off")
        ["input text 'it'\"'\"'s%s50%%soff'"]
    """
    commands = []
    for run in re.findall(r"[ -~]+|[^ -~]+", text):
        if " " <= run[0] <= "~":
            for piece in re.split(r"(?<=%)(?=s)", run):
                commands.append("input text " + shlex.quote(piece.replace(" ", "%s")))
        else:
            encoded = base64.b64encode(run.encode("utf-8")).decode("ascii")
            commands.append(f"am broadcast -a {ADB_KEYBOARD_ACTION} --es msg {encoded}")
    return commands


def action_commands(action: DeviceAction, size: tuple[int, int]) -> list[str]:
    """The shell commands that carry out a valid AitW ``action`` on a ``(width, height)`` screen.

    A tap (touch and lift within the AitW tap threshold) taps the touch point; status actions
    (complete, impossible) send nothing.

    Example:
        >>> action_commands(DeviceAction.tap(0.5, 0.25), (1080, 2400))
        ['input tap 270 1200']
    """
    kind = action.action_type
    if kind == ActionType.DUAL_POINT and action.is_tap:
        return ["input tap {} {}".format(*to_pixels(action.touch_point, size))]
    if kind == ActionType.DUAL_POINT:
        start, end = to_pixels(action.touch_point, size), to_pixels(action.lift_point, size)
        return [f"input swipe {start[0]} {start[1]} {end[0]} {end[1]} {SWIPE_MS}"]
    if kind == ActionType.TYPE:
        return text_commands(action.typed_text)
    if kind in KEYCODES:
        return [f"input keyevent {KEYCODES[kind]}"]
    return []


class AndroidDeviceEnv(gym.Env):
    """An Android phone or emulator over adb with the AitW General or WebShop goals.

    Observations, actions, rewards and episode ends are :class:`~digiq_trl.envs.phone.PhoneEnv`'s;
    success is the ``judge``'s verdict after each step (on the screens before and after the action).
    ``info`` holds ``success``, ``valid_action``, ``task`` (the goal's template kind), ``judge``
    (the last verdict: ``success``, ``reasoning``, ``error``) after a step, and ``error`` when the
    device failed, which ends the episode. The simulator's fields (expert action, element boxes)
    have no device counterpart: ``ui_boxes`` is empty.

    Args:
        serial: the device's adb serial (``adb devices``), e.g. ``emulator-5554``.
        suite: ``"general"`` or ``"webshop"``: the goals drawn when reset gets none.
        split: the goal split (see :func:`~digiq_trl.envs.tasks.load_goals`).
        width: screenshot width the actor sees (the device's screenshot is resized to it).
        height: screenshot height the actor sees.
        horizon: steps before truncation; defaults to 10 (general) or 20 (webshop).
        judge: decides success from the goal and the last screens; without one, no episode succeeds.
        prepare: called with reset's ``seed`` and ``options`` once the phone is on its home screen with
            its apps closed, before the first screenshot (e.g. to restore a snapshot).
        settle_s: seconds to wait after each action before the screenshot (animations, loading).
        timeout_s: most seconds one adb command may take.
        adb_server: ``(host, port)`` of the adb server.
        reset_packages: apps force-stopped at each reset.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        serial: str,
        suite: str = "general",
        split: str = "test",
        width: int = 112,
        height: int = 224,
        horizon: int | None = None,
        judge: Judge | None = None,
        prepare: Callable[[int | None, dict[str, Any] | None], None] | None = None,
        settle_s: float = 1.0,
        timeout_s: float = 10.0,
        adb_server: tuple[str, int] = ("127.0.0.1", 5037),
        reset_packages: Sequence[str] = RESET_PACKAGES,
    ) -> None:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}")
        self.serial, self.suite, self.split = serial, suite, split
        self.goals = load_goals(suite, split)
        self.width, self.height = width, height
        self.horizon = horizon or DEFAULT_HORIZONS[suite]
        self.judge, self.prepare = judge, prepare
        self.settle_s, self.timeout_s = settle_s, timeout_s
        self.adb_server = adb_server
        self.reset_packages = tuple(reset_packages)
        text = gym.spaces.Text(max_length=4096, min_length=0, charset=_TEXT_CHARSET)
        self.observation_space = gym.spaces.Dict({"image": ImageSpace(width, height), "goal": text, "history": text})
        self.action_space = gym.spaces.Text(max_length=1024, min_length=0, charset=_TEXT_CHARSET)
        self.goal = self.goals[0]
        self.history: list[DeviceAction] = []
        self.steps = 0
        self.screens: list[Image.Image] = []
        self.screen_size = (width, height)
        self._device: Any = None

    # ------------------------------------------------------------------ adb
    def shell(self, command: str, binary: bool = False) -> str | bytes:
        """Run ``command`` in the device's shell and return its output.

        Raises:
            DeviceError: no adb server, no such device, the device went away, or the timeout passed.
        """
        from adbutils import AdbError

        try:
            output = self._connect().shell(command, timeout=self.timeout_s, encoding=None)
        except (AdbError, OSError, EOFError) as error:
            raise DeviceError(f"adb shell {command.split()[0]}: {error or type(error).__name__}") from error
        return output if binary else output.decode("utf-8", errors="replace")

    def _connect(self) -> Any:
        """The adbutils device, once the adb server is known to answer.

        adbutils starts an adb server of its own when none answers; here that is reported instead,
        so an evaluation never leaves a server behind that nobody asked for.
        """
        import socket

        from adbutils import AdbClient

        host, port = self.adb_server
        try:
            socket.create_connection((host, port), timeout=self.timeout_s).close()
        except OSError as error:
            raise DeviceError(f"no adb server at {host}:{port} ({error}); start one with `adb start-server`") from error
        if self._device is None:
            self._device = AdbClient(host=host, port=port, socket_timeout=self.timeout_s).device(self.serial)
        return self._device

    def screenshot(self) -> Image.Image:
        """The screen as the actor sees it: ``screencap`` resized to ``(width, height)`` (box filter).

        The device's screenshot size is kept in ``screen_size``: the pixel space taps are mapped to.

        Raises:
            DeviceError: adb failed, or what came back is not an image.
        """
        data = self.shell("screencap -p", binary=True)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                self.screen_size = image.size
                rgb = image.convert("RGB")
        except (OSError, ValueError) as error:
            raise DeviceError(f"the screenshot is not an image ({len(data)} bytes, starting {data[:16]!r}): {error}") from error
        return rgb.resize((self.width, self.height), Image.Resampling.BOX)

    # ------------------------------------------------------------------ gymnasium
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Close the apps, go home, and start an episode with a goal drawn from the split (or ``options["goal"]``).

        The goal is drawn as :class:`~digiq_trl.envs.phone.PhoneEnv` draws it, so a seed gives the
        same goal on a device as in the simulator.
        """
        super().reset(seed=seed)
        self.goal = (options or {}).get("goal") or self.goals[int(self.np_random.integers(len(self.goals)))]
        self.history, self.steps, self.screens = [], 0, []
        info = {"success": False, "valid_action": True, "task": parse_goal(self.goal).kind, "ui_boxes": []}
        try:
            stops = "; ".join(f"am force-stop {package}" for package in self.reset_packages)
            self.shell(f"{stops}; input keyevent KEYCODE_HOME" if stops else "input keyevent KEYCODE_HOME")
            if self.prepare is not None:
                self.prepare(seed, options)
            time.sleep(self.settle_s)
            self.screens.append(self.screenshot())
        except DeviceError as error:
            return self._observation(), self._failed(info, error)
        return self._observation(), info

    def step(self, action: DeviceAction | str) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Send one action, wait ``settle_s``, take the screenshot and ask the judge."""
        parsed = try_parse_action(action) if isinstance(action, str) else action
        valid = isinstance(parsed, DeviceAction) and parsed.is_valid
        self.steps += 1
        stopped = valid and parsed.action_type in (ActionType.STATUS_TASK_COMPLETE, ActionType.STATUS_TASK_IMPOSSIBLE)
        info: dict[str, Any] = {"success": False, "valid_action": valid, "task": parse_goal(self.goal).kind,
                                "ui_boxes": []}
        try:
            if valid:
                commands = action_commands(parsed, self.screen_size)
                if commands:
                    self.shell("; ".join(commands))
                self.history.append(parsed)
            time.sleep(self.settle_s)
            self.screens = [*self.screens[-1:], self.screenshot()]
            verdict = self.judge(self.goal, self.screens) if self.judge is not None else Verdict(False, "no judge")
        except DeviceError as error:
            return self._observation(), 0.0, True, False, self._failed(info, error)
        info.update(success=verdict.success, judge=verdict.as_dict())
        terminated = verdict.success or stopped
        truncated = not terminated and self.steps >= self.horizon
        return self._observation(), float(verdict.success), terminated, truncated, info

    def render(self) -> np.ndarray:
        """The last screenshot as an ``(height, width, 3)`` uint8 array."""
        return np.asarray(self._observation()["image"])

    def _observation(self) -> dict[str, Any]:
        image = self.screens[-1] if self.screens else Image.new("RGB", (self.width, self.height))
        return {"image": image, "goal": self.goal, "history": format_history(self.history)}

    def _failed(self, info: dict[str, Any], error: DeviceError) -> dict[str, Any]:
        """``info`` of an episode the device ended: the error recorded and logged on one line."""
        self._device = None  # reconnect next time: the device may be back
        message = f"device {self.serial}: {error}"
        logger.warning("%s; episode ended (goal: %s)", message, self.goal)
        return {**info, "error": message}
