"""Integrations: Lightning, the Hugging Face Trainer and accelerate (optional extras).

Nothing here imports a framework until it is used: ``import superlevel.integrations``
needs only torch.

- :func:`optimizer_chain`, :func:`find_superlevel`, :func:`find_guard`,
  :func:`superlevel_stats`: see through the wrappers that frameworks put around an
  optimizer (Lightning's ``LightningOptimizer``, accelerate's ``AcceleratedOptimizer``,
  the :class:`~superlevel.stability.LyapunovGuard`) — pure torch.
- :class:`SuperLevelCallback` (``superlevel.integrations.lightning``, extra
  ``lightning``): logs ``stats()`` every step and, with a probe batch, runs the
  :class:`~superlevel.stability.StabilityMonitor` into the logger's folder.
- :class:`SuperLevelTrainerCallback`, :func:`superlevel_optimizers`
  (``superlevel.integrations.hf``, extra ``hf``): logs ``stats()`` into the Trainer's
  logs and refuses a setup that changes the rule; the right ``optimizers=`` pair.
- :func:`superlevel_sb3_kwargs`, :func:`check_sb3_setup`, :class:`SuperLevelSB3Callback`
  (``superlevel.integrations.sb3``, extra ``rl``): Stable-Baselines3's algorithm
  arguments with SuperLevelSGD and no clip; the same checks for a built model.
"""

from __future__ import annotations

import importlib
from typing import Any

from superlevel.integrations._common import (
    find_guard,
    find_superlevel,
    optimizer_chain,
    superlevel_stats,
)

_LAZY = {
    "SuperLevelCallback": "superlevel.integrations.lightning",
    "SuperLevelTrainerCallback": "superlevel.integrations.hf",
    "superlevel_optimizers": "superlevel.integrations.hf",
    "check_trainer_setup": "superlevel.integrations.hf",
    "SuperLevelSB3Callback": "superlevel.integrations.sb3",
    "check_sb3_setup": "superlevel.integrations.sb3",
    "superlevel_sb3_kwargs": "superlevel.integrations.sb3",
    "check_lightning_setup": "superlevel.integrations.lightning",
}

__all__ = ["find_guard", "find_superlevel", "optimizer_chain", "superlevel_stats", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'superlevel.integrations' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
