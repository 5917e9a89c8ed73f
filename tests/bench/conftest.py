"""Shared helpers of the benchmark tests."""

from __future__ import annotations

from typing import Any

import pytest

from superlevel.bench.store import Store

RESULT_FIELDS = (
    "status",
    "steps",
    "train_loss",
    "val_loss",
    "val_metric",
    "test_loss",
    "test_metric",
    "steps_to_target",
    "resumed_from_epoch",
)


def numbers(store: Store) -> dict[str, Any]:
    """Every number a run produced (timings aside), by run id: to compare two stores."""
    out = {}
    for r in store.runs():
        rid = r["run_id"]
        epochs = [(e["epoch"], e["split"], e["step"], e["loss"], e["metric"])
                  for e in store.epoch_metrics(rid)]  # fmt: skip
        steps = [(s["step"], s["loss"], s["grad_norm"], s["lr"], s["effective_lr"])
                 for s in store.step_metrics(rid)]  # fmt: skip
        out[rid] = ({k: r[k] for k in RESULT_FIELDS}, sorted(r["tags"]), epochs, steps)
    return out


@pytest.fixture
def store_numbers():
    """:func:`numbers` as a fixture."""
    return numbers
