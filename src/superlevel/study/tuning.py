"""The selection rule every tuned section shares: the best lr of a grid on validation.

A grid is run on one seed (the trial seed, 1); the selected lr minimises ``score(run)``
over the *finished* runs (diverged ones are never selected; ties go to the smaller lr).
``score`` reads validation metrics only: the test split never selects anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def best_lr(
    lrs: Sequence[float],
    rows: Sequence[Mapping[str, Any]],
    score: Callable[[Mapping[str, Any]], float],
) -> float | None:
    """The lr of ``rows`` (one stored run per lr) with the lowest finite ``score``; ``None``
    when every run diverged or scored ``inf``/NaN."""
    if len(lrs) != len(rows):
        raise ValueError(f"need one run per lr, got {len(lrs)} lrs and {len(rows)} runs")
    scored = [(score(r), lr) for lr, r in zip(lrs, rows, strict=True)]
    finite = [s for s in scored if math.isfinite(s[0])]
    return min(finite)[1] if finite else None


def neg_val_metric(row: Mapping[str, Any]) -> float:
    """``-val_metric`` of a finished run (higher-is-better metrics), ``inf`` otherwise."""
    v = row.get("val_metric")
    if row.get("status") != "finished" or v is None or not math.isfinite(v):
        return math.inf
    return -float(v)
