"""The scripted expert: the next action that makes progress on a task from any device state.

The expert plans from the current state only (no memory), so it also recovers from whatever a noisy
policy did: it closes the shade and interruptions, leaves the wrong app or an ad's page, clears a
wrongly typed query, scrolls back to the top of a list. Its plans are the shortest flows of the suites (1-5 steps General, 4-8 WebShop).
"""

from __future__ import annotations

from collections.abc import Callable

from ..actions import ActionType, DeviceAction
from .device import SETTINGS_ROWS_VISIBLE, Device, Screen, element_named, site_for_address
from .target_phone import OVERLAY_DISMISS
from .tasks import Task, is_success, query_matches


BACK = DeviceAction.press(ActionType.PRESS_BACK)
HOME = DeviceAction.press(ActionType.PRESS_HOME)
ENTER = DeviceAction.press(ActionType.PRESS_ENTER)
COMPLETE = DeviceAction.press(ActionType.STATUS_TASK_COMPLETE)
SCROLL_DOWN = DeviceAction.swipe((0.75, 0.5), (0.3, 0.5))
"""Finger moves up: the list shows later entries."""
SCROLL_UP = DeviceAction.swipe((0.3, 0.5), (0.75, 0.5))
"""Finger moves down: the list shows earlier entries."""
OPEN_SHADE = DeviceAction.swipe((0.02, 0.5), (0.6, 0.5))


def expert_action(task: Task, device: Device) -> DeviceAction:
    """The expert's next action; ``STATUS_TASK_COMPLETE`` once the task is done. It closes an
    interruption first (its dismiss control) and leaves an ad's page with BACK."""
    if is_success(task, device):
        return COMPLETE
    if device.shade_open and task.kind != "notifications":
        return BACK
    if device.screen.overlay:
        return _tap(device, f"overlay:{OVERLAY_DISMISS[device.screen.overlay]}")
    if task.kind == "notifications":
        return OPEN_SHADE
    if device.screen.kind == "ad":
        return BACK
    return _PLANNERS[task.kind](task, device)


def _tap(device: Device, name: str) -> DeviceAction:
    element = element_named(device.elements(), name)
    if element is None:
        raise RuntimeError(f"expert wanted {name!r}, which is not on screen {device.screen}")
    return DeviceAction.tap(*element.center)


def _open_app(device: Device, app: str) -> DeviceAction:
    """Tap the app's icon from the home screen; go home first from anywhere else."""
    return _tap(device, f"app:{app}") if device.screen.kind == "home" else HOME


def _fill_field(device: Device, text: str, accept: Callable[[str], bool]) -> DeviceAction:
    """Make the field hold ``text`` (clearing anything unacceptable) and submit it."""
    screen = device.screen
    if screen.text and not accept(screen.text):
        return _tap(device, "clear")
    if not screen.focused:
        return _tap(device, "search_icon" if device.field_hidden(screen) else "field")
    return ENTER if screen.text else DeviceAction.type_text(text)


def _first_entry(device: Device, name: str) -> DeviceAction:
    """Open the first entry of a results list (hide the keyboard, scroll to the top first)."""
    screen = device.screen
    if screen.keyboard:
        return BACK
    if screen.scroll > 0:
        return SCROLL_UP
    return _tap(device, f"{name}:0")


def _search_in_app(task: Task, device: Device, app: str, then: str = "") -> DeviceAction:
    """Search ``task.query`` in ``app``; then open (``row``) or install the first entry."""
    screen = device.screen
    if screen.app != app or screen.site:
        return _open_app(device, app)
    if then and screen.kind == "results" and query_matches(screen.query, task.query):
        return _first_entry(device, then)
    if not screen.has_field:
        return BACK
    return _fill_field(device, task.query, lambda text: query_matches(text, task.query))


def _site(task: Task, device: Device) -> DeviceAction:
    """Type the shop's address in Chrome, search the shop, open the first entry."""
    screen = device.screen
    if screen.site == task.site:
        return _in_site(task, device, screen)
    if screen.app != "Chrome":
        return _open_app(device, "Chrome")
    if screen.site or not screen.has_field:
        return BACK
    return _fill_field(device, task.site, lambda text: site_for_address(text) == task.site)


def _in_site(task: Task, device: Device, screen: Screen) -> DeviceAction:
    if screen.kind == "results" and task.kind == "site_first" and query_matches(screen.query, task.query):
        return _first_entry(device, "row")
    if not screen.has_field:
        return BACK
    return _fill_field(device, task.query, lambda text: query_matches(text, task.query))


def _settings(task: Task, device: Device) -> DeviceAction:
    """Open Settings, page to the app, open its page (and flip its notification switch)."""
    screen = device.screen
    if screen.kind == "app_settings":
        return _tap(device, "toggle") if screen.target == task.app else BACK
    if screen.kind != "settings":
        return _open_app(device, "Settings")
    index = device.layout.settings_order.index(task.app)
    page_start = index - index % SETTINGS_ROWS_VISIBLE
    if screen.scroll < page_start:
        return SCROLL_DOWN
    if screen.scroll > page_start:
        return SCROLL_UP
    return _tap(device, f"setting:{index - screen.scroll}")


def _new_tab(task: Task, device: Device) -> DeviceAction:
    screen = device.screen
    if screen.app != "Chrome":
        return _open_app(device, "Chrome")
    if screen.kind != "search":
        return BACK
    return _tap(device, "newtab:incognito" if task.incognito else "newtab:normal")


_PLANNERS: dict[str, Callable[[Task, Device], DeviceAction]] = {
    "open_app": lambda task, device: _open_app(device, task.app),
    "new_tab": _new_tab,
    "app_settings": _settings,
    "toggle": _settings,
    "install": lambda task, device: _search_in_app(task, device, "Play Store", then="install"),
    "video": lambda task, device: _search_in_app(task, device, "YouTube", then="row"),
    "search": lambda task, device: _search_in_app(task, device, task.app),
    "site": _site,
    "site_search": _site,
    "site_first": _site,
}
