"""Named benchmark suites: which tasks, which optimizers, how many seeds, which budget.

``quick`` is the project's main job (``make demo``): small enough for a laptop's CPU in
minutes. ``full`` is the whole ladder with every competitor, meant for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from superlevel.bench.optimizers import OPTIMIZERS
from superlevel.bench.registry import UnknownNameError
from superlevel.bench.tasks import TASKS


@dataclass(frozen=True)
class Suite:
    """A named set of runs: every task x optimizer x seed ``1..seeds`` at ``budget``.

    ``bench run --suite`` trains the defaults over seeds ``1..seeds``; the demo instead
    tunes every optimizer on ``tune_tasks`` with the tuning protocol
    (:mod:`superlevel.bench.tune`, ``trials`` trials each, finals on seeds ``1..seeds``):
    the fair comparison.
    """

    name: str
    description: str
    tasks: tuple[str, ...]
    optimizers: tuple[str, ...]
    seeds: int
    budget: str
    tune_tasks: tuple[str, ...] = ()
    trials: int = 9

    def __post_init__(self) -> None:
        for t in self.tasks:
            if t not in TASKS:
                raise UnknownNameError("task", t, list(TASKS))
        for o in self.optimizers:
            if o not in OPTIMIZERS:
                raise UnknownNameError("optimizer", o, list(OPTIMIZERS))
        for t in self.tune_tasks:
            if t not in TASKS:
                raise UnknownNameError("task", t, list(TASKS))
        if self.seeds < 1:
            raise ValueError(f"suite {self.name!r}: seeds must be >= 1, got {self.seeds}")


SUITES: dict[str, Suite] = {
    s.name: s
    for s in [
        Suite(
            "quick",
            "five small tasks, nine optimizers, 3 seeds, quick budgets; the demo tunes each"
            " optimizer (9 trials in full, edge extension) before its finals",
            ("quadratic", "multiwell", "digits_mlp", "mnist1d_mlp", "mnist_mlp"),
            (
                "sgd",
                "momentum",
                "adam",
                "sgdr",
                "sgd_expdecay",
                "sgd_clip",
                "superlevel",
                "superlevel_momentum",
                "superlevel_guarded",
            ),
            3,
            "quick",
            tune_tasks=("quadratic", "multiwell", "digits_mlp", "mnist1d_mlp", "mnist_mlp"),
            trials=9,
        ),
        Suite(
            "full",
            "every task and every optimizer, 5 seeds, full budgets (for a GPU)",
            tuple(TASKS),
            tuple(OPTIMIZERS),
            5,
            "full",
        ),
    ]
}


def get_suite(name: str) -> Suite:
    """The suite called ``name``.

    Raises:
        UnknownNameError: no such suite (message lists the valid names).
    """
    try:
        return SUITES[name]
    except KeyError:
        raise UnknownNameError("suite", name, list(SUITES)) from None
