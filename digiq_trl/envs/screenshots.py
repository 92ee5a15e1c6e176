"""A montage of typical screens for the docs.

``python -m digiq_trl.envs.screenshots docs/screens.png [fixed|random]`` (the layout mode; a random
layout is drawn from seed 0).

Each panel is the state reached by the scripted expert (or the listed actions) on a real AitW goal.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

from .expert import OPEN_SHADE
from .phone import PhoneEnv


PANELS: list[tuple[str, str, str, int]] = [
    ("home", "general", "Open the calculator", 0),
    ("search typed", "general", "What's the news in Chile?", 3),
    ("results", "general", "What's the news in Chile?", 4),
    ("settings list", "general", "Check the settings for the Spotify app", 2),
    ("app settings", "general", "Toggle notifications for the Google Maps app", 3),
    ("play store", "general", "Install the Spotify app", 4),
    ("shop home", "webshop", "Go to costco.com, search for \"razer kraken\", and select the first entry", 4),
    ("shop results", "webshop", "Go to costco.com, search for \"razer kraken\", and select the first entry", 7),
    ("product", "webshop", "Go to costco.com, search for \"razer kraken\", and select the first entry", 8),
]


def expert_screen(suite: str, goal: str, steps: int, scale: int = 2, layout: str = "fixed") -> Image.Image:
    """The screenshot after ``steps`` expert actions on ``goal`` (rendered ``scale`` times larger)."""
    env = PhoneEnv(suite=suite, width=112 * scale, height=224 * scale, layout=layout)
    obs, info = env.reset(seed=0, options={"goal": goal})
    for _ in range(steps):
        obs, _, _, _, info = env.step(info["expert_action"])
    return obs["image"]


def shade_screen(scale: int = 2, layout: str = "fixed") -> Image.Image:
    """The notification shade pulled down over the home screen."""
    env = PhoneEnv(width=112 * scale, height=224 * scale, layout=layout)
    env.reset(seed=0, options={"goal": "Show me my notifications"})
    return env.step(OPEN_SHADE)[0]["image"]


def montage(scale: int = 2, layout: str = "fixed") -> Image.Image:
    """All panels side by side with captions."""
    images = [(name, expert_screen(suite, goal, steps, scale, layout)) for name, suite, goal, steps in PANELS]
    images.append(("shade", shade_screen(scale, layout)))
    width, height = 112 * scale, 224 * scale
    sheet = Image.new("RGB", ((width + 8) * len(images) + 8, height + 30), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    for i, (name, image) in enumerate(images):
        left = 8 + i * (width + 8)
        sheet.paste(image, (left, 8))
        draw.text((left, height + 12), name, fill=(0, 0, 0))
    return sheet


def main(argv: list[str]) -> None:
    """Write the montage to ``argv[0]`` (default ``docs/screens.png``) in layout ``argv[1]``."""
    path = Path(argv[0] if argv else "docs/screens.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    montage(layout=argv[1] if len(argv) > 1 else "fixed").save(path)
    print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
