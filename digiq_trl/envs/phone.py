"""``PhoneEnv``: the simulated Android phone as a Gymnasium environment.

Example:
    >>> import gymnasium as gym
    >>> import digiq_trl.envs  # registers the environments
    >>> env = gym.make("digiq_trl/Phone-general-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(info["expert_action"])
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

from ..actions import ActionType, DeviceAction, format_action, format_history, try_parse_action
from .device import Device, Layout
from .expert import expert_action
from .failures import failure_mode
from .render import render
from .target_phone import OVERLAYS, Interruption
from .tasks import SUITES, Task, is_success, load_goals, parse_goal, with_pseudo_entities


DEFAULT_HORIZONS = {"general": 10, "webshop": 20}
"""Episode step limits of the AitW suites as used by DigiRL and Digi-Q."""
LAYOUTS = ("fixed", "random")
PHONES: dict[str, dict[str, Any]] = {
    "source": {"drift": False, "interruption_probability": 0.0},
    "target": {"drift": True, "interruption_probability": 0.7},
}
"""The two phones: ``source``, where static demonstrations are recorded (a base actor's pretraining
domain), and ``target``, the same phone after version drift and with interruptions, where the actor
is deployed (:mod:`digiq_trl.envs.target_phone`)."""
_TEXT_CHARSET = string.printable


class ImageSpace(gym.Space):
    """Space of RGB PIL images of one size (the screenshots)."""

    def __init__(self, width: int, height: int, seed: int | None = None) -> None:
        super().__init__(shape=(height, width, 3), dtype=np.uint8, seed=seed)
        self.width, self.height = width, height

    def sample(self, mask: Any = None, probability: Any = None) -> Image.Image:
        """A noise image of the right size."""
        pixels = self.np_random.integers(0, 256, size=(self.height, self.width, 3), dtype=np.uint8)
        return Image.fromarray(pixels, "RGB")

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is an RGB PIL image of this size."""
        return isinstance(x, Image.Image) and x.mode == "RGB" and x.size == (self.width, self.height)

    @property
    def is_np_flattenable(self) -> bool:
        """Screenshots are not flattened into vectors."""
        return False

    def __eq__(self, other: object) -> bool:
        """Spaces of the same image size are equal (what ``gymnasium.make_vec`` checks across its envs)."""
        return isinstance(other, ImageSpace) and (self.width, self.height) == (other.width, other.height)

    def __hash__(self) -> int:
        return hash((ImageSpace, self.width, self.height))

    def __repr__(self) -> str:
        return f"ImageSpace({self.width}, {self.height})"


class PhoneEnv(gym.Env):
    """A simulated Android phone with the AitW General or WebShop goals.

    Observations are dicts ``{"image": PIL RGB screenshot, "goal": str, "history": str}``.
    Actions are :class:`~digiq_trl.actions.DeviceAction` objects or AutoUI action strings; an
    unparsable or invalid action is a wasted step (``info["valid_action"] = False``).
    ``STATUS_TASK_COMPLETE`` / ``STATUS_TASK_IMPOSSIBLE`` end the episode. The reward is 1 on the
    step that completes the task (``terminated``), else 0; ``truncated`` at the horizon.

    ``info`` holds ``expert_action`` (the scripted expert's next action as an AutoUI string),
    ``ui_boxes`` (normalized ``[y, x, h, w]`` of tappable elements), ``success``,
    ``valid_action``, ``screen`` (the screen kind), ``task`` (the parsed goal's template),
    ``overlay`` (the interruption on screen, or ``""``) and ``expert_target_moved`` (the expert taps
    an element the target phone's drift moved); the last step of a failed episode adds
    ``failure_mode`` (:func:`~digiq_trl.envs.failures.failure_mode`).

    Args:
        suite: ``"general"`` or ``"webshop"``.
        split: ``"train"``, ``"test"`` or ``"heldout"`` (see :func:`~digiq_trl.envs.load_goals`).
        width: screenshot width in pixels.
        height: screenshot height in pixels.
        layout: ``"fixed"`` (constant positions and colours, for tiny models) or ``"random"``
            (icon order, list order and colours drawn per episode, for pretrained VLMs).
        horizon: steps before truncation; defaults to 10 (general) or 20 (webshop).
        pseudo_entities: add a variant with made-up entity names of each search and video goal
            (:func:`~digiq_trl.envs.tasks.with_pseudo_entities`): demonstrations that teach a tiny
            actor to copy the query from the goal instead of memorizing it.
        phone: ``"source"`` or ``"target"`` (:data:`PHONES`): the defaults of the two options below.
        drift: the target phone's version drift (:meth:`~digiq_trl.envs.device.Layout.drifted`:
            some home icons moved, the Settings list reordered, search fields behind an icon).
        interruption_probability: the chance that an episode has an interruption: one overlay of
            :data:`~digiq_trl.envs.target_phone.OVERLAYS`, drawn uniformly, over the first or second screen
            that opens.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        suite: str = "general",
        split: str = "train",
        width: int = 112,
        height: int = 224,
        layout: str = "fixed",
        horizon: int | None = None,
        render_mode: str | None = None,
        pseudo_entities: bool = False,
        phone: str = "source",
        drift: bool | None = None,
        interruption_probability: float | None = None,
    ) -> None:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}")
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        if phone not in PHONES:
            raise ValueError(f"unknown phone {phone!r}; choose one of {sorted(PHONES)}")
        drift = PHONES[phone]["drift"] if drift is None else drift
        if interruption_probability is None:
            interruption_probability = PHONES[phone]["interruption_probability"]
        if not 0.0 <= interruption_probability <= 1.0:
            raise ValueError(f"interruption_probability must be in [0, 1], got {interruption_probability}")
        self.drift, self.interruption_probability = drift, interruption_probability
        self.goals = load_goals(suite, split)
        if pseudo_entities:
            self.goals = with_pseudo_entities(self.goals)
        self.suite, self.split, self.layout_mode = suite, split, layout
        self.width, self.height = width, height
        self.horizon = horizon or DEFAULT_HORIZONS[suite]
        self.render_mode = render_mode
        self.config = dict(suite=suite, split=split, width=width, height=height, layout=layout,
                           horizon=self.horizon, pseudo_entities=pseudo_entities, phone=phone, drift=drift,
                           interruption_probability=interruption_probability)
        text = gym.spaces.Text(max_length=4096, min_length=0, charset=_TEXT_CHARSET)
        self.observation_space = gym.spaces.Dict(
            {"image": ImageSpace(width, height), "goal": text, "history": text}
        )
        self.action_space = gym.spaces.Text(max_length=1024, min_length=0, charset=_TEXT_CHARSET)
        self.device = Device(Layout.fixed())
        self.task: Task = parse_goal(self.goals[0])
        self.history: list[DeviceAction] = []
        self.steps = 0
        self.moved: frozenset[str] = frozenset()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode on the home screen with a goal drawn from the split (or ``options["goal"]``)."""
        super().reset(seed=seed)
        goal = (options or {}).get("goal") or self.goals[int(self.np_random.integers(len(self.goals)))]
        self.task = parse_goal(goal).resolve(self.np_random)
        source = Layout.random(self.np_random) if self.layout_mode == "random" else Layout.fixed()
        layout = source.drifted() if self.drift else source
        self.moved = layout.moved_elements(source)
        self.device = Device(layout, self.task.initial_notifications(), self._draw_interruption())
        self.history, self.steps = [], 0
        return self._observation(), self._info(valid=True)

    def _draw_interruption(self) -> Interruption | None:
        """This episode's interruption, if any (no random draw at all when the probability is 0)."""
        if self.interruption_probability <= 0 or self.np_random.random() >= self.interruption_probability:
            return None
        kind = OVERLAYS[int(self.np_random.integers(len(OVERLAYS)))]
        return Interruption(kind, after=int(self.np_random.integers(1, 3)))

    def step(
        self, action: DeviceAction | str
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Carry out one action; see the class docstring for rewards and episode ends."""
        parsed = try_parse_action(action) if isinstance(action, str) else action
        valid = isinstance(parsed, DeviceAction) and parsed.is_valid
        self.steps += 1
        stopped = False
        if valid:
            self.device.apply(parsed)
            self.history.append(parsed)
            stopped = parsed.action_type in (ActionType.STATUS_TASK_COMPLETE, ActionType.STATUS_TASK_IMPOSSIBLE)
        success = is_success(self.task, self.device)
        terminated = success or stopped
        truncated = not terminated and self.steps >= self.horizon
        info = self._info(valid)
        if (terminated or truncated) and not success:
            info["failure_mode"] = failure_mode(self.task, self.device, stopped)
        return self._observation(), float(success), terminated, truncated, info

    def render(self) -> np.ndarray:
        """The current screenshot as an ``(height, width, 3)`` uint8 array."""
        return np.asarray(render(self.device, self.width, self.height))

    def _observation(self) -> dict[str, Any]:
        return {
            "image": render(self.device, self.width, self.height),
            "goal": self.task.goal,
            "history": format_history(self.history),
        }

    def _info(self, valid: bool) -> dict[str, Any]:
        expert = expert_action(self.task, self.device)
        return {
            "expert_action": format_action(expert),
            "ui_boxes": [element.box for element in self.device.elements()],
            "success": is_success(self.task, self.device),
            "valid_action": valid,
            "screen": self.device.screen.kind,
            "task": self.task.kind,
            "overlay": self.device.screen.overlay,
            "expert_target_moved": self._moved_target(expert),
        }

    def _moved_target(self, expert: DeviceAction) -> bool:
        """Whether the expert's next action taps an element that sits elsewhere than on the source phone."""
        if not (self.moved and expert.is_tap):
            return False
        element = self.device.element_at(*expert.touch_point)
        return element is not None and self.device.element_identity(element) in self.moved
