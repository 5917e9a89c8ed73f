"""Landscape toolkit: synthetic landscapes, level-set components, barriers, slices, plots.

Every tool handles both kinds of level set: ``kind="sub"`` for ``{L <= c}`` and
``kind="super"`` for ``{L >= c}``.
"""

from __future__ import annotations

from superlevel.landscape.synthetic import (
    Himmelblau,
    Landscape,
    MultiWell,
    Quadratic,
    Rastrigin,
    Rosenbrock,
    make_landscape,
)

__all__ = [
    "Himmelblau",
    "Landscape",
    "MultiWell",
    "Quadratic",
    "Rastrigin",
    "Rosenbrock",
    "make_landscape",
]
