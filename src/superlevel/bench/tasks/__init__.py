"""The task ladder: one registry from a noisy quadratic to a character Transformer.

``build_task(name, seed=..., device=..., budget="quick"|"full", data_dir=..., **options)``
returns a :class:`~superlevel.bench.task.TaskInstance`. Conventions shared by all tasks:

- **Fixed splits.** Validation is carved from the training data by a fixed permutation
  (the same for every seed); the test split is never used for choices.
- **Seeds** choose the model initialisation and the order of training batches.
- **Metric sums.** ``metric_fn(output, y)`` returns the metric summed over the batch's
  examples (its rows, ``y.shape[0]``), so ``sum / number of rows`` is the exact mean.
- **Static metadata.** :class:`TaskSpec` (``get_task(name)``) holds the metric name, its
  direction and the budgets with their targets: reading them builds nothing.

Each family lives in its own module, which registers its tasks when imported; the
imports below give the ladder order. A new family is a module calling
:func:`~superlevel.bench.tasks.registry.register` plus one import line here.
"""

from superlevel.bench.registry import UnknownNameError
from superlevel.bench.tasks.registry import (
    TASKS,
    TaskSpec,
    build_task,
    get_task,
    register,
    task_names,
)

# Each family registers its tasks on import; the order here is the ladder order.
# isort: off
from superlevel.bench.tasks import synthetic  # noqa: F401
from superlevel.bench.tasks import images  # noqa: F401
from superlevel.bench.tasks import text  # noqa: F401
from superlevel.bench.tasks import rl  # noqa: F401
# isort: on

__all__ = [
    "TASKS",
    "TaskSpec",
    "UnknownNameError",
    "build_task",
    "get_task",
    "register",
    "task_names",
]
