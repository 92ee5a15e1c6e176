"""Task suites built from the real AitW goals: parsing goals into tasks, splits, and success.

Each AitW goal is parsed into a :class:`Task` (a template plus its entities), e.g.
``"Install the Spotify app"`` -> ``Task(kind="install", app="Spotify")``. Goals that fit no template
become a web search for the goal's content words (any query holding them counts). Success is judged from the device state, the way the
AitW evaluator judges a screenshot: the results of a search for the goal's terms on screen, the named
app's settings page open, the first entry of the right query opened, and so on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources

import numpy as np

from .device import SETTINGS_APPS, SITES, Device


SUITES = ("general", "webshop")
SPLITS = ("train", "test", "heldout")
HELDOUT_PERCENT = 17
"""Share of unique goals (by a stable hash) held out of ``train`` to measure generalization."""

HOME_ALIASES = {
    "chrome": "Chrome", "google chrome": "Chrome", "gmail": "Gmail", "email": "Gmail",
    "maps": "Maps", "google maps": "Maps", "youtube": "YouTube", "play store": "Play Store",
    "google play store": "Play Store", "settings": "Settings", "calendar": "Calendar",
    "clock": "Clock", "camera": "Camera", "gallery": "Gallery", "photos": "Gallery",
    "sms": "Messages", "messages": "Messages", "contacts": "Contacts", "calculator": "Calculator",
    "files": "Files", "downloads": "Files", "music": "Music", "phone": "Phone",
}
"""How goals name the home-screen apps."""

STOPWORDS = frozenset(
    "a an and are at can did do does find for from get go google how i in is it like me much my of "
    "on please search show the to was what what's whats where who".split()
)
"""Question and command words: not key terms, and dropped from the start of a typed query."""

PSEUDO_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")
"""Syllables of the made-up entity names of :func:`with_pseudo_entities`."""

_TYPOS = {"Checkthe": "Check the", "Searchfor": "Search for", "alarmfor": "alarm for",
          "rateagainst": "rate against", "theFalkland": "the Falkland", "WHat": "What"}


@dataclass(frozen=True)
class Task:
    """A parsed goal.

    ``kind`` is one of: open_app, new_tab, notifications, app_settings, toggle, install, video,
    search (``app`` is Chrome or Maps), site, site_search, site_first.
    ``switch_target`` is the wanted notification state of a toggle task, drawn at reset.
    """

    goal: str
    kind: str
    app: str = ""
    query: str = ""
    site: str = ""
    incognito: bool = False
    switch: str = ""
    switch_target: bool | None = None

    def resolve(self, rng: np.random.Generator) -> Task:
        """This task with its random parts drawn (the wanted state of a notification switch)."""
        if self.kind != "toggle":
            return self
        target = {"on": True, "off": False}.get(self.switch, bool(rng.integers(2)))
        return dataclasses.replace(self, switch_target=target)

    def initial_notifications(self) -> dict[str, bool]:
        """Notification switches at reset: a toggle task starts opposite to its target."""
        if self.kind == "toggle" and self.switch_target is not None:
            return {self.app: not self.switch_target}
        return {}


def _clean(goal: str) -> str:
    for typo, fix in _TYPOS.items():
        goal = goal.replace(typo, fix)
    return " ".join(goal.split())


def _words(text: str) -> list[str]:
    """Words with surrounding punctuation stripped, case kept."""
    words = (w.strip(".,;:!?\"'()") for w in text.split())
    return [w for w in words if w]


def search_text(text: str) -> str:
    """What a user types to look a question up: its content words, in order, case kept.

    ``"What's the news in Chile?"`` -> ``"news Chile"``. Short queries keep the TYPE action short,
    which matters for a small model: an 800-step tiny actor reached 17 % success on its own data
    with these, 4.5 % when it had to type the goal's whole span (``"news in Chile"``).
    """
    words = _words(text)
    return " ".join(w for w in words if w.lower() not in STOPWORDS) or " ".join(words)


def key_terms(text: str) -> set[str]:
    """The lower-cased content words of ``text`` (all its words if it has no content word)."""
    words = [w.lower() for w in _words(text)]
    return {w for w in words if w not in STOPWORDS} or set(words)


def query_matches(shown: str, wanted: str) -> bool:
    """Whether a query on screen contains every key term of the wanted one (case-insensitive)."""
    terms = key_terms(wanted)
    return bool(terms) and terms <= {w.lower() for w in _words(shown)}


def _settings_app(name: str) -> str:
    lookup = {app.lower(): app for app in SETTINGS_APPS}
    return lookup.get(name.strip().lower(), "")


_RULES: list[tuple[str, str]] = [
    (r"^go to (?P<site>[a-z.]+), search for [\"'](?P<q>[^\"']+)[\"'], and select the first entry$",
     "site_first"),
    (r"^go to (?P<site>[a-z.]+), search for [\"'](?P<q>[^\"']+)[\"']$", "site_search"),
    (r"^go to (?P<site>[a-z]+\.com)$", "site"),
    (r"^show me my notifications$", "notifications"),
    (r"^open a new chrome (?P<mode>incognito |private )?(?:tab|window)$", "new_tab"),
    (r"^open a new (?P<mode>incognito |private )?(?:tab|window) in (?:the )?chrome(?: app)?$", "new_tab"),
    (r"^check the settings for the (?P<app>.+) app$", "app_settings"),
    (r"^(?P<switch>toggle|turn on|turn off) notifications for the (?P<app>.+) app$", "toggle"),
    (r"^install the (?P<app>.+) app$", "install"),
    (r"^play the new (?P<q>.+) video on youtube$", "video"),
    (r"^play the latest video from (?:the )?(?P<q>.+)$", "video"),
    (r"^what's the latest video from (?P<q>.+?)\??$", "video"),
    (r"^play (?:some )?(?P<q>.+) on youtube$", "video"),
    (r"^(?:find|search for) (?P<q>.+) on (?:google )?maps$", "maps"),
    (r"^check my (?:e-?mail|gmail)(?: inbox)?$", "gmail"),
    (r"^open (?:the )?(?P<app>.+?)(?: app)?$", "open_app"),
]


def _from_match(goal: str, kind: str, match: re.Match) -> Task | None:
    groups = match.groupdict()
    if kind in ("site", "site_search", "site_first"):
        site = groups["site"].lower()
        return Task(goal, kind, site=site, query=groups.get("q") or "") if site in SITES else None
    if kind == "new_tab":
        return Task(goal, kind, app="Chrome", incognito=bool(groups["mode"]))
    if kind in ("app_settings", "toggle"):
        app = _settings_app(groups["app"])
        return Task(goal, kind, app=app, switch=groups.get("switch") or "") if app else None
    if kind == "install":
        return Task(goal, kind, app=groups["app"].strip(), query=groups["app"].strip())
    if kind == "video":
        return Task(goal, kind, app="YouTube", query=" ".join(_words(groups["q"])))
    if kind == "maps":
        return Task(goal, "search", app="Maps", query=search_text(groups["q"]))
    if kind == "gmail":
        return Task(goal, "open_app", app="Gmail")
    if kind == "open_app":
        app = HOME_ALIASES.get(groups["app"].lower())
        return Task(goal, kind, app=app) if app else None
    return Task(goal, kind)


@lru_cache(maxsize=4096)
def parse_goal(goal: str) -> Task:
    """Parse an AitW goal into a task; goals that fit no template become a Chrome search."""
    text = _clean(goal).rstrip()
    for pattern, kind in _RULES:
        match = re.match(pattern, text, flags=re.IGNORECASE)
        task = _from_match(goal, kind, match) if match else None
        if task is not None:
            return task
    return Task(goal, "search", app="Chrome", query=search_text(text))


def is_success(task: Task, device: Device) -> bool:
    """Whether the device state shows the task done (what AitW's evaluator would accept); never
    while an interruption covers the screen."""
    if device.screen.overlay:
        return False
    if task.kind == "notifications":
        return device.shade_open
    if task.kind == "toggle":
        return device.notifications.get(task.app) == task.switch_target
    if task.kind == "install":
        return any(query_matches(name, task.app) for name in device.installed)
    if device.shade_open:
        return False
    s = device.screen
    checks = {
        "open_app": lambda: s.app == task.app,
        "new_tab": lambda: s.kind == "newtab" and s.incognito == task.incognito,
        "app_settings": lambda: s.kind == "app_settings" and s.target == task.app,
        "video": lambda: s.kind == "video" and query_matches(s.query, task.query),
        "search": lambda: s.kind == "results" and s.app == task.app and not s.site
        and query_matches(s.query, task.query),
        "site": lambda: s.site == task.site,
        "site_search": lambda: s.kind == "results" and s.site == task.site
        and query_matches(s.query, task.query),
        "site_first": lambda: s.kind == "product" and s.site == task.site and s.index == 0
        and query_matches(s.query, task.query),
    }
    return checks[task.kind]()


def _read_goals(suite: str, split: str) -> list[str]:
    path = resources.files("digiq_trl.envs") / "assets" / f"{suite}_{split}.txt"
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def is_heldout(goal: str) -> bool:
    """Whether a goal belongs to the held-out split (a stable hash of its normalized text)."""
    digest = hashlib.sha256(" ".join(goal.lower().split()).encode("utf-8")).hexdigest()
    return int(digest, 16) % 100 < HELDOUT_PERCENT


@cache
def load_goals(suite: str, split: str) -> tuple[str, ...]:
    """Goals of a suite's split, duplicates kept as published.

    ``train``: the task file's train goals minus the held-out ones. ``test``: the task file's test
    goals (for ``general`` all of them also occur in the published train file). ``heldout``: the
    unique goals of both files whose hash falls in the held-out share; never in ``train``.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    if split == "test":
        return tuple(_read_goals(suite, "test"))
    if split == "train":
        return tuple(g for g in _read_goals(suite, "train") if not is_heldout(g))
    every = _read_goals(suite, "train") + _read_goals(suite, "test")
    return tuple(dict.fromkeys(g for g in every if is_heldout(g)))


def with_pseudo_entities(goals: tuple[str, ...], seed: int = 0, word_probability: float = 0.5) -> tuple[str, ...]:
    """``goals`` plus a variant of each search and video goal with made-up entity names.

    Each content word of the goal's query is replaced, with probability ``word_probability``, by a
    pseudo-word of 2-3 random syllables (``"What's the news in Chile?"`` -> ``"What's the news in
    Bavoke?"``); variants whose template changes are dropped. An actor behavior-cloned on real goals
    alone can memorize each goal's query; these variants can only be typed by copying from the goal,
    which is what held-out goals need (a pretrained VLM copies already; a tiny one has to learn it).
    """
    rng = np.random.default_rng(seed)

    def pseudo_word() -> str:
        word = "".join(rng.choice(PSEUDO_SYLLABLES) for _ in range(int(rng.integers(2, 4))))
        return word.capitalize() if rng.random() < 0.5 else word

    variants = []
    for goal in goals:
        task = parse_goal(goal)
        if task.kind not in ("search", "video"):
            continue
        entity = {w for w in _words(task.query) if w.isalpha() and w.lower() not in STOPWORDS}
        words = goal.split()
        for i, word in enumerate(words):
            core = word.strip(".,;:!?\"'()")
            if core in entity and rng.random() < word_probability:
                words[i] = word.replace(core, pseudo_word())
        variant = " ".join(words)
        if variant != goal and parse_goal(variant).kind == task.kind:
            variants.append(variant)
    return tuple(goals) + tuple(variants)
