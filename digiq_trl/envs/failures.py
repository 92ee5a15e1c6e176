"""Why an episode failed, read from the simulated phone's state at its end.

DigiRL's failure analysis of AitW agents sorts failed trajectories into wrong clicks or types, no
reasonable attempt, failing to recover, wrong but relevant page and quitting early. The simulator
knows the device state exactly, so each failed episode gets one mode (:data:`FAILURE_MODES`), the
first that applies in this order:

* ``gave up early``: the agent ended the episode itself (STATUS_TASK_COMPLETE / IMPOSSIBLE);
* ``overlay never dismissed``: an interruption still covers the screen, or its ad's page is open;
* ``never submitted``: the field holds an acceptable query that was never sent (no ENTER);
* ``wrong or missing query``: the task needs a query and the field or the results hold a wrong one,
  or none was typed on the right screen;
* ``wrong element tapped``: the agent is in another app, on another app's settings page or on
  another page than the task's;
* ``ran out of steps``: on the way (right app or home screen, no wrong query) when the steps ran out.

Example:
    >>> from digiq_trl.envs.device import Device, Layout, Screen
    >>> from digiq_trl.envs.tasks import parse_goal
    >>> device = Device(Layout.fixed())
    >>> device.stack.append(Screen("search", app="Chrome", text="weather", focused=True))
    >>> failure_mode(parse_goal("What's the news in Chile?"), device, stopped=False)
    'wrong or missing query'
"""

from __future__ import annotations

from .device import Device, site_for_address
from .tasks import Task, query_matches


FAILURE_MODES: tuple[str, ...] = (
    "gave up early",
    "overlay never dismissed",
    "never submitted",
    "wrong or missing query",
    "wrong element tapped",
    "ran out of steps",
)
"""Failure modes in the order they are tested."""

QUERY_TASKS = frozenset({"search", "video", "install", "site_search", "site_first"})
"""Task kinds that need a query typed and submitted."""

_TASK_APPS = {"install": "Play Store", "video": "YouTube", "site": "Chrome", "site_search": "Chrome",
              "site_first": "Chrome", "new_tab": "Chrome", "app_settings": "Settings", "toggle": "Settings"}


def task_app(task: Task) -> str:
    """The app a task is done in (``""`` for the notification shade)."""
    return _TASK_APPS.get(task.kind, task.app)


def failure_mode(task: Task, device: Device, stopped: bool) -> str:
    """The mode of a failed episode that ends in ``device``'s state (``stopped``: the agent ended it)."""
    screen = device.screen
    if stopped:
        return "gave up early"
    if screen.overlay or screen.kind == "ad":
        return "overlay never dismissed"
    if task.kind in QUERY_TASKS or task.kind == "site":
        query = _query_state(task, device)
        if query:
            return query
    app = task_app(task)
    wrong_app = screen.kind != "home" and app and screen.app != app
    wrong_settings = screen.kind == "app_settings" and screen.target != task.app
    if wrong_app or wrong_settings or (task.kind in QUERY_TASKS and screen.kind in ("page", "video", "product")):
        return "wrong element tapped"
    return "ran out of steps"


def _wanted(task: Task, screen_site: str) -> str:
    """What the field should hold: the shop's address before the shop is open, else the query."""
    return task.site if task.kind.startswith("site") and screen_site != task.site else task.query


def _query_state(task: Task, device: Device) -> str:
    """``never submitted`` / ``wrong or missing query`` for a task with a query, or ``""``."""
    screen = device.screen
    if screen.app != task_app(task) or not screen.has_field:
        return ""
    wanted = _wanted(task, screen.site)
    if screen.focused and screen.text:
        right = (site_for_address(screen.text) == task.site if wanted == task.site
                 else query_matches(screen.text, wanted))
        return "never submitted" if right else "wrong or missing query"
    if screen.kind == "results" and not query_matches(screen.query, task.query):
        return "wrong or missing query"
    if screen.kind in ("search", "site") and not screen.text:
        return "wrong or missing query"
    return ""
