"""Models shipped inside the package, loadable offline by a Hub-style name.

The embedded default starts from a pretrained base actor, as the Digi-Q paper starts from AutoUI's
released checkpoint. Ours is a few megabytes and ships with digiq-trl (``digiq_trl/pretrained/``),
so a fresh machine with no Hub access loads it by name. Every loader of the library resolves names
through :func:`resolve_pretrained`; elsewhere pass its result to ``from_pretrained``.

Example:
    >>> from transformers import AutoModelForImageTextToText
    >>> from digiq_trl.models.pretrained import resolve_pretrained
    >>> path = resolve_pretrained("digiq-trl/phone-actor-tiny")
    >>> actor = AutoModelForImageTextToText.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


SHIPPED_MODELS: dict[str, str] = {
    "digiq-trl/phone-actor-tiny": "phone-actor-tiny",
}
"""Hub-style names of the shipped models -> their folders in ``digiq_trl/pretrained``."""


def shipped_path(name: str) -> Path:
    """The folder of a shipped model."""
    return Path(str(resources.files("digiq_trl") / "pretrained" / SHIPPED_MODELS[name]))


def resolve_pretrained(name_or_path: str) -> str:
    """The shipped copy's folder for a name of :data:`SHIPPED_MODELS`; any other Hub id or path as it is."""
    return str(shipped_path(name_or_path)) if name_or_path in SHIPPED_MODELS else name_or_path
