"""A self-contained HTML trajectory viewer for Digi-Q runs and transitions datasets.

One page shows, per episode, the goal, the outcome and every screenshot with its action drawn on
it; with a critic, V(s) and Q(s, a) of each step; where Best-of-N policy extraction ran, every
candidate action with its advantage and the critic's choice. It filters by outcome, task kind and
split, and steps through with the arrow keys. The page needs no network and no server: images are
data: URIs and scripts and styles are inline (``digiq-trl view``, :mod:`digiq_trl.viewer.view_cli`,
writes it from the command line).

The page is written by :mod:`~digiq_trl.viewer.writer` from the episodes of
:mod:`~digiq_trl.viewer.episodes`, drawn by :mod:`~digiq_trl.viewer.thumbnails` and laid out by
:mod:`~digiq_trl.viewer.page`. Names are imported on first use (:mod:`digiq_trl._lazy`), so the
command line's parser loads neither ``datasets`` nor PIL; type checkers read the ``TYPE_CHECKING``
imports.

Example:
    >>> from digiq_trl.viewer import write_viewer
    >>> write_viewer("outputs/digiq-default")  # doctest: +SKIP
    PosixPath('outputs/digiq-default/viewer.html')
"""

# ruff: noqa: F401  (this module's imports are re-exports)
from typing import TYPE_CHECKING

from .. import _lazy


if TYPE_CHECKING:  # what type checkers and IDEs read; at run time the names load on first use (below)
    from .episodes import best_of_n_steps, build_episodes, critic_values, featurize, task_kind
    from .page import render_page
    from .thumbnails import screenshot_thumbnail
    from .writer import (
        VIEWER_FILENAME,
        critic_feature_extractor,
        default_preparation,
        write_dataset_viewer,
        write_viewer,
    )

_EXPORTS = {
    ".episodes": ("best_of_n_steps", "build_episodes", "critic_values", "featurize", "task_kind"),
    ".page": ("render_page",),
    ".thumbnails": ("screenshot_thumbnail",),
    ".writer": (
        "VIEWER_FILENAME",
        "critic_feature_extractor",
        "default_preparation",
        "write_dataset_viewer",
        "write_viewer",
    ),
}

__all__ = _lazy.exported_names(_EXPORTS)
__getattr__, __dir__ = _lazy.lazy_exports(__name__, _EXPORTS)
