"""The simulated phone's state and dynamics, independent of how it is drawn.

The device is a back stack of :class:`Screen` objects plus a little global state (installed apps,
notification switches, the notification shade, a shopping cart). Every screen exposes its tappable
:class:`Element` boxes; taps resolve against those boxes, so rendering, tap handling and the
``ui_boxes`` reported to action matching all come from one list.

Coordinates are normalized ``(y, x)`` as in AitW. The layout is designed on a 112x224 portrait grid
(``DESIGN_W`` x ``DESIGN_H`` "design pixels") and scales to any rendered size.

The *target* phone (what a base actor trained on static demonstrations of the *source* phone meets
when deployed) differs in two ways, listed in :mod:`~digiq_trl.envs.target_phone`: a fixed set of
version-drift changes in the :class:`Layout` (:meth:`Layout.drifted`), and interruptions: an
:class:`~digiq_trl.envs.target_phone.Interruption` opens an overlay over a screen as it opens, and
while it is shown only its own controls respond.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..actions import ActionType, DeviceAction
from .target_phone import (
    BACK_CLOSES,
    DRIFT_HOME_SWAPS,
    DRIFT_SEARCH_ICON_APPS,
    DRIFT_SETTINGS_SHIFT,
    OVERLAY_CONTROLS,
    SEARCH_ICON_BOX,
    Interruption,
)


DESIGN_W, DESIGN_H = 112, 224
STATUS_BAR_END = 10
HEADER_END = 44
NAV_BAR_START = 210
KEYBOARD_TOP = 132
FIELD_BOX = (16, 4, 22, 84)
"""Search field (top, left, height, width) in design pixels; the same place in every app."""
CLEAR_BOX = (16, 88, 22, 20)
"""The clear-text button at the right end of a non-empty field."""
CART_BOX = (46, 70, 16, 38)
"""The cart button under a shop's header."""
RESULT_ROWS_VISIBLE, RESULT_ROW_TOP, RESULT_ROW_PITCH = 6, 48, 27
NUM_RESULTS, RESULT_SCROLL_STEP = 12, 3
SETTINGS_ROWS_VISIBLE, SETTINGS_ROW_TOP, SETTINGS_ROW_PITCH = 8, 46, 20
SWIPE_FROM_STATUS_BAR = 0.06
"""A downward swipe starting above this height opens the notification shade, as on Android."""

HOME_APPS: tuple[str, ...] = (
    "Chrome", "Gmail", "Maps", "YouTube",
    "Play Store", "Settings", "Calendar", "Clock",
    "Camera", "Gallery", "Messages", "Contacts",
    "Calculator", "Files", "Music", "Phone",
)
"""Apps on the home screen, in their fixed-layout order (a 4x4 grid)."""

SEARCH_APPS: tuple[str, ...] = ("Chrome", "YouTube", "Play Store", "Maps")
"""Apps whose main screen is a search field (Chrome's also takes web addresses)."""

SETTINGS_APPS: tuple[str, ...] = (
    "Amazon Alexa", "Amazon Music", "Amazon Prime Music", "Amazon Prime Video",
    "Amazon Shopping", "Facebook", "Gmail", "Google Chrome",
    "Google Maps", "Google Photos", "Google Play Books", "Google Play Movies",
    "Google Play Music", "Google Play Store", "Instagram", "Lyft",
    "Netflix", "Pandora", "Spotify", "Twitter",
    "Uber", "WhatsApp", "YouTube", "Zoom",
)
"""Apps listed in Settings (three pages of eight), in their fixed-layout order."""

FILLER_APPS: tuple[str, ...] = (
    "Duolingo", "Shazam", "Waze", "Zillow", "Venmo", "Tinder", "Snapchat", "TikTok",
    "Pinterest", "Telegram", "Discord",
)
"""Further Play Store results after the queried app."""

SITES: tuple[str, ...] = ("bestbuy.com", "costco.com", "ebay.com", "newegg.com", "walmart.com")
"""Shopping sites reachable by typing their address in Chrome."""

BRAND_COLOURS: dict[str, tuple[int, int, int]] = {
    "bestbuy.com": (0, 70, 190),
    "costco.com": (220, 30, 50),
    "ebay.com": (245, 175, 0),
    "newegg.com": (240, 110, 20),
    "walmart.com": (0, 150, 220),
}


def dismisses(action: DeviceAction | None, overlay: str) -> bool:
    """Whether ``action`` closes an ``overlay`` (one of :data:`~digiq_trl.envs.target_phone.OVERLAYS`)
    without opening anything: a tap on one of its controls other than an ad's body, or BACK where
    BACK closes it."""
    if action is None or not overlay:
        return False
    if action.action_type == ActionType.PRESS_BACK:
        return overlay in BACK_CLOSES
    if not action.is_tap:
        return False
    y, x = action.touch_point
    return any(Element(name, *box).contains(y, x) for name, box in OVERLAY_CONTROLS[overlay] if name != "ad_body")


@dataclass(frozen=True)
class Element:
    """A tappable element: a name such as ``"app:Chrome"`` and an AitW box in design pixels."""

    name: str
    top: float
    left: float
    height: float
    width: float

    def contains(self, y: float, x: float) -> bool:
        """Whether normalized ``(y, x)`` falls inside the element."""
        top, left = self.top / DESIGN_H, self.left / DESIGN_W
        return top <= y <= top + self.height / DESIGN_H and left <= x <= left + self.width / DESIGN_W

    @property
    def box(self) -> list[float]:
        """Normalized ``[y, x, h, w]`` (the AitW ``ui_annotations_positions`` convention)."""
        return [
            round(self.top / DESIGN_H, 4),
            round(self.left / DESIGN_W, 4),
            round(self.height / DESIGN_H, 4),
            round(self.width / DESIGN_W, 4),
        ]

    @property
    def center(self) -> tuple[float, float]:
        """Normalized ``(y, x)`` of the element's centre, where the expert taps."""
        return (
            round((self.top + self.height / 2) / DESIGN_H, 3),
            round((self.left + self.width / 2) / DESIGN_W, 3),
        )


@dataclass
class Screen:
    """One screen of the back stack.

    ``kind`` is one of: home, app (an app's plain main screen), search (a search app's main screen),
    results, page (a web page), video, newtab, site (a shop's home), product, cart, settings,
    app_settings, ad (the page an ad opens).
    """

    kind: str
    app: str = ""
    site: str = ""
    query: str = ""
    index: int = -1
    text: str = ""
    focused: bool = False
    scroll: int = 0
    incognito: bool = False
    target: str = ""
    overlay: str = ""
    """The interruption shown over this screen (one of :data:`~digiq_trl.envs.target_phone.OVERLAYS`), or ``""``."""

    @property
    def has_field(self) -> bool:
        """Whether the screen shows a search field (or, in a drifted app, the icon that opens it)."""
        return self.kind in ("search", "results", "site")

    @property
    def keyboard(self) -> bool:
        """The on-screen keyboard shows while a field is focused."""
        return self.has_field and self.focused


@dataclass
class Layout:
    """Where things are and how they look; fixed by default, shuffled per episode in random mode."""

    home_order: tuple[str, ...] = HOME_APPS
    settings_order: tuple[str, ...] = SETTINGS_APPS
    colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    search_icon_apps: frozenset[str] = frozenset()
    """Apps whose search screen shows a search icon that opens the field (the drifted version)."""

    @classmethod
    def fixed(cls) -> Layout:
        """The fixed layout: constant positions and colours (what a tiny model can learn)."""
        return cls(colours=default_colours())

    @classmethod
    def random(cls, rng: np.random.Generator) -> Layout:
        """Icon order, settings order and app colours drawn from ``rng``."""
        home = tuple(HOME_APPS[i] for i in rng.permutation(len(HOME_APPS)))
        settings = tuple(SETTINGS_APPS[i] for i in rng.permutation(len(SETTINGS_APPS)))
        names = sorted(set(HOME_APPS) | set(SETTINGS_APPS))
        colours = {name: tuple(int(c) for c in rng.integers(30, 226, size=3)) for name in names}
        return cls(home, settings, colours)

    def drifted(self) -> Layout:
        """This layout after the target phone's version drift: the home icons of
        :data:`DRIFT_HOME_SWAPS` trade places, the Settings list is rotated by
        :data:`DRIFT_SETTINGS_SHIFT`, and :data:`DRIFT_SEARCH_ICON_APPS` hide their search field
        behind an icon."""
        home = list(self.home_order)
        for a, b in DRIFT_HOME_SWAPS:
            i, j = home.index(a), home.index(b)
            home[i], home[j] = home[j], home[i]
        shift = DRIFT_SETTINGS_SHIFT
        settings = self.settings_order[shift:] + self.settings_order[:shift]
        return Layout(tuple(home), settings, dict(self.colours), DRIFT_SEARCH_ICON_APPS)

    def moved_elements(self, source: Layout) -> frozenset[str]:
        """What sits elsewhere than on ``source``: ``app:<name>`` icons, ``setting:<app>`` rows
        (position in the list) and ``field:<app>`` (a field behind an icon)."""
        moved = {f"app:{name}" for i, name in enumerate(self.home_order) if source.home_order[i] != name}
        moved |= {f"setting:{name}" for i, name in enumerate(self.settings_order) if source.settings_order[i] != name}
        return frozenset(moved | {f"field:{app}" for app in self.search_icon_apps - source.search_icon_apps})


def default_colours() -> dict[str, tuple[int, int, int]]:
    """A distinct, saturated colour per app, stable across runs (derived from the name)."""
    palette = [
        (66, 133, 244), (219, 68, 55), (15, 157, 88), (244, 180, 0), (171, 71, 188),
        (0, 172, 193), (255, 112, 67), (124, 179, 66), (92, 107, 192), (240, 98, 146),
        (141, 110, 99), (38, 166, 154), (255, 167, 38), (120, 144, 156), (186, 104, 200),
        (41, 182, 246),
    ]
    names = list(HOME_APPS) + [name for name in SETTINGS_APPS if name not in HOME_APPS]
    return {name: palette[i % len(palette)] for i, name in enumerate(names)}


def site_for_address(text: str) -> str:
    """The shop a typed address points to (``"www.costco.com"`` -> ``"costco.com"``), or ``""``."""
    address = re.sub(r"^(https?://)?(www\.)?", "", text.strip().lower()).rstrip("/")
    return address if address in SITES else ""


def install_name(query: str) -> str:
    """The app name the Play Store lists first for a query (the query itself, trimmed)."""
    return " ".join(query.split())


class Device:
    """The phone: a back stack of screens plus global state, changed by :meth:`apply`.

    Args:
        layout: where icons and list entries are and their colours.
        notifications: per-app notification switch (apps listed in Settings), default all on.
    """

    def __init__(
        self, layout: Layout, notifications: dict[str, bool] | None = None, interruption: Interruption | None = None
    ) -> None:
        self.layout = layout
        self.stack: list[Screen] = [Screen("home")]
        self.shade_open = False
        self.installed: list[str] = []
        self.notifications = dict.fromkeys(SETTINGS_APPS, True)
        self.notifications.update(notifications or {})
        self.cart: list[tuple[str, str, int]] = []
        self.interruption = interruption
        self.screens_opened = 0

    @property
    def screen(self) -> Screen:
        """The screen on top of the back stack (what is shown)."""
        return self.stack[-1]

    def element_at(self, y: float, x: float) -> Element | None:
        """The element a tap at normalized ``(y, x)`` lands on (the topmost), if any."""
        return next((e for e in reversed(self.elements()) if e.contains(y, x)), None)

    def element_identity(self, element: Element) -> str:
        """What an element stands for beyond its place: ``setting:<app>`` for a Settings row,
        ``field:<app>`` for a drifted app's search icon, else its name (``app:<name>``, ...)."""
        screen = self.screen
        if element.name.startswith("setting:"):
            return f"setting:{self.layout.settings_order[screen.scroll + int(element.name.split(':')[1])]}"
        if element.name == "search_icon":
            return f"field:{screen.app}"
        return element.name

    def elements(self) -> list[Element]:
        """Tappable elements of what is on screen, in drawing order."""
        if self.shade_open:
            return []
        screen = self.screen
        if screen.overlay:
            return [Element(f"overlay:{name}", *box) for name, box in OVERLAY_CONTROLS[screen.overlay]]
        builder = _ELEMENT_BUILDERS.get(screen.kind)
        elements = builder(self, screen) if builder else []
        if screen.has_field:
            elements = self._field_elements(screen) + elements
        if screen.keyboard:
            elements = [e for e in elements if e.top + e.height <= KEYBOARD_TOP]
        return elements

    def field_hidden(self, screen: Screen) -> bool:
        """Whether ``screen`` shows the drifted version's search icon instead of its field."""
        return (screen.kind == "search" and screen.app in self.layout.search_icon_apps
                and not screen.focused and not screen.text)

    def _field_elements(self, screen: Screen) -> list[Element]:
        if self.field_hidden(screen):
            return [Element("search_icon", *SEARCH_ICON_BOX)]
        elements = [Element("field", *FIELD_BOX)]
        if screen.text:
            elements.append(Element("clear", *CLEAR_BOX))
        return elements

    def apply(self, action: DeviceAction) -> None:
        """Carry out one valid action as Android would; actions with no effect change nothing."""
        kind = action.action_type
        if self.screen.overlay and not (action.is_tap or kind in (ActionType.PRESS_HOME, ActionType.PRESS_BACK)):
            return  # a modal overlay takes taps, HOME and BACK only
        before = list(self.stack)
        if kind == ActionType.DUAL_POINT and action.is_tap:
            self._tap(*action.touch_point)
        elif kind == ActionType.DUAL_POINT:
            self._swipe(action)
        elif kind == ActionType.TYPE:
            self._type(action.typed_text)
        elif kind == ActionType.PRESS_BACK:
            self._back()
        elif kind == ActionType.PRESS_HOME:
            self.shade_open = False
            self.stack = [Screen("home")]
        elif kind == ActionType.PRESS_ENTER:
            self._enter()
        if self.screen.kind != "home" and all(self.screen is not screen for screen in before):
            self._opened()

    def _opened(self) -> None:
        """A new screen came to the top: count it, and open a pending interruption over it."""
        self.screens_opened += 1
        if self.interruption is not None and self.screens_opened == self.interruption.after:
            self.screen.overlay = self.interruption.kind

    def _tap(self, y: float, x: float) -> None:
        element = self.element_at(y, x)
        if element is not None:
            self._activate(element.name)

    def _activate(self, name: str) -> None:
        screen = self.screen
        head, _, arg = name.partition(":")
        if head == "overlay":
            screen.overlay = ""
            if arg == "ad_body":
                self.stack.append(Screen("ad", app=screen.app))
        elif head == "search_icon":
            screen.focused = True
        elif head == "app":
            self.stack = [Screen("home"), _main_screen(arg)]
        elif head == "field":
            screen.focused = True
        elif head == "clear":
            screen.text, screen.focused = "", True
        elif head == "row":
            self._open_row(screen, screen.scroll + int(arg))
        elif head == "install":
            self._install(result_titles(screen)[screen.scroll + int(arg)])
        elif head == "newtab":
            self.stack.append(Screen("newtab", app="Chrome", incognito=arg == "incognito"))
        elif head == "setting":
            order = self.layout.settings_order
            self.stack.append(Screen("app_settings", app="Settings", target=order[screen.scroll + int(arg)]))
        elif head == "toggle":
            self.notifications[screen.target] = not self.notifications[screen.target]
        elif head == "cart":
            self.stack.append(Screen("cart", app="Chrome", site=screen.site))
        elif head == "add":
            self.cart.append((screen.site, screen.query, screen.index))

    def _install(self, name: str) -> None:
        if name not in self.installed:
            self.installed.append(name)

    def _open_row(self, screen: Screen, index: int) -> None:
        if screen.site:
            kind = "product"
        else:
            kind = {"YouTube": "video"}.get(screen.app, "page")
        self.stack.append(Screen(kind, app=screen.app, site=screen.site, query=screen.query, index=index))

    def _swipe(self, action: DeviceAction) -> None:
        (y0, x0), (y1, x1) = action.touch_point, action.lift_point
        if abs(y1 - y0) < abs(x1 - x0):
            return
        if y0 <= SWIPE_FROM_STATUS_BAR and y1 > y0:
            self.shade_open = True
            return
        if self.shade_open:
            self.shade_open = y1 > y0
            return
        self._scroll(+1 if y1 < y0 else -1)

    def _scroll(self, direction: int) -> None:
        screen = self.screen
        if screen.kind == "results" and not screen.keyboard:
            step, limit = RESULT_SCROLL_STEP, NUM_RESULTS - RESULT_ROWS_VISIBLE
        elif screen.kind == "settings":
            step, limit = SETTINGS_ROWS_VISIBLE, len(self.layout.settings_order) - SETTINGS_ROWS_VISIBLE
        else:
            return
        screen.scroll = int(min(max(screen.scroll + direction * step, 0), limit))

    def _type(self, text: str) -> None:
        screen = self.screen
        if screen.keyboard and not self.shade_open:
            screen.text += text

    def _back(self) -> None:
        if self.shade_open:
            self.shade_open = False
        elif self.screen.overlay:
            if self.screen.overlay in BACK_CLOSES:
                self.screen.overlay = ""
        elif self.screen.keyboard:
            self.screen.focused = False
        elif len(self.stack) > 1:
            self.stack.pop()

    def _enter(self) -> None:
        screen = self.screen
        if self.shade_open or not screen.keyboard or not screen.text.strip():
            return
        screen.focused = False
        query = " ".join(screen.text.split())
        site = site_for_address(query) if screen.app == "Chrome" and not screen.site else ""
        if site:
            self.stack.append(Screen("site", app="Chrome", site=site))
        else:
            self.stack.append(Screen("results", app=screen.app, site=screen.site, query=query, text=query))


def _main_screen(app: str) -> Screen:
    if app == "Settings":
        return Screen("settings", app=app)
    return Screen("search" if app in SEARCH_APPS else "app", app=app)


def _home_elements(device: Device, screen: Screen) -> list[Element]:
    return [Element(f"app:{name}", *home_icon_box(i)) for i, name in enumerate(device.layout.home_order)]


def home_icon_box(index: int) -> tuple[float, float, float, float]:
    """Design-pixel box (top, left, height, width) of the home icon in grid cell ``index``."""
    row, col = divmod(index, 4)
    return (40 + row * 42, col * 28, 40, 28)


def _search_elements(device: Device, screen: Screen) -> list[Element]:
    if screen.app != "Chrome":
        return []
    return [Element("newtab:normal", 56, 10, 30, 92), Element("newtab:incognito", 94, 10, 30, 92)]


def result_rows(screen: Screen) -> list[tuple[int, tuple[float, float, float, float]]]:
    """Visible result rows as ``(row, design-pixel box)``; shops leave room for the cart button."""
    top = RESULT_ROW_TOP + (18 if screen.site else 0)
    rows = []
    for row in range(RESULT_ROWS_VISIBLE):
        box = (top + row * RESULT_ROW_PITCH, 4, RESULT_ROW_PITCH - 2, 104)
        if box[0] + box[2] <= NAV_BAR_START and screen.scroll + row < NUM_RESULTS:
            rows.append((row, box))
    return rows


def result_titles(screen: Screen) -> list[str]:
    """Titles of all results of a results screen; the Play Store lists the queried app first."""
    if screen.app == "Play Store" and not screen.site:
        return [install_name(screen.query)] + list(FILLER_APPS[: NUM_RESULTS - 1])
    return [f"{screen.query} #{i + 1}" for i in range(NUM_RESULTS)]


def _results_elements(device: Device, screen: Screen) -> list[Element]:
    elements = []
    for row, (top, left, height, width) in result_rows(screen):
        if screen.app == "Play Store" and not screen.site:
            elements.append(Element(f"install:{row}", top, left + width / 2, height, width / 2))
        else:
            elements.append(Element(f"row:{row}", top, left, height, width))
    if screen.site:
        elements.append(Element("cart", *CART_BOX))
    return elements


def _settings_elements(device: Device, screen: Screen) -> list[Element]:
    count = min(SETTINGS_ROWS_VISIBLE, len(device.layout.settings_order) - screen.scroll)
    return [
        Element(f"setting:{row}", SETTINGS_ROW_TOP + row * SETTINGS_ROW_PITCH, 4, SETTINGS_ROW_PITCH - 2, 104)
        for row in range(count)
    ]


def _site_elements(device: Device, screen: Screen) -> list[Element]:
    return [Element("cart", *CART_BOX)]


def _product_elements(device: Device, screen: Screen) -> list[Element]:
    return [Element("cart", *CART_BOX), Element("add", 160, 10, 28, 92)]


_ELEMENT_BUILDERS = {
    "home": _home_elements,
    "search": _search_elements,
    "results": _results_elements,
    "settings": _settings_elements,
    "app_settings": lambda device, screen: [Element("toggle", 52, 4, 30, 104)],
    "site": _site_elements,
    "product": _product_elements,
}


def element_named(elements: Sequence[Element], name: str) -> Element | None:
    """The element called ``name``, if on screen."""
    return next((e for e in elements if e.name == name), None)
