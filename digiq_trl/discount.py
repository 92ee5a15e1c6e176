"""The discount factor: one default and one check, shared by the data's Monte-Carlo returns, the
critic's TD targets and the run's ``gamma`` option (a module without heavy imports, so that the
commands' ``--help`` stays fast)."""

from __future__ import annotations


DEFAULT_GAMMA = 0.95
"""The Digi-Q paper's discount, of ``mc_return`` and of the TD targets."""


def check_gamma(gamma: float) -> float:
    """Return ``gamma`` if it is a discount in ``(0, 1]``.

    A NaN, zero, negative or >1 discount gives NaN, degenerate or growing returns that nothing
    downstream would notice.

    Raises:
        ValueError: ``gamma`` is not in ``(0, 1]`` (NaN included).
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma: {gamma} is not in (0, 1] (the discount of returns and TD targets)")
    return gamma
