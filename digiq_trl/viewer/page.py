"""One self-contained HTML page from the viewer's episodes: data, scripts and styles inline.

The episodes (no pixels) go into one JSON ``<script>`` that the page parses at load; the
screenshots of each episode go into their own JSON ``<script>``, parsed only when that episode is
opened, so a page of thousands of steps opens fast and decodes a handful of images at a time. The
page's Content-Security-Policy allows data: images and inline code only: opening it can reach no
network, whatever the data holds.

Example:
    >>> from digiq_trl.viewer.page import render_page
    >>> page = render_page([], [], title="empty", source="nothing")
    >>> page.startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any


TEMPLATE = "template.html"
"""The page's HTML, CSS and JavaScript, a file of this package."""


def script_json(data: Any, element_id: str) -> str:
    """``data`` as a ``<script type="application/json">`` element that no string in it can close.

    ``<`` is written as ``\\u003c`` (still valid JSON), so a goal such as ``"</script>"`` stays text.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def render_page(
    episodes: list[dict[str, Any]],
    screenshots: list[list[str]],
    title: str = "Digi-Q trajectories",
    source: str = "",
    critic: str | None = None,
    best_of_n: str | None = None,
    advantage_formula: str | None = None,
) -> str:
    """The viewer page of :func:`~digiq_trl.viewer.episodes.build_episodes`' output.

    Args:
        episodes: the episodes (JSON-serializable dicts).
        screenshots: each episode's screenshots, data: URIs aligned with its steps.
        title: the page's title and heading.
        source: where the data comes from (shown in the header).
        critic: where the values come from (shown), None without a critic.
        best_of_n: where the Best-of-N candidates come from (shown), None without them.
        advantage_formula: how the critic's advantage combines its heads
            (:func:`~digiq_trl.targets.advantage_formula`), shown beside each advantage.
    """
    if len(screenshots) != len(episodes):
        raise ValueError(f"{len(episodes)} episodes but screenshots for {len(screenshots)}")
    data = {"source": source, "critic": critic, "best_of_n": best_of_n, "advantage_formula": advantage_formula,
            "episodes": episodes}
    scripts = [script_json(data, "viewer-data")]
    scripts += [script_json(uris, f"screenshots-{index}") for index, uris in enumerate(screenshots)]
    template = resources.files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8")
    head, tail = template.split("__DATA__")
    return head.replace("__TITLE__", html.escape(title)) + "\n".join(scripts) + tail
