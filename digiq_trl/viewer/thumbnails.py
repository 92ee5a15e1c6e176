"""Screenshots for the trajectory viewer: the action drawn on, downscaled, encoded as a data: URI.

Taps and swipes are drawn by :func:`digiq_trl.representation.draw_action` (the marks the
representation model is trained on); actions without a point (typed text, key presses, status)
and unparsable strings get a text banner at the bottom instead, so every step shows what was done.

Example:
    >>> from PIL import Image
    >>> from digiq_trl.viewer.thumbnails import screenshot_thumbnail
    >>> uri = screenshot_thumbnail(Image.new("RGB", (1080, 2400), "white"), 'Action Decision: '
    ...     '"action_type": "PRESS_HOME", "touch_point": "[-1.0, -1.0]", "lift_point": "[-1.0, -1.0]", '
    ...     '"typed_text": ""')
    >>> uri.startswith("data:image/")
    True
"""

from __future__ import annotations

import base64
import io
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from ..actions import ActionType, DeviceAction, describe_action, try_parse_action
from ..representation import draw_action


THUMBNAIL_HEIGHT = 320
"""Screenshots taller than this many pixels are downscaled to it (aspect ratio kept)."""

JPEG_QUALITY = 80
"""Quality of the JPEG encoding (used when it is smaller than PNG, as for photos)."""

BANNER_FILL = (20, 20, 20, 200)
BANNER_TEXT = (255, 255, 255, 255)


def action_label(action: str) -> str | None:
    """The banner text of an action that has no point to draw, or None for taps and swipes.

    ``type "milk"``, ``back``, ``home``, ``enter``, ``complete``, ``impossible`` (as in the
    ``history`` text), or ``invalid action`` for a string that does not parse.
    """
    return _label(try_parse_action(action))


def _label(action: DeviceAction | None) -> str | None:
    if action is None:
        return "invalid action"
    return None if action.action_type == ActionType.DUAL_POINT else describe_action(action)


def screenshot_thumbnail(image: Image.Image, action: str, max_height: int = THUMBNAIL_HEIGHT) -> str:
    """A data: URI of ``image`` with ``action`` drawn on it, at most ``max_height`` pixels tall.

    The mark is drawn at full resolution, then the image is shrunk (so marks keep their relative
    size), then the banner is written at the thumbnail's own scale (so its text stays legible).
    """
    parsed = try_parse_action(action)
    canvas = draw_action(image, parsed) if parsed is not None else image.convert("RGB")
    if canvas.height > max_height:
        width = max(1, round(canvas.width * max_height / canvas.height))
        canvas = canvas.resize((width, max_height), Image.Resampling.LANCZOS)
    label = _label(parsed)
    if label is not None:
        canvas = _with_banner(canvas, label)
    return data_uri(canvas)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    """``text``, cut and ended with an ellipsis where it is wider than ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _with_banner(image: Image.Image, text: str) -> Image.Image:
    """A copy of ``image`` with ``text`` in white on a dark band along its bottom edge."""
    size = max(9, image.width // 11)
    font = _font(size)
    band = round(size * 1.6)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    draw.rectangle((0, image.height - band, image.width, image.height), fill=BANNER_FILL)
    margin = max(2, size // 3)
    draw.text((margin, image.height - band / 2), _fit(text, font, image.width - 2 * margin),
              fill=BANNER_TEXT, font=font, anchor="lm")
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def data_uri(image: Image.Image) -> str:
    """``image`` as a base64 data: URI, PNG or JPEG, whichever is smaller.

    Rendered phone screens (flat colours) compress best as PNG, real screenshots as JPEG.
    """
    encodings = []
    for image_format, mime, options in (("PNG", "image/png", {}), ("JPEG", "image/jpeg", {"quality": JPEG_QUALITY})):
        buffer = io.BytesIO()
        image.save(buffer, image_format, **options)
        encodings.append((len(buffer.getvalue()), mime, buffer.getvalue()))
    _, mime, payload = min(encodings)
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"
