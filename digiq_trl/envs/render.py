"""Drawing the device state as a phone screenshot with PIL.

Text is drawn for people looking at the screenshots; a tiny model cannot read it at 112x224, so every
state that matters also has a colour/position cue: each app has its own header colour, a focused
field has a yellow outline and the keyboard, a filled field shows dark text and a clear button,
switches are green or grey, the notification shade darkens the top of the screen.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from .device import (
    BRAND_COLOURS,
    CART_BOX,
    CLEAR_BOX,
    DESIGN_H,
    DESIGN_W,
    FIELD_BOX,
    HEADER_END,
    KEYBOARD_TOP,
    NAV_BAR_START,
    NUM_RESULTS,
    SETTINGS_ROW_PITCH,
    SETTINGS_ROW_TOP,
    SETTINGS_ROWS_VISIBLE,
    STATUS_BAR_END,
    Device,
    Screen,
    home_icon_box,
    result_rows,
    result_titles,
)
from .target_phone import OVERLAY_CONTROLS, SEARCH_ICON_BOX


Colour = tuple[int, int, int]
WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
FOCUS: Colour = (255, 196, 0)
SETTINGS_BLUE: Colour = (60, 72, 100)
SWITCH_ON: Colour = (30, 170, 80)
SWITCH_OFF: Colour = (150, 150, 150)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(5, size))


def _tint(colour: Colour, amount: float = 0.8) -> Colour:
    """``colour`` mixed with white (``amount`` of white)."""
    return tuple(int(c + (255 - c) * amount) for c in colour)


def _hash_colour(text: str) -> Colour:
    digest = hashlib.md5(text.encode("utf-8")).digest()
    return (60 + digest[0] % 160, 60 + digest[1] % 160, 60 + digest[2] % 160)


class Canvas:
    """A PIL drawing surface addressed in design pixels (112x224), scaled to the output size."""

    def __init__(self, width: int, height: int) -> None:
        self.image = Image.new("RGB", (width, height), WHITE)
        self.draw = ImageDraw.Draw(self.image)
        self.sx, self.sy = width / DESIGN_W, height / DESIGN_H

    def _xy(self, top: float, left: float, height: float, width: float) -> list[float]:
        x0, y0 = left * self.sx, top * self.sy
        return [x0, y0, max(x0, (left + width) * self.sx - 1), max(y0, (top + height) * self.sy - 1)]

    def rect(self, box: tuple, fill: Colour, outline: Colour | None = None, radius: float = 0,
             width: int = 1) -> None:
        """A (rounded) rectangle over ``box`` = (top, left, height, width) in design pixels."""
        self.draw.rounded_rectangle(
            self._xy(*box), radius=radius * self.sx, fill=fill, outline=outline,
            width=max(1, round(width * self.sx)),
        )

    def text(self, top: float, left: float, text: str, fill: Colour, size: float = 7) -> None:
        """Text with its top-left corner at (top, left)."""
        self.draw.text((left * self.sx, top * self.sy), text, fill=fill, font=_font(round(size * self.sy)))

    def dim(self, box: tuple, amount: float = 0.6) -> None:
        """Darken ``box`` = (top, left, height, width) towards black by ``amount`` (a modal scrim)."""
        x0, y0, x1, y1 = (round(v) for v in self._xy(*box))
        region = self.image.crop((x0, y0, x1 + 1, y1 + 1))
        self.image.paste(Image.blend(region, Image.new("RGB", region.size, BLACK), amount), (x0, y0))

    def polygon(self, points: list[tuple[float, float]], fill: Colour) -> None:
        """A filled polygon through design-pixel ``(y, x)`` points."""
        self.draw.polygon([(x * self.sx, y * self.sy) for y, x in points], fill=fill)


def render(device: Device, width: int, height: int) -> Image.Image:
    """Screenshot of the device as an RGB image of ``width`` x ``height`` pixels."""
    canvas = Canvas(width, height)
    screen = device.screen
    _SCREEN_PAINTERS[screen.kind](canvas, device, screen)
    if screen.keyboard:
        _keyboard(canvas)
    if screen.overlay:
        canvas.dim((STATUS_BAR_END, 0, NAV_BAR_START - STATUS_BAR_END, DESIGN_W))
        _OVERLAY_PAINTERS[screen.overlay](canvas)
    _status_bar(canvas)
    _nav_bar(canvas)
    if device.shade_open:
        _shade(canvas)
    return canvas.image


def _status_bar(c: Canvas) -> None:
    c.rect((0, 0, STATUS_BAR_END, DESIGN_W), (32, 33, 36))
    c.text(1.5, 4, "12:00", WHITE, 6)
    c.rect((2.5, 96, 5, 10), WHITE, radius=1)


def _nav_bar(c: Canvas) -> None:
    c.rect((NAV_BAR_START, 0, DESIGN_H - NAV_BAR_START, DESIGN_W), BLACK)
    y = NAV_BAR_START + 7
    c.polygon([(y - 3, 22), (y, 18), (y + 3, 22)], (200, 200, 200))
    c.rect((y - 3, 53, 6, 6), BLACK, outline=(200, 200, 200), radius=3)
    c.rect((y - 3, 87, 6, 6), BLACK, outline=(200, 200, 200))


def _header(c: Canvas, colour: Colour, title: str = "") -> None:
    c.rect((STATUS_BAR_END, 0, HEADER_END - STATUS_BAR_END, DESIGN_W), colour)
    if title:
        c.text(STATUS_BAR_END + 9, 6, title, WHITE, 10)


def _field(c: Canvas, screen: Screen, placeholder: str = "Search or type URL") -> None:
    outline = FOCUS if screen.focused else (210, 210, 210)
    c.rect(FIELD_BOX, WHITE, outline=outline, radius=4, width=3 if screen.focused else 1)
    top, left = FIELD_BOX[0], FIELD_BOX[1]
    if screen.text:
        c.text(top + 6, left + 5, screen.text[:22], BLACK, 8)
        c.rect((CLEAR_BOX[0] + 4, CLEAR_BOX[1] + 3, 14, 14), (90, 90, 90), radius=7)
        c.text(CLEAR_BOX[0] + 5, CLEAR_BOX[1] + 7, "x", WHITE, 9)
    else:
        c.text(top + 7, left + 5, placeholder, (150, 150, 150), 6)
    if screen.focused:
        cursor = left + 5 + min(len(screen.text), 22) * 3.6
        c.rect((top + 4, cursor, 14, 1.5), (20, 20, 200))


def _search_icon(c: Canvas) -> None:
    """The drifted version's search button: a magnifier in the header's right end, and the app's name."""
    top, left, height, width = SEARCH_ICON_BOX
    c.rect(SEARCH_ICON_BOX, WHITE, radius=height / 2)
    c.rect((top + 4, left + 4, 10, 10), WHITE, outline=BLACK, radius=5, width=2)
    c.polygon([(top + 13, left + 12), (top + 18, left + 17), (top + 17, left + 18), (top + 12, left + 13)], BLACK)


def _keyboard(c: Canvas) -> None:
    c.rect((KEYBOARD_TOP, 0, NAV_BAR_START - KEYBOARD_TOP, DESIGN_W), (208, 211, 218))
    for row, keys in enumerate((10, 9, 9)):
        pitch = DESIGN_W / 10
        start = (DESIGN_W - keys * pitch) / 2
        for key in range(keys):
            c.rect((KEYBOARD_TOP + 5 + row * 18, start + key * pitch + 1, 15, pitch - 2), WHITE, radius=2)
    c.rect((KEYBOARD_TOP + 59, 22, 15, 68), WHITE, radius=2)
    c.rect((KEYBOARD_TOP + 59, 92, 15, 18), (26, 115, 232), radius=2)


def _shade(c: Canvas) -> None:
    c.rect((0, 0, 150, DESIGN_W), (40, 42, 54))
    for i in range(5):
        c.rect((16, 6 + i * 21, 16, 16), (138, 180, 248) if i % 2 == 0 else (95, 99, 104), radius=8)
    for i in range(2):
        c.rect((44 + i * 48, 4, 42, 104), (240, 240, 245), radius=6)
        c.rect((50 + i * 48, 10, 10, 10), _hash_colour(f"note{i}"), radius=5)
        c.text(50 + i * 48, 26, ("Gmail: 2 new" if i == 0 else "Calendar: 9:00"), BLACK, 7)
        c.rect((66 + i * 48, 10, 4, 80), (180, 180, 180))


def _home(c: Canvas, device: Device, screen: Screen) -> None:
    c.rect((0, 0, DESIGN_H, DESIGN_W), (22, 58, 92))
    c.text(14, 32, "12:00", WHITE, 16)
    for index, name in enumerate(device.layout.home_order):
        top, left, _, width = home_icon_box(index)
        c.rect((top + 4, left + 4, 20, 20), device.layout.colours[name], radius=5)
        label = name if len(name) <= 7 else name[:6] + "."
        c.text(top + 27, left + 1 + max(0, (7 - len(label))) * 1.6, label, WHITE, 6)


def _plain_app(c: Canvas, device: Device, screen: Screen) -> None:
    colour = device.layout.colours[screen.app]
    _header(c, colour, screen.app)
    c.rect((HEADER_END, 0, NAV_BAR_START - HEADER_END, DESIGN_W), _tint(colour, 0.85))
    for row in range(4):
        for col in range(3):
            c.rect((60 + row * 34, 8 + col * 34, 28, 30), _tint(colour, 0.45), radius=4)


def _search(c: Canvas, device: Device, screen: Screen) -> None:
    colour = device.layout.colours[screen.app]
    _header(c, colour)
    if device.field_hidden(screen):
        _search_icon(c)
    else:
        _field(c, screen, "Search or type URL" if screen.app == "Chrome" else f"Search {screen.app}")
    if screen.app == "Chrome":
        c.rect((56, 10, 30, 92), (232, 234, 237), radius=6)
        c.text(66, 30, "+ New tab", BLACK, 8)
        c.rect((94, 10, 30, 92), (60, 64, 67), radius=6)
        c.text(104, 22, "Incognito tab", WHITE, 8)
        return
    for row in range(3):
        for col in range(2):
            c.rect((52 + row * 26, 6 + col * 52, 22, 48), _tint(colour, 0.6), radius=3)


def _results(c: Canvas, device: Device, screen: Screen) -> None:
    colour = BRAND_COLOURS[screen.site] if screen.site else device.layout.colours[screen.app]
    _header(c, colour)
    _field(c, screen)
    if screen.site:
        _cart_bar(c, device, screen.site)
    titles = result_titles(screen)
    for row, box in result_rows(screen):
        index = screen.scroll + row
        _result_row(c, device, screen, box, titles[index], index)
    _scrollbar(c, screen.scroll, NUM_RESULTS, len(result_rows(screen)), HEADER_END + (18 if screen.site else 0))


def _result_row(c: Canvas, device: Device, screen: Screen, box: tuple, title: str, index: int) -> None:
    top, left, height, width = box
    c.rect(box, (245, 245, 248), outline=(220, 220, 225), radius=3)
    c.rect((top + 3, left + 3, height - 6, height - 6), _hash_colour(title), radius=2)
    c.text(top + 4, left + height + 1, title[:18], BLACK, 6)
    c.rect((top + 14, left + height + 1, 3, 40), (180, 180, 185))
    if screen.app == "Play Store" and not screen.site:
        installed = title in device.installed
        button = (top + 4, left + width / 2 + 10, height - 8, width / 2 - 14)
        c.rect(button, (200, 200, 200) if installed else (1, 135, 95), radius=3)
        c.text(top + 8, left + width / 2 + 14, "Installed" if installed else "Install", WHITE, 6)
    elif screen.site:
        c.text(top + 13, left + width - 26, f"${99 + 37 * index}", (180, 30, 30), 6)


def _scrollbar(c: Canvas, scroll: int, total: int, visible: int, top: float) -> None:
    track = NAV_BAR_START - top - 4
    thumb = track * visible / total
    offset = (track - thumb) * scroll / max(1, total - visible)
    c.rect((top + 2 + offset, DESIGN_W - 3, thumb, 2), (120, 120, 120))


def _cart_bar(c: Canvas, device: Device, site: str) -> None:
    brand = BRAND_COLOURS[site]
    c.rect((HEADER_END, 0, 20, DESIGN_W), _tint(brand, 0.75))
    c.text(HEADER_END + 6, 4, site, BLACK, 7)
    count = sum(1 for item in device.cart if item[0] == site)
    c.rect(CART_BOX, brand, radius=4)
    c.text(CART_BOX[0] + 4, CART_BOX[1] + 5, f"Cart ({count})", WHITE, 7)


def _site(c: Canvas, device: Device, screen: Screen) -> None:
    brand = BRAND_COLOURS[screen.site]
    _header(c, brand)
    _field(c, screen, f"Search {screen.site}")
    _cart_bar(c, device, screen.site)
    for row in range(3):
        for col in range(2):
            top, left = 70 + row * 44, 6 + col * 52
            c.rect((top, left, 40, 48), (240, 240, 240), radius=3)
            c.rect((top + 4, left + 10, 24, 28), _tint(brand, 0.4), radius=2)


def _product(c: Canvas, device: Device, screen: Screen) -> None:
    brand = BRAND_COLOURS[screen.site]
    _header(c, brand, screen.site.split(".")[0])
    _cart_bar(c, device, screen.site)
    title = f"{screen.query} #{screen.index + 1}"
    c.rect((70, 16, 62, 80), _hash_colour(title), radius=4)
    c.text(136, 6, title[:24], BLACK, 7)
    c.text(147, 6, f"${99 + 37 * screen.index}.99", (180, 30, 30), 8)
    c.rect((160, 10, 28, 92), brand, radius=6)
    c.text(169, 30, "Add to cart", WHITE, 8)


def _cart(c: Canvas, device: Device, screen: Screen) -> None:
    brand = BRAND_COLOURS[screen.site]
    _header(c, brand, "Cart")
    items = [item for item in device.cart if item[0] == screen.site]
    for row, (_, query, index) in enumerate(items[:6]):
        c.rect((50 + row * 26, 4, 24, 104), (245, 245, 248), radius=3)
        c.text(58 + row * 26, 8, f"{query} #{index + 1}"[:22], BLACK, 6)
    if not items:
        c.text(60, 24, "Your cart is empty", (120, 120, 120), 7)


def _page(c: Canvas, device: Device, screen: Screen) -> None:
    _header(c, device.layout.colours[screen.app], screen.query[:14])
    c.rect((52, 6, 50, 100), _hash_colour(f"{screen.query}{screen.index}"), radius=3)
    for line in range(8):
        c.rect((110 + line * 11, 6, 100 - (line % 3) * 17, 4), (190, 190, 195))


def _video(c: Canvas, device: Device, screen: Screen) -> None:
    c.rect((STATUS_BAR_END, 0, NAV_BAR_START - STATUS_BAR_END, DESIGN_W), (15, 15, 15))
    c.rect((20, 0, 64, DESIGN_W), _hash_colour(f"{screen.query}{screen.index}"))
    c.polygon([(40, 46), (64, 46), (52, 68)], (230, 30, 30))
    c.text(90, 4, f"{screen.query} #{screen.index + 1}"[:24], WHITE, 7)
    c.rect((88, 0, 2, DESIGN_W * 0.3), (230, 30, 30))
    for row in range(4):
        c.rect((106 + row * 24, 4, 20, 34), (60, 60, 60), radius=2)


def _newtab(c: Canvas, device: Device, screen: Screen) -> None:
    background = (53, 54, 58) if screen.incognito else WHITE
    c.rect((STATUS_BAR_END, 0, NAV_BAR_START - STATUS_BAR_END, DESIGN_W), background)
    _header(c, device.layout.colours["Chrome"])
    c.rect(FIELD_BOX, (90, 90, 95) if screen.incognito else (235, 235, 235), radius=4)
    if screen.incognito:
        c.rect((70, 36, 40, 40), (140, 140, 150), radius=20)
        c.text(120, 20, "You've gone Incognito", (220, 220, 220), 7)
    else:
        for i, colour in enumerate(((66, 133, 244), (219, 68, 55), (244, 180, 0), (15, 157, 88))):
            c.rect((80, 22 + i * 18, 18, 14), colour, radius=4)


def _settings(c: Canvas, device: Device, screen: Screen) -> None:
    _header(c, SETTINGS_BLUE, "Settings")
    order = device.layout.settings_order
    for row in range(min(SETTINGS_ROWS_VISIBLE, len(order) - screen.scroll)):
        name = order[screen.scroll + row]
        top = SETTINGS_ROW_TOP + row * SETTINGS_ROW_PITCH
        c.rect((top, 4, SETTINGS_ROW_PITCH - 2, 104), (246, 246, 250), radius=3)
        c.rect((top + 3, 8, 12, 12), device.layout.colours[name], radius=6)
        c.text(top + 5, 24, name, BLACK, 6)
    _scrollbar(c, screen.scroll, len(order), SETTINGS_ROWS_VISIBLE, HEADER_END)


def _app_settings(c: Canvas, device: Device, screen: Screen) -> None:
    colour = device.layout.colours[screen.target]
    _header(c, colour, screen.target[:16])
    on = device.notifications[screen.target]
    c.rect((52, 4, 30, 104), (246, 246, 250), radius=4)
    c.text(62, 10, "Notifications", BLACK, 7)
    c.rect((60, 74, 14, 28), SWITCH_ON if on else SWITCH_OFF, radius=7)
    c.rect((61, 89 if on else 75, 12, 12), WHITE, radius=6)
    for row, label in enumerate(("Permissions", "Storage", "Battery", "Open by default")):
        c.text(96 + row * 20, 10, label, (110, 110, 110), 7)


def _ad_page(c: Canvas, device: Device, screen: Screen) -> None:
    """The advertised app's store page that tapping an ad opens."""
    _header(c, (1, 135, 95), "Sponsored")
    c.rect((52, 8, 44, 44), (255, 120, 0), radius=8)
    c.text(58, 58, "MegaGame", BLACK, 8)
    c.rect((74, 58, 16, 46), (1, 135, 95), radius=3)
    c.text(78, 64, "Install", WHITE, 7)
    for line in range(6):
        c.rect((110 + line * 12, 8, 5, 96 - (line % 2) * 20), (200, 200, 205))


def _control(c: Canvas, kind: str, name: str) -> tuple[float, float, float, float]:
    return dict(OVERLAY_CONTROLS[kind])[name]


def _consent(c: Canvas) -> None:
    c.rect((STATUS_BAR_END, 0, 62, DESIGN_W), WHITE)
    c.text(STATUS_BAR_END + 6, 6, "Cookies", BLACK, 8)
    for line in range(4):
        c.rect((STATUS_BAR_END + 30 + line * 8, 6, 4, 96 - (line % 2) * 24), (190, 190, 195))
    box = _control(c, "consent", "accept")
    c.rect(box, (26, 115, 232), radius=5)
    c.text(box[0] + 7, box[1] + 2, "Accept", WHITE, 6)


def _ad(c: Canvas) -> None:
    top, left, height, width = _control(c, "ad", "ad_body")
    c.rect((top - 10, left, height + 10, width), (255, 120, 0))
    c.rect((60, 16, 70, 80), (255, 210, 0), radius=10)
    c.polygon([(78, 40), (110, 40), (94, 72)], (230, 30, 30))
    c.text(140, 14, "PLAY MEGAGAME", WHITE, 9)
    c.rect((160, 20, 26, 72), (1, 135, 95), radius=6)
    c.text(168, 34, "Play now", WHITE, 8)
    c.text(16, 4, "Ad", WHITE, 7)
    close = _control(c, "ad", "close")
    c.rect(close, (60, 60, 60), radius=close[2] / 2)
    c.text(close[0] + 2, close[1] + 5, "x", WHITE, 9)


def _dialog(c: Canvas, kind: str, title: str, buttons: tuple[str, str], accent: Colour) -> None:
    c.rect((84, 8, 76, 96), WHITE, radius=8)
    c.rect((92, 48, 16, 16), accent, radius=8)
    c.text(114, 14, title, BLACK, 7)
    for name, label in zip(("deny", "allow") if kind == "permission" else ("not_now", "rate"), buttons):
        box = _control(c, kind, name)
        c.rect(box, _tint(accent, 0.7), radius=4)
        c.text(box[0] + 6, box[1] + 5, label, BLACK, 7)


_OVERLAY_PAINTERS = {
    "consent": _consent,
    "ad": _ad,
    "permission": lambda c: _dialog(c, "permission", "Allow location access?", ("Deny", "Allow"), (26, 115, 232)),
    "rating": lambda c: _dialog(c, "rating", "Enjoying the app?", ("Not now", "Rate"), (244, 180, 0)),
}


_SCREEN_PAINTERS = {
    "home": _home,
    "app": _plain_app,
    "search": _search,
    "results": _results,
    "page": _page,
    "video": _video,
    "newtab": _newtab,
    "site": _site,
    "product": _product,
    "cart": _cart,
    "settings": _settings,
    "app_settings": _app_settings,
    "ad": _ad_page,
}
