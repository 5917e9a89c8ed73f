"""Landscape toolkit: synthetic landscapes, level-set components, barriers, slices, plots.

Every tool handles both kinds of level set: ``kind="sub"`` for ``{L <= c}`` and
``kind="super"`` for ``{L >= c}``. Plots live in :mod:`superlevel.landscape.plots`
(matplotlib, imported only there); the demo in :mod:`superlevel.landscape.demo`.
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
from superlevel.landscape.components import (
    Grid,
    TrajectoryConnectivity,
    component_of,
    grid_values,
    level_set_components,
    trajectory_connectivity,
)
from superlevel.landscape.connectivity import ConnectResult, connect, connect_fn, curve_point
from superlevel.landscape.merge_forest import MergeForest, step_connected
from superlevel.landscape.slices import (
    Slice1D,
    filter_normalize,
    filter_normalized_direction,
    model_slice_2d,
    pca_directions,
    slice_1d,
    slice_2d,
)
from superlevel.landscape.synthetic import (
    Himmelblau,
    Landscape,
    MultiWell,
    Quadratic,
    Rastrigin,
    Rosenbrock,
    make_landscape,
    newton_critical_point,
)

__all__ = [
    "BarrierResult",
    "ConnectResult",
    "Grid",
    "Himmelblau",
    "Landscape",
    "MergeForest",
    "MultiWell",
    "Quadratic",
    "Rastrigin",
    "Rosenbrock",
    "Slice1D",
    "TrajectoryConnectivity",
    "component_of",
    "connect",
    "connect_fn",
    "curve_point",
    "filter_normalize",
    "filter_normalized_direction",
    "flat_params",
    "grid_values",
    "level_set_components",
    "make_landscape",
    "model_loss_fn",
    "model_slice_2d",
    "newton_critical_point",
    "path_barrier",
    "pca_directions",
    "segment_barrier",
    "slice_1d",
    "slice_2d",
    "step_connected",
    "trajectory_connectivity",
    "unflatten_params",
]
