"""Helpers every task family shares: seeded model init, the :class:`TaskInstance` assembly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from superlevel.bench.task import Batch, Budget, TaskInstance
from superlevel.bench.tasks.registry import TaskSpec
from superlevel.data.tensors import Splits, batch_iterator, eval_iterator

__all__ = [
    "SPLIT_SEED",
    "Builder",
    "TensorFn",
    "accuracy_instance",
    "assemble",
    "init_model",
    "parameter_count",
    "train_cap",
]

SPLIT_SEED = 0  # fixed: splits and data variants never depend on the run seed


def init_model(seed: int, device: torch.device, make: Callable[[], nn.Module]) -> nn.Module:
    """Build a model on the CPU under ``seed`` (same weights on every device), then move it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    return model.to(device)


Builder = Callable[..., TaskInstance]
TensorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def assemble(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    *,
    model: nn.Module,
    train: Batch,
    eval_batches: Callable[[str], Iterator[Batch]],
    loss_fn: TensorFn,
    metric_fn: TensorFn,
    info: dict[str, Any],
) -> TaskInstance:
    """The :class:`TaskInstance` every builder returns; an epoch is one pass over ``train``.

    ``train`` is the training ``(x, y)`` on ``device``, batched in an order chosen by
    ``seed``; the keyword arguments are the :class:`TaskInstance` fields of that name;
    the metric's name and direction are the spec's.
    """
    train_x, train_y = train

    def train_batches(epoch: int) -> Iterator[Batch]:
        return batch_iterator(train_x, train_y, budget.batch_size, seed=seed, epoch=epoch)

    return TaskInstance(
        name=spec.name,
        model=model,
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        metric_name=spec.metric_name,
        higher_is_better=spec.higher_is_better,
        train_batches=train_batches,
        eval_batches=eval_batches,
        budget=budget,
        steps_per_epoch=max(1, len(train_y) // budget.batch_size),
        device=device,
        info=info,
    )


def accuracy_instance(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data: Splits,
    model: nn.Module,
    info: dict[str, Any],
    *,
    loss_fn: TensorFn,
    metric_fn: TensorFn,
    eval_batch_size: int,
) -> TaskInstance:
    """A task on in-memory :class:`Splits` (on ``device``), evaluated in fixed-order batches."""

    def eval_batches(split: str) -> Iterator[Batch]:
        x, y = data.get(split)
        return eval_iterator(x, y, eval_batch_size)

    return assemble(
        spec,
        seed,
        device,
        budget,
        model=model,
        train=(data.train_x, data.train_y),
        eval_batches=eval_batches,
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        info=info,
    )


def sharpness_probe(
    model: nn.Module, loss_fn: TensorFn, x: torch.Tensor, y: torch.Tensor
) -> Callable[[], dict[str, float]]:
    r"""A probe measuring the final model's sharpness on the fixed batch ``(x, y)``.

    ``sharpness`` is :math:`|\lambda|_{\max}` of the Hessian of ``loss_fn(model(x), y)``
    (power iteration, :func:`superlevel.stability.sharpness`): gradient descent with step
    ``eta`` is stable on it iff ``eta * sharpness < 2``. The model is measured in eval
    mode and left as it was.
    """

    def probe() -> dict[str, float]:
        from superlevel.stability import sharpness

        was = model.training
        model.eval()
        try:
            value = sharpness(lambda: loss_fn(model(x), y), model, model=model)
        finally:
            model.train(was)
        return {"sharpness": float(value), "sharpness_examples": float(len(y))}

    return probe


def train_cap(opts: dict[str, Any], budget: Budget, n: int) -> int:
    """Training examples kept: the smallest of the ``subset`` option, the budget cap and ``n``."""
    return min(c for c in (opts["subset"], budget.max_train_examples, n) if c is not None)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
