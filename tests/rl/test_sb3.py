"""SuperLevelSGD inside Stable-Baselines3's PPO (policy_kwargs), SB3's clipping trap, and
the helper and callback of superlevel.integrations.sb3 that refuse it."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

pytest.importorskip("stable_baselines3", reason="the rl extra (stable-baselines3) is not installed")
pytest.importorskip("gymnasium", reason="the rl extra (gymnasium) is not installed")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

from superlevel.integrations.sb3 import (  # noqa: E402
    SuperLevelSB3Callback,
    check_sb3_setup,
    superlevel_sb3_kwargs,
)
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


# ---------------------------------------------------------------- the helper and the callback


def _falling(progress_remaining: float) -> float:
    return 0.2 * progress_remaining  # SB3's linear schedule: a0 down to 0


def test_the_helper_trains_with_the_raw_norm():
    env = make_vec_env(lambda: make_env("cartpole"), n_envs=4, seed=0)
    kwargs = superlevel_sb3_kwargs(0.2, decay=1e-4, policy_kwargs=dict(net_arch=[32, 32]))
    assert kwargs["max_grad_norm"] == float("inf")
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=64, n_epochs=4, seed=0, **kwargs)
    assert isinstance(model.policy.optimizer, SuperLevelSGD)
    assert model.policy.optimizer.param_groups[0]["decay"] == 1e-4
    assert check_sb3_setup(model) == []
    model.learn(256, callback=SuperLevelSB3Callback())  # strict: the setup passes
    assert float(model.policy.optimizer.stats()["grad_norm"]) > 1.0  # above SB3's 0.5


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"max_grad_norm": 0.5}, ValueError, r"max_grad_norm=0.5\) clips.*float\('inf'\)"),
        ({"lr": 0.3}, TypeError, "learning_rate"),
        ({"learning_rate": _falling, "decay": 1e-4}, ValueError, "from 0.2 down to 0"),
        ({"decay": -1.0}, ValueError, "decay"),
        ({"policy_kwargs": {"optimizer_class": torch.optim.Adam}}, ValueError, "optimizer_class"),
    ],
)
def test_the_helper_refuses_what_changes_the_rule(kwargs, error, named):
    with pytest.raises(error, match=named):
        superlevel_sb3_kwargs(**kwargs)


def test_a_falling_schedule_is_fine_without_decay():
    assert superlevel_sb3_kwargs(_falling)["learning_rate"] is _falling


def test_the_callback_refuses_sb3s_default_clip_before_any_update(tmp_path):
    from stable_baselines3.common.logger import configure

    model = _ppo(max_grad_norm=0.5, n_steps=64)  # SB3's default clip
    assert "max_grad_norm=0.5" in check_sb3_setup(model)[0]
    with pytest.raises(ValueError, match="max_grad_norm=0.5"):
        model.learn(128, callback=SuperLevelSB3Callback())
    assert model.policy.optimizer.stats()["step"].item() == 0
    # strict=False: a warning, and the degenerate rule it warned of, recorded in SB3's log
    model.set_logger(configure(str(tmp_path), ["csv"]))
    with pytest.warns(UserWarning, match="changes SuperLevelSGD's rule"):
        model.learn(3 * 256, callback=SuperLevelSB3Callback(strict=False))
    with open(tmp_path / "progress.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("superlevel/grad_norm")]
    trained = [r for r in rows if float(r["superlevel/step"]) > 0]
    assert trained, rows
    for r in trained:  # the norm the rule saw is the clip, eta = 1 / (1 + 0.5)
        assert float(r["superlevel/grad_norm"]) == pytest.approx(0.5, rel=1e-5)
        assert float(r["superlevel/scale"]) == pytest.approx(2 / 3, rel=1e-5)
