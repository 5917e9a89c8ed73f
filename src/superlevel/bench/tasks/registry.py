"""The task registry: :class:`TaskSpec`, option validation and :func:`build_task`.

A task *family* module (``synthetic``, ``images``, ``text``, ...) builds its specs and
calls :func:`register` at import time; the package ``__init__`` imports every family
module, so adding a family is one import line there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from superlevel.bench import models
from superlevel.bench.registry import ConfigError, UnknownNameError, lookup
from superlevel.bench.task import Budget, TaskInstance

__all__ = [
    "OPTION_VALIDATORS",
    "TASKS",
    "TaskSpec",
    "UnknownNameError",
    "build_task",
    "check_path",
    "get_task",
    "non_negative",
    "positive",
    "register",
    "task_names",
    "COMPARISONS",
    "Comparison",
]

Validator = Callable[[Any], None]


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: what it is, its budgets, its options and the data it needs.

    Everything here is static: reading it never builds the task or loads its data.

    Attributes:
        name: registry name.
        description: one line for ``bench list``.
        budgets: ``{"quick": Budget, "full": Budget}`` (each with its ``target``).
        options: allowed option names with their defaults.
        needs_data: data set folder the task reads (``None``: generated or bundled).
        builder: ``builder(spec, seed, device, budget, data_dir, options) -> TaskInstance``.
        metric_name: the validation metric, e.g. ``"accuracy"`` (the built task's too).
        higher_is_better: the metric's direction.
    """

    name: str
    description: str
    budgets: dict[str, Budget]
    options: Mapping[str, Any]
    needs_data: str | None
    builder: Callable[..., TaskInstance] = field(repr=False, compare=False)
    metric_name: str = field(kw_only=True)
    higher_is_better: bool = field(kw_only=True)
    margin: float | None = field(default=None, kw_only=True)

    @property
    def comparison(self) -> Comparison:
        """How this task's metric is compared across optimizers (see :data:`COMPARISONS`)."""
        base = COMPARISONS[self.metric_name]
        return base if self.margin is None else Comparison(self.margin, base.log10)


@dataclass(frozen=True)
class Comparison:
    """How a metric is compared: the equivalence margin and the scale it is read on.

    Attributes:
        margin: the smallest difference that matters, for the equivalence test (TOST),
            in the metric's units, or in decades when ``log10``.
        log10: compare ``log10(metric)`` (a suboptimality spans decades: a difference
            of 1e-3 means nothing at 1.0 and everything at 1e-4).
    """

    margin: float
    log10: bool = False


# The equivalence margin per metric (a task may state its own): 0.5 accuracy points;
# 0.1 decade of suboptimality (a factor 1.26); 25 return (5% of CartPole's 500).
COMPARISONS: dict[str, Comparison] = {
    "accuracy": Comparison(0.005),
    "suboptimality": Comparison(0.1, log10=True),
    "return": Comparison(25.0),
}


# --------------------------------------------------------------------------- options


def _check_subset(v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ConfigError(f"option subset must be None or a positive int, got {v!r}")


def _check_label_noise(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise ConfigError(f"option label_noise must be a rate in [0, 1), got {v!r}")


def _check_imbalance(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1.0 <= v < math.inf:
        raise ConfigError(f"option imbalance must be a finite ratio >= 1, got {v!r}")


def _check_activation(v: Any) -> None:
    if v not in models.ACTIVATIONS:
        raise ConfigError(
            f"option activation must be one of {sorted(models.ACTIVATIONS)}, got {v!r}"
        )


def positive(name: str, kind: type = float) -> Validator:
    def check(v: Any) -> None:
        ok_type = isinstance(v, int) if kind is int else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or not 0 < v < math.inf:
            raise ConfigError(f"option {name} must be a positive {kind.__name__}, got {v!r}")

    return check


def non_negative(name: str) -> Validator:
    def check(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise ConfigError(f"option {name} must be a finite number >= 0, got {v!r}")

    return check


def non_negative_int(name: str) -> Validator:
    def check(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"option {name} must be an int >= 0, got {v!r}")

    return check


def check_path(name: str) -> Validator:
    def check(v: Any) -> None:
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"option {name} must be a path string or None, got {v!r}")

    return check


OPTION_VALIDATORS: dict[str, Validator] = {
    "subset": _check_subset,
    "label_noise": _check_label_noise,
    "imbalance": _check_imbalance,
    "activation": _check_activation,
    "noise": non_negative("noise"),
    "dim": positive("dim", int),
    "condition": positive("condition"),
    "n_wells": positive("n_wells", int),
    "seq_len": positive("seq_len", int),
    "corpus": check_path("corpus"),
    "sharpness_examples": non_negative_int("sharpness_examples"),
}

# ------------------------------------------------------------------------ registry

TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec, validators: Mapping[str, Validator] | None = None) -> None:
    """Add ``spec`` to the registry (ladder order is registration order).

    Args:
        spec: the task.
        validators: ``{option: check(value)}`` for options of ``spec`` not yet known; a
            check raises :class:`~superlevel.bench.registry.ConfigError` naming the
            bad value.

    Raises:
        ValueError: the name is taken, a validator replaces another one of a known
            option, or an option of ``spec`` has no validator.
    """
    if spec.name in TASKS:
        raise ValueError(f"task {spec.name!r} is already registered")
    new = dict(validators or {})
    clash = sorted(k for k, v in new.items() if OPTION_VALIDATORS.get(k, v) is not v)
    if clash:
        raise ValueError(f"{spec.name}: options {clash} already have a validator")
    unknown = sorted(set(spec.options) - set(OPTION_VALIDATORS) - set(new))
    if unknown:
        raise ValueError(f"{spec.name}: options without a validator: {unknown}")
    OPTION_VALIDATORS.update(new)
    TASKS[spec.name] = spec


def task_names() -> list[str]:
    """Registered task names, in ladder order."""
    return list(TASKS)


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered.
    """
    return lookup("task", TASKS, name)


def build_task(
    name: str,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    budget: str | Budget = "quick",
    data_dir: str | None = None,
    **options: Any,
) -> TaskInstance:
    """Build task ``name`` for one seed: data on ``device``, a fresh model, loss and metric.

    Args:
        name: a registered task name.
        seed: chooses the model initialisation and the training batch order.
        device: where the data and the model live.
        budget: ``"quick"``, ``"full"`` or an explicit :class:`Budget`.
        data_dir: data directory; ``None`` means ``$SUPERLEVEL_DATA`` (else ``./data``).
        **options: task options (see ``get_task(name).options``).

    Raises:
        UnknownNameError: unknown task.
        ConfigError: unknown option, bad option value or unknown budget name (a
            ``ValueError``).
        superlevel.data.MissingDataError: the task's data files are absent.
    """
    spec = get_task(name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(budget, str):
        if budget not in spec.budgets:
            raise ConfigError(
                f"unknown budget {budget!r} for task {name}; valid: {', '.join(spec.budgets)}"
            )
        chosen = spec.budgets[budget]
    elif isinstance(budget, Budget):
        chosen = budget
    else:
        raise ConfigError(f"budget must be a budget name or a Budget, got {budget!r}")
    if chosen.batch_size < 1 or chosen.epochs < 0:
        raise ConfigError(f"budget needs batch_size >= 1 and epochs >= 0, got {chosen}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ConfigError(f"unknown option(s) {unknown} for task {name}; allowed: {allowed}")
    opts = {**spec.options, **options}
    for key, value in opts.items():
        OPTION_VALIDATORS[key](value)
    dev = torch.device(device)
    return spec.builder(spec, int(seed), dev, chosen, data_dir, opts)
