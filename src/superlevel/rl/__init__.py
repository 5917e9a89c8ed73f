"""Reinforcement learning in partially observable environments (needs the ``rl`` extra).

:mod:`superlevel.rl.envs` builds the environments (CartPole without velocities, a noisy
variant, POPGym's RepeatPrevious); :mod:`superlevel.rl.ppo` is a recurrent PPO agent whose
every minibatch update is ``optimizer.step(closure)``, so any ``torch.optim`` optimizer,
``SuperLevelSGD`` and the closure-needing ``LyapunovGuard`` can drive it. Names are
imported lazily: ``import superlevel.rl`` does not import gymnasium or SB3.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ENVS": "superlevel.rl.envs",
    "make_env": "superlevel.rl.envs",
    "make_vec_env": "superlevel.rl.envs",
    "PPOConfig": "superlevel.rl.ppo",
    "RecurrentPPO": "superlevel.rl.ppo",
    "ZOO_CARTPOLE_NOVEL": "superlevel.rl.ppo",
    "count_collapses": "superlevel.rl.ppo",
    "evaluate_policy": "superlevel.rl.ppo",
    "train": "superlevel.rl.ppo",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'superlevel.rl' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
