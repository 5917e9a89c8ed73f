"""Hugging Face Trainer: keep SuperLevelSGD's rule intact and log what it does.

Two Trainer defaults change the rule silently:

* ``lr_scheduler_type="linear"``: a scheduler multiplies ``group["lr"]`` (``a0`` for
  SuperLevelSGD) by a factor falling to 0, on top of the optimizer's own
  ``exp(-decay * t)``: the rate used is the product (a double decay).
* ``max_grad_norm=1.0``: the Trainer clips the gradients to norm 1 before the optimizer
  sees them, so the modulation ``1 / (1 + ||g||)`` never sees a norm above 1.

:func:`superlevel_optimizers` returns the pair to pass as ``optimizers=``: the optimizer
and a constant schedule. :class:`SuperLevelTrainerCallback` checks the setup at train
start (:func:`check_trainer_setup`) and logs ``stats()`` into the Trainer's logs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

try:
    from transformers import TrainerCallback
except ImportError as exc:  # the optional extra
    raise ImportError(
        "superlevel.integrations.hf needs transformers: pip install 'superlevel[hf]'"
    ) from exc

from superlevel.integrations._common import (
    check_callback_args,
    clip_problem,
    decay_problem,
    find_guard,
    find_superlevel,
    refuse_or_warn,
    schedule_change,
    superlevel_stats,
)
from superlevel.optim import SuperLevelSGD

__all__ = ["SuperLevelTrainerCallback", "check_trainer_setup", "superlevel_optimizers"]


def _one(step: int) -> float:
    """The constant schedule's factor (a module-level function: picklable)."""
    return 1.0


def superlevel_optimizers(
    params: nn.Module | Iterable[Any], **kwargs: Any
) -> tuple[SuperLevelSGD, torch.optim.lr_scheduler.LambdaLR]:
    """``(SuperLevelSGD(params, **kwargs), constant schedule)`` for ``Trainer(optimizers=...)``.

    The schedule's factor is 1 at every step, so ``a_t = lr * exp(-decay * t)`` is the
    optimizer's alone. Also set ``TrainingArguments(max_grad_norm=0.0)`` (the Trainer
    clips otherwise); :class:`SuperLevelTrainerCallback` refuses a run that does not.

    Args:
        params: a module (its parameters) or anything ``SuperLevelSGD`` accepts.
        **kwargs: ``SuperLevelSGD``'s arguments (``lr``, ``decay``, ...).

    Example:
        >>> trainer = Trainer(model, args, optimizers=superlevel_optimizers(
        ...     model, lr=0.5, decay=1e-3))  # doctest: +SKIP
    """
    if isinstance(params, nn.Module):
        params = params.parameters()
    optimizer = SuperLevelSGD(params, **kwargs)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, _one)


def check_trainer_setup(
    args: Any, optimizer: Any, lr_scheduler: Any = None, max_steps: int = 0
) -> list[str]:
    """What in a Trainer setup changes SuperLevelSGD's rule, each with its fix.

    Args:
        args: the ``TrainingArguments`` (reads ``max_grad_norm``).
        optimizer: the Trainer's optimizer (wrappers such as accelerate's are seen through).
        lr_scheduler: the Trainer's scheduler.
        max_steps: the run's length, for evaluating the schedule.

    Returns:
        One message per problem (empty: the rule is intact). No ``SuperLevelSGD``:
        one message saying so.
    """
    opt = find_superlevel(optimizer)
    if find_guard(optimizer) is not None:
        return [
            "a LyapunovGuard cannot run under the Trainer: it calls optimizer.step() without "
            "a closure. Pass the inner optimizer (superlevel_optimizers(...)) instead."
        ]
    if opt is None:
        return [f"no SuperLevelSGD behind the Trainer's optimizer ({type(optimizer).__name__})"]
    problems = []
    decay = decay_problem(
        opt,
        schedule_change(lr_scheduler, max_steps),
        "the Trainer's lr scheduler",
        "Trainer(optimizers=superlevel_optimizers(model, lr=..., decay=...)) (a constant "
        "schedule), or TrainingArguments(lr_scheduler_type='constant')",
    )
    if decay is not None:
        problems.append(decay)
    clip = getattr(args, "max_grad_norm", None)
    if clip is not None and float(clip) > 0:
        problems.append(
            clip_problem(
                f"TrainingArguments(max_grad_norm={clip:g})",
                float(clip),
                "TrainingArguments(max_grad_norm=0.0)",
            )
        )
    return problems


class SuperLevelTrainerCallback(TrainerCallback):
    """Refuse a setup that changes SuperLevelSGD's rule; log ``stats()`` in the Trainer's logs.

    At ``on_train_begin`` it runs :func:`check_trainer_setup` on the Trainer's optimizer
    (through accelerate's ``AcceleratedOptimizer``) and scheduler: with ``strict=True``
    it raises a ``ValueError`` listing each problem and its fix; with ``strict=False`` it
    warns (``UserWarning`` and the ``logging`` module) and trains on.

    At every ``on_log`` it adds ``<prefix>/step``, ``lr`` (``a_t``), ``effective_lr``,
    ``grad_norm`` (the norm the optimizer saw), ``scale`` (``eta_t``) and ``skipped`` to
    the logged dict and to ``state.log_history``. Reporting callbacks that run *after*
    this one (TensorBoard, W&B) see them; the Trainer puts its own reporters first, so
    insert this one at the front: ``trainer.callback_handler.callbacks.insert(0, cb)``
    (or :meth:`install`).

    Args:
        prefix: key prefix of the logged values (a non-empty string).
        strict: raise (``True``) or warn (``False``) on a setup that changes the rule.

    Raises:
        TypeError: ``prefix`` not a string, ``strict`` not a bool (``"no"`` is not False).
        ValueError: an empty ``prefix``.
    """

    def __init__(self, prefix: str = "superlevel", strict: bool = True) -> None:
        check_callback_args(prefix, strict)
        self.prefix = prefix
        self.strict = strict
        self.problems: list[str] = []

    def install(self, trainer: Any) -> SuperLevelTrainerCallback:
        """Put this callback first in ``trainer``'s callbacks (before the reporters)."""
        trainer.callback_handler.callbacks.insert(0, self)
        return self

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Check the setup; raise or warn."""
        self.problems = check_trainer_setup(
            args, kwargs.get("optimizer"), kwargs.get("lr_scheduler"), state.max_steps
        )
        refuse_or_warn(self.problems, self.strict, type(self).__name__)

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """Add ``stats()`` to ``logs`` and to the matching ``state.log_history`` entry."""
        optimizer = kwargs.get("optimizer")
        if logs is None or find_superlevel(optimizer) is None:
            return
        values = superlevel_stats(optimizer, self.prefix)
        logs.update(values)
        history = state.log_history
        if history and history[-1].get("step") == state.global_step:
            history[-1].update(values)
