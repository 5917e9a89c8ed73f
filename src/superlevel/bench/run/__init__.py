"""Running runs: identity, the worker side, the training loop, checkpoints, the parent side.

One job a module:

- :mod:`~superlevel.bench.run.identity`: :class:`RunConfig` (what a run is),
  :func:`code_identity` (the code its numbers come from), the machine it ran on;
- :mod:`~superlevel.bench.run.worker`: :class:`RunJob` / :class:`RunResult` and
  :func:`execute_job`, what an executor calls (it never touches the store);
- :mod:`~superlevel.bench.run.loop`: build, train (one divergence rule), evaluate;
- :mod:`~superlevel.bench.run.checkpointing`: a run's state and its checkpoint files;
- :mod:`~superlevel.bench.run.parent`: :func:`run_many`, the plan step (what to reuse,
  what to train) and the commit step (one transaction per run, then ``on_outcome``);
- :mod:`~superlevel.bench.run.console`: the lines and progress a command prints.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# name -> the module that defines it. Loaded on first use (PEP 562), so that importing one
# module (executors import the worker alone) does not import the others.
_EXPORTS = {
    "CheckpointError": "checkpointing",
    "checkpoint_path": "checkpointing",
    "WARNING": "console",
    "Log": "console",
    "console_log": "console",
    "outcome_counts": "console",
    "CodeIdentity": "identity",
    "RunConfig": "identity",
    "check_positive": "identity",
    "code_identity": "identity",
    "environment": "identity",
    "make_config": "identity",
    "OTHER_CODE_POLICIES": "parent",
    "OtherCodeError": "parent",
    "RunOutcome": "parent",
    "executor_or_default": "parent",
    "run_many": "parent",
    "run_one": "parent",
    "RunJob": "worker",
    "RunResult": "worker",
    "check_device_name": "worker",
    "execute_job": "worker",
    "missing_data": "worker",
    "require_data": "worker",
    "resolve_device": "worker",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
