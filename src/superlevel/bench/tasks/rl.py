"""Reinforcement learning in partially observable environments: recurrent PPO tasks.

``cartpole_novel`` (CartPole without velocities, the RL Zoo's CartPoleNoVel-v1),
``cartpole_noisy`` (plus Gaussian noise on the observed positions) and
``repeat_previous`` (POPGym's RepeatPreviousEasy memory task). The metric is the mean
greedy return over 10 fixed episodes per split (higher is better); a harness step is one
PPO minibatch update driven by the competitor's ``stepper.step(closure)``. How PPO fits
the runner's loop is in :mod:`superlevel.rl.harness`; the agent in
:mod:`superlevel.rl.ppo`. The specs here are static: gymnasium, SB3 and popgym (the
``rl`` extra) are imported only when a task is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from superlevel.bench.task import Budget, TaskInstance
from superlevel.bench.tasks.registry import TaskSpec, non_negative, register

__all__ = ["RLBudget"]


@dataclass(frozen=True)
class RLBudget(Budget):
    """A :class:`Budget` for RL: ``epochs`` evaluation points, ``rollouts_per_epoch`` each.

    ``batch_size`` is PPO's minibatch size in transitions; a run collects
    ``epochs * rollouts_per_epoch * n_envs * n_steps`` environment steps and evaluates
    ``n_eval`` episodes per split at every epoch end.
    """

    rollouts_per_epoch: int = 1
    n_eval: int = 10


def _budgets(target: float | None) -> dict[str, Budget]:
    # full: 17 x 23 = 391 rollouts of 8 envs x 32 steps = 100,096 env steps, the RL Zoo's
    # budget for CartPoleNoVel-v1 (SB3's learn(1e5) collects whole rollouts: ceil(1e5/256));
    # quick: 4 x 10 rollouts = 10,240 steps, a few CPU minutes.
    return {
        "quick": RLBudget(256, 4, target=target, rollouts_per_epoch=10),
        "full": RLBudget(256, 17, target=target, rollouts_per_epoch=23),
    }


def _build(env: str) -> Any:
    def build(
        spec: TaskSpec,
        seed: int,
        device: torch.device,
        budget: Budget,
        data_dir: str | None,
        opts: dict[str, Any],
    ) -> TaskInstance:
        from superlevel.rl.harness import build_rl_task

        return build_rl_task(
            spec.name, env, seed=seed, device=device, budget=budget, env_options=opts
        )

    return build


for _spec in [
    TaskSpec(
        "cartpole_novel",
        "recurrent PPO on CartPole without velocities (RL Zoo CartPoleNoVel-v1)",
        _budgets(450.0),
        {},
        None,
        _build("cartpole_novel"),
        metric_name="return",
        higher_is_better=True,
    ),
    TaskSpec(
        "cartpole_noisy",
        "recurrent PPO on CartPole without velocities, N(0, obs_noise^2) on the positions",
        _budgets(450.0),
        {"obs_noise": 0.1},
        None,
        _build("cartpole_noisy"),
        metric_name="return",
        higher_is_better=True,
    ),
    TaskSpec(
        "repeat_previous",
        "recurrent PPO on POPGym RepeatPreviousEasy (return in [-1, 1]; needs popgym)",
        _budgets(None),
        {},
        None,
        _build("repeat_previous"),
        metric_name="return",
        higher_is_better=True,
        margin=0.05,  # its return lies in [-1, 1]
    ),
]:
    register(_spec, {"obs_noise": non_negative("obs_noise")} if _spec.options else None)
del _spec
