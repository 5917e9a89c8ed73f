"""The RL task in the harness's loop: stepper.step(closure) per yielded batch, episode eval."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("sb3_contrib", reason="the rl extra (sb3-contrib) is not installed")

from superlevel.bench.optimizers import get_optimizer  # noqa: E402
from superlevel.bench.run.loop import evaluate  # noqa: E402
from superlevel.bench.tasks.rl import RLBudget  # noqa: E402
from superlevel.rl.harness import build_rl_task  # noqa: E402
from superlevel.rl.ppo import PPOConfig  # noqa: E402

SMALL = PPOConfig(n_envs=4, n_steps=16, n_epochs=2, lstm_hidden_size=16, net_arch=(16,))
BUDGET = RLBudget(batch_size=32, epochs=2, rollouts_per_epoch=2, n_eval=3)


def _task(seed: int = 1):
    return build_rl_task(
        "cartpole_novel",
        "cartpole_novel",
        seed=seed,
        device=torch.device("cpu"),
        budget=BUDGET,
        config=SMALL,
    )


def _run_like_the_runner(task, optimizer: str) -> list[torch.Tensor]:
    # the runner's loop, verbatim in what it calls
    stepper = get_optimizer(optimizer).build(
        task.model.parameters(), steps_per_epoch=task.steps_per_epoch, epochs=BUDGET.epochs
    )
    losses, steps = [], 0
    for epoch in range(BUDGET.epochs):
        for x, y in task.train_batches(epoch):

            def closure(x=x, y=y):
                stepper.optimizer.zero_grad(set_to_none=True)
                loss = task.loss_fn(task.model(x), y)
                loss.backward()
                return loss

            losses.append(stepper.step(closure))
            steps += 1
        assert steps == (epoch + 1) * task.steps_per_epoch
    return losses


@pytest.mark.parametrize("optimizer", ["adam", "superlevel", "superlevel_guarded", "sgd_clip"])
def test_rl_task_trains_in_the_runner_loop(optimizer):
    task = _task()
    before = [p.detach().clone() for p in task.model.parameters()]
    losses = _run_like_the_runner(task, optimizer)
    assert all(torch.isfinite(v) for v in losses)
    assert any(not torch.equal(a, p) for a, p in zip(before, task.model.parameters(), strict=True))
    rl = task.info["rl"]
    assert rl["rollouts"] == BUDGET.epochs * BUDGET.rollouts_per_epoch
    assert all(math.isfinite(r["pg_norm"]) and math.isfinite(r["approx_kl"]) for r in rl["log"])
    assert {"entropy", "clip_fraction"} <= set(rl["log"][0]) and "collapses" in rl
    for split in ("train", "val", "test"):
        loss, metric = evaluate(task, split)  # the runner's evaluate takes the hook
        assert metric >= 8 and loss == -metric
    assert task.info["env_steps"] == 4 * SMALL.rollout_size


def test_rl_task_is_seeded_and_does_not_move_the_callers_rng():
    state = torch.get_rng_state()
    a, b = _task(seed=2), _task(seed=2)
    assert torch.equal(state, torch.get_rng_state())
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert evaluate(a, "val") == evaluate(b, "val")


def test_rl_task_refuses_clipping_and_batch_evaluation():
    with pytest.raises(ValueError, match="must not clip"):
        build_rl_task(
            "x",
            "cartpole_novel",
            seed=1,
            device=torch.device("cpu"),
            budget=BUDGET,
            config=PPOConfig(max_grad_norm=0.5),
        )
    with pytest.raises(TypeError, match="evaluated by episodes"):
        next(_task().eval_batches("val"))
    with pytest.raises(ValueError, match="unknown split"):
        _task().evaluate("dev")


def test_rl_tasks_are_registered_with_static_metadata():
    from superlevel.bench.tasks import build_task, get_task

    spec = get_task("cartpole_novel")
    assert spec.metric_name == "return" and spec.higher_is_better
    full = spec.budgets["full"]
    assert full.epochs * full.rollouts_per_epoch * 8 * 32 == 100_096  # the Zoo's 1e5 steps
    task = build_task("cartpole_noisy", seed=1, budget=BUDGET, obs_noise=0.2)
    assert task.info["env_options"] == {"obs_noise": 0.2} and task.evaluate is not None
    with pytest.raises(ValueError, match="obs_noise must be a finite number >= 0"):
        build_task("cartpole_noisy", seed=1, budget=BUDGET, obs_noise=-0.1)
