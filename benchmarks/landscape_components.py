"""Level-set labelling: ``scipy.ndimage.label`` against the union-find fallback, as a ratio.

Both labellers run in one process on the same masks, interleaved repeat by repeat (so
drift of a shared machine hits both alike); each timing is one whole labelling as
:func:`superlevel.landscape.level_set_components` does it (for the union-find: listing
the grid's neighbour pairs, then the union-find). The script also checks that the two
give identical labels on every mask it times.

Masks: level sets of Himmelblau (a few compact components) and of uniform white noise
(seed 0; thousands of ragged components, the union-find's hard case).

    python benchmarks/landscape_components.py
    python benchmarks/landscape_components.py --resolution 201 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from superlevel.landscape.components import (
    DEFAULT_MEMORY_BUDGET,
    _labeller,
    _level_mask,
    grid_values,
)
from superlevel.landscape.synthetic import Himmelblau


def time_once(use_scipy: bool, mask: np.ndarray, connectivity: int) -> tuple[float, np.ndarray]:
    """Seconds of one whole labelling of ``mask``, and its labels."""
    t0 = time.perf_counter()
    label = _labeller(mask.shape, connectivity, DEFAULT_MEMORY_BUDGET, use_scipy=use_scipy)
    labels, _ = label(mask)
    return time.perf_counter() - t0, labels


def compare(mask: np.ndarray, connectivity: int, repeats: int) -> tuple[float, float, int]:
    """Median seconds of the union-find and of scipy, and the component count."""
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        (t_uf, fallback), (t_sc, ref) = (time_once(s, mask, connectivity) for s in (False, True))
        times[False].append(t_uf)
        times[True].append(t_sc)
        if not np.array_equal(ref, fallback):
            raise AssertionError(f"labels differ (connectivity {connectivity})")
    return statistics.median(times[False]), statistics.median(times[True]), int(ref.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=401, help="grid points per axis")
    parser.add_argument("--repeats", type=int, default=7, help="timings per labeller and case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    h = Himmelblau()
    grid = grid_values(h, h.bounds, args.resolution)
    noise = np.random.default_rng(0).random(grid.shape)
    cases = [
        ("himmelblau", grid.values, "sub", 13.0),
        ("himmelblau", grid.values, "sub", 13.6),
        ("himmelblau", grid.values, "sub", 120.0),
        ("himmelblau", grid.values, "super", 179.0),
        ("noise", noise, "sub", 0.5),
        ("noise", noise, "super", 0.4),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.resolution}x{args.resolution} grids, median of {args.repeats} labellings; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    head = ("field", "kind", "level", "conn", "count", "union-find", "scipy", "ratio")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    ratios = []
    for field, values, kind, level in cases:
        mask = _level_mask(values, level, kind)
        for connectivity in (1, 2):
            uf, sc, count = compare(mask, connectivity, args.repeats)
            ratios.append(uf / sc)
            print(
                f"| {field} | {kind} | {level} | {connectivity} | {count} | "
                f"{uf * 1e3:.1f} ms | {sc * 1e3:.2f} ms | {uf / sc:.1f}x |"
            )
    print(f"identical labels in every case; median ratio {statistics.median(ratios):.1f}x")


if __name__ == "__main__":
    main()
