"""Small files in the two real-data formats the converters read, for the real-data path's tests.

The screenshots are the real (downscaled) Android screenshots of tests/data; goals are real AitW
General goals; actions are plausible AutoUI actions (taps on the screen's element boxes, the goal's
words typed, ENTER, COMPLETE).
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digiq_trl.actions import ActionType, DeviceAction, format_action
from digiq_trl.data.aitw_tfrecord import encode_example, write_tfrecord
from digiq_trl.envs.tasks import load_goals


SCREENS = sorted((Path(__file__).parent / "data").glob("*.png"))
BOXES = [(0.1, 0.1, 0.08, 0.8), (0.3, 0.2, 0.1, 0.3), (0.5, 0.55, 0.1, 0.3), (0.75, 0.1, 0.08, 0.8)]
"""Element boxes ``(y, x, h, w)`` every fixture screen gets."""


def _actions(goal: str, rng: random.Random) -> list[DeviceAction]:
    """An episode's actions: taps into element boxes, the goal's last words typed, ENTER, COMPLETE."""
    taps = [DeviceAction.tap(round(y + h / 2, 3), round(x + w / 2, 3)) for y, x, h, w in rng.sample(BOXES, 2)]
    typed = DeviceAction.type_text(" ".join(goal.split()[-2:]))
    return [*taps[: rng.randint(1, 2)], typed, DeviceAction.press(ActionType.PRESS_ENTER),
            DeviceAction.press(ActionType.STATUS_TASK_COMPLETE)]


def write_aitw_shard(path: Path, episodes: int = 20, seed: int = 0) -> Path:
    """An AitW-style gzip TFRecord shard of ``episodes`` demonstrations (raw pixels, AitW ids)."""
    rng = random.Random(seed)
    goals = load_goals("general", "train")
    records = []
    for episode in range(episodes):
        goal = rng.choice(goals)
        actions = _actions(goal, rng)
        for step, action in enumerate(actions):
            pixels = np.asarray(Image.open(rng.choice(SCREENS)).convert("RGB"))
            records.append(encode_example({
                "episode_id": [f"ep{episode}"], "episode_length": [len(actions)], "step_id": [step],
                "goal_info": [goal], "device_type": ["pixel"], "current_activity": ["a.b/.Main"],
                "image/height": [pixels.shape[0]], "image/width": [pixels.shape[1]], "image/channels": [3],
                "image/encoded": [pixels.tobytes()],
                "image/ui_annotations_positions": [v for box in BOXES for v in box],
                "image/ui_annotations_text": ["Search"] * len(BOXES),
                "image/ui_annotations_ui_types": ["TEXT"] * len(BOXES),
                "results/action_type": [int(action.action_type)], "results/type_action": [action.typed_text],
                "results/yx_touch": list(action.touch_point), "results/yx_lift": list(action.lift_point),
            }))
    write_tfrecord(path, records)
    return path


def write_digiq_pt(folder: Path, trajectories: int = 20, seed: int = 0) -> tuple[Path, Path]:
    """A Digi-Q / DigiRL-style ``.pt`` file (a list of trajectories of step dicts, with candidate
    ``action_list``s and some failed trajectories) and its images folder."""
    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for screen in SCREENS:
        shutil.copy(screen, images / screen.name)
    goals = load_goals("general", "train")
    data = []
    for _ in range(trajectories):
        goal = rng.choice(goals)
        success = rng.random() < 0.5
        actions = _actions(goal, rng)
        if not success:
            actions[-3] = DeviceAction.type_text(rng.choice(goals).split()[-1])  # a wrong query
        steps = []
        for step, action in enumerate(actions):
            others = [format_action(DeviceAction.tap(round(rng.random(), 2), round(rng.random(), 2))) for _ in range(2)]
            steps.append({
                "observation": f"Previous Actions: Goal: {goal}</s>", "next_observation": f"Goal: {goal}</s>",
                "image_path": rng.choice(SCREENS).name, "image_features": torch.zeros(8), "task": goal,
                "reward": float(success and step == len(actions) - 1), "done": step == len(actions) - 1,
                "action": format_action(action, with_plan=True), "trajectory_reward": float(success),
                "mc_return": 0.0, "action_list": "<split>".join([format_action(action), *others]),
            })
        data.append(steps)
    path = folder / "general_train.pt"
    torch.save(data, path)
    return path, images
