"""Stage 1 of Digi-Q: the "actionability" dataset that representation fine-tuning trains on.

Before its features are frozen for the critic, the VLM is fine-tuned to answer one question about a
logged transition: *will this action change the screen?* The answer is read off the data itself:
the screenshot before and after the step are compared, and a step whose screens differ by more
than a threshold counts as "Yes". The paper shows that this small auxiliary task is what makes
VLM features useful to the Q-function: it forces them to encode where the action lands and whether
that place is interactive.

Each example is the screenshot with the action drawn on it (a red dot at the touch point, an arrow
to the lift point for a swipe), the prompt of :mod:`digiq_trl.prompts` (goal, history) followed by
the action and the question, and the answer ``"Yes"`` / ``"No"``. It is in TRL's conversational
prompt-completion vision format (``prompt``, ``completion``, ``images``), so ``trl.SFTTrainer``
trains it directly with the loss on the answer only, for any chat template.

The label ("screen changed") is the mean squared difference of the two screenshots, downscaled to
a quarter of each side (1/16 of the pixels, which removes pixel noise such as a blinking cursor),
over all RGB values on the 0..255 scale, compared with a threshold (30 by default, as in the paper).

Example:
    >>> from digiq_trl.representation import build_actionability_dataset
    >>> ds = build_actionability_dataset(transitions, balance=True)  # doctest: +SKIP
    >>> ds[0]["completion"][0]["content"][0]["text"]  # doctest: +SKIP
    'Yes'
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage
from PIL import ImageDraw

from .actions import ActionType, DeviceAction, parse_action, try_parse_action
from .prompts import user_text


logger = logging.getLogger(__name__)

__all__ = [
    "ACTIONABILITY_FEATURES",
    "ACTIONABILITY_TEMPLATE_ID",
    "DEFAULT_DOWNSCALE",
    "DEFAULT_THRESHOLD",
    "NO",
    "QUESTION",
    "YES",
    "SingleClassError",
    "actionability_example",
    "actionability_prompt",
    "actionability_text",
    "balance_indices",
    "build_actionability_dataset",
    "check_two_classes",
    "draw_action",
    "label_stats",
    "mark_radius",
    "point_to_pixel",
    "screen_change_mse",
    "screen_changed",
]

ACTIONABILITY_TEMPLATE_ID = "digiq-trl/actionability-v1"
"""Names the prompt below, so that a fine-tuned model records which question it was trained on."""

QUESTION = "Will this action change the screen and make progress? Answer Yes or No."
"""The question appended to the action prompt."""

YES, NO = "Yes", "No"
"""The two answers; ``YES`` means the screen changed."""

DEFAULT_THRESHOLD = 30.0
"""Mean squared pixel difference (0..255 scale) above which a step counts as a screen change."""

DEFAULT_DOWNSCALE = 4
"""Each side of both screenshots is divided by this before comparing ("quarter-size")."""

MARK_COLOR = (255, 0, 0)
"""Colour of the drawn touch point and swipe arrow."""

ACTIONABILITY_FEATURES = Features(
    {
        "prompt": List({"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}),
        "completion": List(
            {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
        ),
        "images": List(Image()),
        "screen_changed": Value("bool"),
        "pixel_mse": Value("float32"),
        "episode_id": Value("string"),
    }
)
"""Columns of an actionability dataset: TRL prompt-completion vision format plus the label."""


class SingleClassError(ValueError):
    """All labels are the same, so training would teach a constant answer (and reach a loss of 0)."""


def screen_change_mse(
    before: PILImage.Image, after: PILImage.Image, downscale: int = DEFAULT_DOWNSCALE
) -> float:
    """Mean squared RGB difference (0..255 scale) of two screenshots shrunk by ``downscale`` per side.

    Both images are resized to the size of ``before`` divided by ``downscale`` (at least 1x1) with a
    box filter, so the value does not depend on where exactly a small change lands.
    """
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    size = (max(1, before.width // downscale), max(1, before.height // downscale))
    a = np.asarray(before.convert("RGB").resize(size, PILImage.Resampling.BOX), dtype=np.float64)
    b = np.asarray(after.convert("RGB").resize(size, PILImage.Resampling.BOX), dtype=np.float64)
    return float(np.mean((a - b) ** 2))


def screen_changed(
    before: PILImage.Image,
    after: PILImage.Image,
    threshold: float = DEFAULT_THRESHOLD,
    downscale: int = DEFAULT_DOWNSCALE,
) -> bool:
    """Whether the step changed the screen: :func:`screen_change_mse` strictly above ``threshold``."""
    return screen_change_mse(before, after, downscale) > threshold


def point_to_pixel(point: Sequence[float], width: int, height: int) -> tuple[int, int]:
    """The ``(x, y)`` pixel that contains a normalized ``[y, x]`` point (clipped to the image)."""
    y, x = point
    return min(int(x * width), width - 1), min(int(y * height), height - 1)


def mark_radius(width: int, height: int) -> int:
    """Radius of the drawn touch point: 3 % of the shorter side, at least 2 pixels."""
    return max(2, round(0.03 * min(width, height)))


def draw_action(image: PILImage.Image, action: DeviceAction) -> PILImage.Image:
    """A copy of ``image`` (RGB) with the action drawn on it.

    A tap or the start of a swipe gets a filled dot centred on its touch point; a swipe also gets a
    line from touch to lift point ending in an arrowhead at the lift point. Actions without points
    (TYPE, BACK, HOME, ENTER, status) leave the image unchanged.
    """
    canvas = image.convert("RGB")
    if action.action_type != ActionType.DUAL_POINT:
        return canvas
    draw = ImageDraw.Draw(canvas)
    radius = mark_radius(canvas.width, canvas.height)
    touch = point_to_pixel(action.touch_point, canvas.width, canvas.height)
    draw.ellipse(
        (touch[0] - radius, touch[1] - radius, touch[0] + radius, touch[1] + radius), fill=MARK_COLOR
    )
    if action.is_swipe:
        lift = point_to_pixel(action.lift_point, canvas.width, canvas.height)
        draw.line((touch, lift), fill=MARK_COLOR, width=max(1, radius // 2))
        draw.polygon(_arrowhead(touch, lift, 2 * radius), fill=MARK_COLOR)
    return canvas


def _arrowhead(
    start: tuple[int, int], tip: tuple[int, int], length: float
) -> list[tuple[float, float]]:
    """Triangle with its point at ``tip``, pointing along ``start -> tip``."""
    direction = np.array(tip, dtype=float) - np.array(start, dtype=float)
    norm = float(np.linalg.norm(direction)) or 1.0
    unit = direction / norm
    normal = np.array([-unit[1], unit[0]])
    base = np.array(tip, dtype=float) - length * unit
    corners = (base + 0.5 * length * normal, base - 0.5 * length * normal)
    return [tuple(tip), *(tuple(c) for c in corners)]


def actionability_text(goal: str, history: str, action: str) -> str:
    """The user text: the shared action prompt, the action taken, and the question."""
    return f"{user_text(goal, history)} {action}\n{QUESTION}"


def actionability_prompt(
    processor: Any, image: PILImage.Image, goal: str, history: str, action: str
) -> tuple[PILImage.Image, str]:
    """The stage-1 input of one action, ready to answer: the marked screenshot and the rendered
    prompt (the processor's chat template, generation prompt added). An unparsable action is asked
    about on the unmarked screenshot."""
    parsed = try_parse_action(action)
    marked = draw_action(image, parsed) if parsed is not None else image.convert("RGB")
    prompt = processor.apply_chat_template(_question(goal, history, action), tokenize=False, add_generation_prompt=True)
    return marked, prompt


def _question(goal: str, history: str, action: str) -> list[dict[str, Any]]:
    """The user turn of an actionability example: the image placeholder and the question text."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "text": None},
                {"type": "text", "text": actionability_text(goal, history, action)},
            ],
        }
    ]


def actionability_example(
    image: PILImage.Image, goal: str, history: str, action: str, changed: bool
) -> dict[str, Any]:
    """One example in TRL's conversational prompt-completion vision format (without label columns)."""
    prompt = _question(goal, history, action)
    completion = [{"role": "assistant", "content": [{"type": "text", "text": YES if changed else NO}]}]
    return {
        "prompt": prompt,
        "completion": completion,
        "images": [draw_action(image, parse_action(action))],
    }


def label_stats(labels: Sequence[bool]) -> dict[str, float]:
    """Class counts and ratio of a label column: ``num_yes``, ``num_no``, ``yes_rate``, ``majority_rate``."""
    num_yes = int(sum(bool(label) for label in labels))
    num_no = len(labels) - num_yes
    total = max(1, len(labels))
    return {
        "num_examples": len(labels),
        "num_yes": num_yes,
        "num_no": num_no,
        "yes_rate": num_yes / total,
        "majority_rate": max(num_yes, num_no) / total,
    }


def check_two_classes(labels: Sequence[bool], threshold: float) -> None:
    """Refuse labels that are all one class (the model would learn a constant; loss goes to 0).

    Raises:
        SingleClassError: naming the class, the count and what to check.
    """
    stats = label_stats(labels)
    if stats["num_yes"] and stats["num_no"]:
        return
    only = YES if stats["num_yes"] else NO
    raise SingleClassError(
        f"all {stats['num_examples']} actionability labels are {only!r} at threshold {threshold}: "
        "fine-tuning on one class teaches a constant answer (a loss that falls to 0 and features "
        "that carry nothing). Check that 'next_image' is the screenshot after the step, and look at "
        "the 'pixel_mse' values (screen_change_mse) to pick a threshold between the two kinds of step."
    )


def balance_indices(labels: Sequence[bool], seed: int = 0) -> list[int]:
    """Indices that keep the minority class whole and an equal-size random sample of the majority.

    The indices are returned in their original order, so episodes stay contiguous.
    """
    yes = [i for i, label in enumerate(labels) if label]
    no = [i for i, label in enumerate(labels) if not label]
    minority, majority = (yes, no) if len(yes) <= len(no) else (no, yes)
    kept = random.Random(seed).sample(majority, len(minority))
    return sorted(minority + kept)


def _label_batch(batch: dict[str, list], threshold: float, downscale: int) -> dict[str, list]:
    mse = [screen_change_mse(a, b, downscale) for a, b in zip(batch["image"], batch["next_image"])]
    return {"pixel_mse": mse, "screen_changed": [m > threshold for m in mse]}


def _example_batch(batch: dict[str, list]) -> dict[str, list]:
    rows = [
        actionability_example(image, goal, history, action, changed)
        for image, goal, history, action, changed in zip(
            batch["image"], batch["goal"], batch["history"], batch["action"], batch["screen_changed"]
        )
    ]
    return {key: [row[key] for row in rows] for key in ("prompt", "completion", "images")}


def build_actionability_dataset(
    transitions: Dataset,
    threshold: float = DEFAULT_THRESHOLD,
    balance: bool = False,
    seed: int = 0,
    downscale: int = DEFAULT_DOWNSCALE,
) -> Dataset:
    """The actionability dataset of a canonical transitions dataset (one example per transition).

    Columns: ``prompt`` / ``completion`` (TRL conversational messages), ``images`` (the screenshot
    with the action drawn), ``screen_changed`` (the label), ``pixel_mse`` (the measured difference,
    to tune ``threshold``) and ``episode_id`` (for held-out splits by episode). The class ratio is
    logged; :func:`label_stats` recomputes it from ``screen_changed``.

    Args:
        transitions: rows with ``image``, ``next_image``, ``goal``, ``history`` and ``action``.
        threshold: a step is a screen change when its ``pixel_mse`` is strictly above this.
        balance: down-sample the majority class to the size of the minority class.
        seed: seed of the down-sampling.
        downscale: each side is divided by this before comparing (4: quarter-size screenshots).

    Raises:
        SingleClassError: every label is the same (before balancing).
    """
    missing = {"image", "next_image", "goal", "history", "action", "episode_id"} - set(transitions.column_names)
    if missing:
        raise ValueError(f"transitions lack column(s) {sorted(missing)}; got {transitions.column_names}")
    source = transitions.select_columns(["episode_id", "goal", "history", "action", "image", "next_image"])
    labelled = source.map(
        _label_batch, batched=True, batch_size=64, fn_kwargs={"threshold": threshold, "downscale": downscale}
    )
    labels = labelled["screen_changed"]
    check_two_classes(labels, threshold)
    logger.info("actionability labels at threshold %s: %s", threshold, label_stats(labels))
    if balance:
        labelled = labelled.select(balance_indices(labels, seed))
        logger.info("balanced actionability labels: %s", label_stats(labelled["screen_changed"]))
    return labelled.map(
        _example_batch,
        batched=True,
        batch_size=64,
        remove_columns=["goal", "history", "action", "image", "next_image"],
        features=ACTIONABILITY_FEATURES,
    )
