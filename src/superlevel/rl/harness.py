"""The RL tasks as benchmark-harness :class:`~superlevel.bench.task.TaskInstance` objects.

The harness trains with ``for x, y in task.train_batches(epoch): stepper.step(closure)``
where ``closure`` computes ``task.loss_fn(task.model(x), y)`` and calls ``backward``.
PPO fits that loop like this:

- ``train_batches(epoch)`` collects ``rollouts_per_epoch`` rollouts with the current
  policy, one at a time, and yields each rollout's PPO minibatches as ``(mb, mb)``;
  because it is a generator, each rollout is collected *after* the previous one's
  updates, so the data are always on-policy.
- ``model(mb)`` is :class:`~superlevel.rl.ppo.ActorCritic` evaluated on the minibatch,
  ``loss_fn(out, mb)`` the PPO loss: a pure function of the parameters, so the Lyapunov
  guard may call the closure as often as it needs.
- ``evaluate(split)`` (the optional hook of :class:`TaskInstance`) plays one greedy
  episode per fixed seed: ``train`` seeds 1000.., ``val`` 2000.., ``test`` 3000..
  (the same episodes for every run seed), and returns ``(-mean return, mean return)``;
  the metric is the mean return (higher is better), the "loss" its negative.
- ``info["rl"]`` holds the per-rollout log (policy-gradient norm, KL, entropy, clip
  fraction, ...) and the number of collapses of the training return, refreshed after
  every epoch (the runner stores ``task.info`` with the finished run).

Environments are reset (seeded by ``(seed, epoch)``) only when the agent has no live
episodes: at the first epoch, or at the first epoch after a resume from a checkpoint. An
uninterrupted run therefore equals :func:`superlevel.rl.ppo.train`; a resumed one starts
fresh episodes and its log restarts at the resume epoch (``info["rl"]["resumed_at"]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from superlevel.bench.task import Budget, TaskInstance
from superlevel.rl.ppo import Minibatch, PolicyOutput, PPOConfig, RecurrentPPO

__all__ = ["EVAL_SEEDS", "build_rl_task"]

#: First episode seed of each evaluation split (``n_eval`` consecutive seeds each).
EVAL_SEEDS = {"train": 1000, "val": 2000, "test": 3000}


def build_rl_task(
    name: str,
    env: str,
    *,
    seed: int,
    device: torch.device,
    budget: Budget,
    config: PPOConfig | None = None,
    env_options: Mapping[str, Any] | None = None,
) -> TaskInstance:
    """Build the RL task ``name`` on environment ``env`` for one seed.

    Args:
        name: the task's registry name.
        env: an environment of :data:`superlevel.rl.envs.ENVS`.
        seed: seeds the model initialisation, the environments and the minibatch cuts.
        device: where the model lives.
        budget: a :class:`~superlevel.bench.tasks.rl.RLBudget` (its
            ``rollouts_per_epoch`` and ``n_eval``; a plain :class:`Budget` means one rollout
            per epoch and 10 evaluation episodes); its ``batch_size`` replaces ``config``'s.
        config: PPO hyperparameters (default :class:`PPOConfig`, no gradient clipping).
        env_options: options of the environment.

    Raises:
        ValueError: a bad budget or a config with gradient clipping (the harness
            compares clipping as a competitor, the task must hand over raw gradients).
    """
    rollouts_per_epoch = getattr(budget, "rollouts_per_epoch", 1)
    n_eval = getattr(budget, "n_eval", 10)
    if budget.epochs < 1 or rollouts_per_epoch < 1 or n_eval < 1:
        raise ValueError(f"an RL budget needs epochs, rollouts_per_epoch, n_eval >= 1: {budget}")
    cfg = config or PPOConfig()
    if cfg.max_grad_norm is not None:
        raise ValueError("a harness task must not clip gradients (max_grad_norm=None)")
    cfg = PPOConfig(**{**cfg.__dict__, "batch_size": budget.batch_size})
    total = budget.epochs * rollouts_per_epoch
    # The model is drawn on the CPU under `seed` (then moved: the same weights on every
    # device), from a forked RNG so that building a task does not move the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agent = RecurrentPPO(
            env, cfg, seed=seed, total_rollouts=total, device=device, env_options=env_options
        )
    per_rollout = cfg.n_epochs * math.ceil(cfg.rollout_size / cfg.batch_size)
    info: dict[str, Any] = {
        "env": env,
        "env_options": dict(env_options or {}),
        "ppo": dict(cfg.__dict__),
        "rollouts_per_epoch": rollouts_per_epoch,
        "env_steps": total * cfg.rollout_size,
        "eval_episodes": n_eval,
        "parameters": sum(p.numel() for p in agent.model.parameters()),
    }
    resumed_at: list[int] = []

    def train_batches(epoch: int) -> Iterator[tuple[Minibatch, Minibatch]]:
        if agent._obs is None:  # fresh agent: first epoch, or a resume
            agent.reset(epoch)
            if epoch:
                resumed_at.append(epoch)
        for k in range(epoch * rollouts_per_epoch, (epoch + 1) * rollouts_per_epoch):
            for mb in agent.updates(k):
                yield mb, mb
        info["rl"] = {**agent.summary(), "resumed_at": list(resumed_at)}

    def evaluate(split: str) -> tuple[float, float]:
        if split not in EVAL_SEEDS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(EVAL_SEEDS)}")
        first = EVAL_SEEDS[split]
        mean = float(np.mean(agent.evaluate(range(first, first + n_eval))))
        return -mean, mean

    def eval_batches(split: str) -> Iterator[tuple[Minibatch, Minibatch]]:
        raise TypeError(
            f"task {name!r} is evaluated by episodes: call task.evaluate({split!r}) "
            "(the runner does when TaskInstance.evaluate is set)"
        )

    def metric_fn(out: PolicyOutput, mb: Minibatch) -> torch.Tensor:
        # Only for callers that score minibatches: minus the loss, summed (the
        # harness's convention for tasks without a per-example metric).
        return -agent.loss(out, mb).detach() * len(mb)

    return TaskInstance(
        name=name,
        model=agent.model,
        loss_fn=agent.loss,
        metric_fn=metric_fn,
        metric_name="return",
        higher_is_better=True,
        train_batches=train_batches,
        eval_batches=eval_batches,
        budget=budget,
        steps_per_epoch=rollouts_per_epoch * per_rollout,
        device=torch.device(device),
        info=info,
        evaluate=evaluate,
    )
