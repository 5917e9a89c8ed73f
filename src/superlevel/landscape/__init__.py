"""Landscape toolkit: synthetic landscapes, level-set components, barriers, slices, plots.

Every tool handles both kinds of level set: ``kind="sub"`` for ``{L <= c}`` and
``kind="super"`` for ``{L >= c}``.
"""

from __future__ import annotations

from superlevel.landscape.barriers import (
    BarrierResult,
    flat_params,
    model_loss_fn,
    path_barrier,
    segment_barrier,
    unflatten_params,
)
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
    "BarrierResult",
    "Himmelblau",
    "Landscape",
    "MultiWell",
    "Quadratic",
    "Rastrigin",
    "Rosenbrock",
    "flat_params",
    "make_landscape",
    "model_loss_fn",
    "path_barrier",
    "segment_barrier",
    "unflatten_params",
]
