"""The target phone: how it differs from the source phone the base actor's demonstrations come from.

Two kinds of difference, both applied by :class:`~digiq_trl.envs.device.Device` and drawn by
:mod:`~digiq_trl.envs.render`:

* **version drift**, fixed: home icons trade places (:data:`DRIFT_HOME_SWAPS`), the Settings list
  is rotated (:data:`DRIFT_SETTINGS_SHIFT`) and some apps hide their search field behind an icon
  (:data:`DRIFT_SEARCH_ICON_APPS`); :meth:`~digiq_trl.envs.device.Layout.drifted` applies them.
* **interruptions**: an :class:`Interruption` opens an overlay (one of :data:`OVERLAYS`) over a
  screen as it opens; while it is shown only its own controls (:data:`OVERLAY_CONTROLS`) respond.

Boxes are ``(top, left, height, width)`` in design pixels (:data:`~digiq_trl.envs.device.DESIGN_W`
x :data:`~digiq_trl.envs.device.DESIGN_H`).
"""

from __future__ import annotations

from dataclasses import dataclass


OVERLAYS: tuple[str, ...] = ("consent", "ad", "permission", "rating")
"""Interruptions of the target phone:

* ``consent``: a cookie-consent banner over the top of the screen; only its *Accept* button closes it.
* ``ad``: a full-screen ad with a small close control in its corner; tapping the ad itself opens the
  advertised page (BACK returns, the ad gone).
* ``permission``: a permission dialog; *Allow*, *Deny* or BACK close it.
* ``rating``: a "rate this app" dialog; *Not now*, *Rate* or BACK close it.
"""

OVERLAY_CONTROLS: dict[str, tuple[tuple[str, tuple[float, float, float, float]], ...]] = {
    "consent": (("accept", (14, 82, 24, 28)),),
    "ad": (("ad_body", (24, 0, 186, 112)), ("close", (14, 94, 16, 16))),
    "permission": (("deny", (134, 14, 20, 40)), ("allow", (134, 58, 20, 40))),
    "rating": (("not_now", (134, 14, 20, 40)), ("rate", (134, 58, 20, 40))),
}
"""Each overlay's controls, in drawing order (later ones on top): name and design-pixel box."""

OVERLAY_DISMISS: dict[str, str] = {"consent": "accept", "ad": "close", "permission": "allow", "rating": "not_now"}
"""The control the expert taps to close each overlay."""

BACK_CLOSES: frozenset[str] = frozenset({"permission", "rating"})
"""Overlays that BACK closes (dialogs); a consent sheet and an ad ignore it."""

SEARCH_ICON_BOX = (16, 88, 22, 20)
"""Where apps of the drifted version show a search icon instead of the field (the field's right end)."""

DRIFT_HOME_SWAPS: tuple[tuple[str, str], ...] = (("Play Store", "Camera"), ("Calendar", "Clock"))
"""Home icons that trade places in the drifted version."""

DRIFT_SETTINGS_SHIFT = 3
"""The drifted version's Settings list is rotated by this many entries (new apps sorted in)."""

DRIFT_SEARCH_ICON_APPS: frozenset[str] = frozenset({"YouTube", "Play Store"})
"""Apps whose drifted version hides the search field behind a search icon until it is tapped."""


@dataclass(frozen=True)
class Interruption:
    """An overlay of kind ``kind`` (one of :data:`OVERLAYS`) that opens over the ``after``-th screen
    opened in the episode (an app, a results list, a page...), once."""

    kind: str
    after: int = 1
