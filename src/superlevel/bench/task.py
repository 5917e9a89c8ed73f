"""The task interface shared by the task ladder and the benchmark runner.

A *task* (registered by name) builds a :class:`TaskInstance` for one seed and device:
data already on the device, a freshly initialised model, the loss, the metric and the
budget. The runner only talks to this interface, never to a concrete task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Budget:
    """How long to train: ``epochs`` passes over the training split in ``batch_size`` batches.

    ``target`` is the validation metric that counts as "reached" for steps-to-target
    (AlgoPerf style); ``None`` when the task has none. ``max_train_examples`` caps the
    training split (applied by the task when it is built; ``None``: all of it), so a
    ``quick`` CPU budget can use part of a large data set.
    """

    batch_size: int
    epochs: int
    target: float | None = None
    max_train_examples: int | None = None


@dataclass
class TaskInstance:
    """One built task: model, data splits, loss and metric, ready to train.

    Attributes:
        name: task name in the registry.
        model: the freshly initialised model (on ``device``).
        loss_fn: ``loss_fn(output, target) -> scalar tensor`` (mean over the batch).
        metric_fn: ``metric_fn(output, target) -> tensor`` of the per-batch metric *sum*
            (e.g. number correct), so that sums over batches divided by counts give
            exact means. For tasks without a natural metric it is ``-loss * batch``.
        metric_name: e.g. ``"accuracy"``; ``higher_is_better`` says the direction.
        train_batches: ``train_batches(epoch) -> iterator of (x, y)``, seeded shuffling.
        eval_batches: ``eval_batches(split) -> iterator of (x, y)`` for
            ``split in {"train", "val", "test"}``, fixed order.
        budget: the budget chosen at build time (``quick`` or ``full``).
        steps_per_epoch: number of optimizer steps in one training epoch.
        device: where model and data live.
        info: free-form description (data sizes, options) stored with the run.
        evaluate: optional ``evaluate(split) -> (loss, metric)`` that replaces batch
            evaluation (RL tasks score episodes, not batches); ``None``: use batches.
        probe: optional ``probe() -> {name: value}``, measured once on the trained model
            of a finished run and stored in its info (``info["probe"]``).
    """

    name: str
    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric_name: str
    higher_is_better: bool
    train_batches: Callable[[int], Iterator[Batch]]
    eval_batches: Callable[[str], Iterator[Batch]]
    budget: Budget
    steps_per_epoch: int
    device: torch.device
    info: dict[str, Any] = field(default_factory=dict)
    evaluate: Callable[[str], tuple[float, float]] | None = None
    probe: Callable[[], dict[str, float]] | None = None
