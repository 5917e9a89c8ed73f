"""SuperLevelSGD inside Stable-Baselines3's PPO (policy_kwargs), and SB3's clipping trap."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_baselines3", reason="the rl extra (stable-baselines3) is not installed")
pytest.importorskip("gymnasium", reason="the rl extra (gymnasium) is not installed")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

from superlevel.optim import SuperLevelSGD  # noqa: E402
from superlevel.rl.envs import make_env  # noqa: E402


def _ppo(max_grad_norm: float, n_steps: int = 128, lr: float = 0.2) -> PPO:
    env = make_vec_env(lambda: make_env("cartpole"), n_envs=4, seed=0)
    return PPO(
        "MlpPolicy",
        env,
        learning_rate=lr,  # SB3 writes this into every group's lr before each rollout: a0
        n_steps=n_steps,
        batch_size=64,
        n_epochs=4,
        max_grad_norm=max_grad_norm,
        seed=0,
        policy_kwargs=dict(
            optimizer_class=SuperLevelSGD,
            optimizer_kwargs=dict(decay=1e-4),
            net_arch=[32, 32],
        ),
    )


def _greedy_return(model: PPO, seeds: list[int]) -> float:
    returns = []
    for s in seeds:
        env = make_env("cartpole")
        obs, _ = env.reset(seed=s)
        ret, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, r, term, trunc, _ = env.step(int(action))
            ret, done = ret + r, term or trunc
        returns.append(ret)
    return float(np.mean(returns))


def test_sb3_ppo_trains_with_superlevel_sgd():
    model = _ppo(max_grad_norm=float("inf"))  # inf: SB3's clip_grad_norm_ does nothing
    assert isinstance(model.policy.optimizer, SuperLevelSGD)
    seeds = list(range(100, 110))
    before = _greedy_return(model, seeds)
    model.learn(6000)
    after = _greedy_return(model, seeds)
    # a random policy balances ~22 steps on these seeds; an untrained greedy one ~10
    assert after > 60 and after > 3 * before, (before, after)
    assert float(model.policy.optimizer.stats()["step"]) > 0


def test_sb3_default_clipping_hides_the_gradient_norm_from_the_rule():
    # SB3 clips to max_grad_norm=0.5 before optimizer.step(): the rule then sees
    # ||g|| <= 0.5, so its modulation 1/(1+||g||) is stuck in [2/3, 1].
    clipped = _ppo(max_grad_norm=0.5, n_steps=64)
    clipped.learn(256)
    assert float(clipped.policy.optimizer.stats()["grad_norm"]) <= 0.5 + 1e-5
    raw = _ppo(max_grad_norm=float("inf"), n_steps=64)
    raw.learn(256)
    assert float(raw.policy.optimizer.stats()["grad_norm"]) > 1.0


def test_sb3_sets_a0_through_learning_rate_not_optimizer_kwargs():
    model = _ppo(max_grad_norm=float("inf"), n_steps=64, lr=0.3)
    assert model.policy.optimizer.param_groups[0]["lr"] == 0.3
    env = make_vec_env(lambda: make_env("cartpole"), n_envs=1, seed=0)
    with pytest.raises(TypeError, match="lr"):
        PPO(
            "MlpPolicy",
            env,
            policy_kwargs=dict(optimizer_class=SuperLevelSGD, optimizer_kwargs=dict(lr=0.3)),
        )
