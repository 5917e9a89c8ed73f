"""The recurrent PPO agent: its forward, its loss, any optimizer, the guard, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium", reason="the rl extra (gymnasium) is not installed")
pytest.importorskip("sb3_contrib", reason="the rl extra (sb3-contrib) is not installed")

from superlevel.optim import SuperLevelSGD  # noqa: E402
from superlevel.rl.envs import make_env  # noqa: E402
from superlevel.rl.ppo import (  # noqa: E402
    ObservationNormalizer,
    PPOConfig,
    RecurrentPPO,
    count_collapses,
    train,
)
from superlevel.stability import LyapunovGuard  # noqa: E402

SMALL = PPOConfig(
    n_envs=4, n_steps=32, batch_size=64, n_epochs=2, lstm_hidden_size=16, net_arch=(16,)
)


def _agent(env: str = "cartpole_novel", config: PPOConfig = SMALL, seed: int = 0) -> RecurrentPPO:
    torch.manual_seed(seed)
    return RecurrentPPO(env, config, seed=seed, total_rollouts=10)


def _flat(agent: RecurrentPPO) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in agent.model.parameters()])


def test_fused_forward_equals_the_policy_evaluate_actions():
    agent = _agent()
    agent.collect()
    agent.collect()  # the second rollout starts mid-episode: stored states are not zero
    mbs = list(agent.minibatches(0))[:2]
    assert any(float(mb.samples.episode_starts.sum()) > 1 for mb in mbs)
    for mb in mbs:
        s = mb.samples
        values, log_prob, entropy = agent.policy.evaluate_actions(
            s.observations, mb.actions, s.lstm_states, s.episode_starts
        )
        out = agent.model(mb)
        torch.testing.assert_close(out.values, values.flatten())
        torch.testing.assert_close(out.log_prob, log_prob)
        torch.testing.assert_close(out.entropy, entropy)


def test_first_loss_of_a_fresh_rollout_has_ratio_one():
    agent = _agent()
    agent.collect()
    mb = next(agent.minibatches(0))
    loss = agent.loss(agent.model(mb), mb)
    assert torch.isfinite(loss)
    assert mb.stats["approx_kl"].abs() < 1e-6 and mb.stats["clip_fraction"] == 0.0


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.Adam(p, lr=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: SuperLevelSGD(p, lr=0.5, decay=1e-3),
        lambda p: LyapunovGuard(SuperLevelSGD(p, lr=0.5, decay=1e-3), max_retries=3),
    ],
    ids=["adam", "sgd", "superlevel", "guarded"],
)
def test_any_optimizer_drives_the_update_through_a_closure(make):
    agent = _agent()
    opt = make(list(agent.model.parameters()))
    before = _flat(agent)
    for mb in agent.updates(0):
        opt.step(agent.closure(opt, mb))
    assert not torch.equal(before, _flat(agent))
    rec = agent.log[-1]
    assert rec["updates"] == SMALL.n_epochs * SMALL.rollout_size // SMALL.batch_size
    for key in ("pg_norm", "approx_kl", "entropy", "clip_fraction", "value_loss"):
        assert math.isfinite(rec[key]), key
    assert 0 < rec["pg_norm"] <= rec["pg_norm_max"]
    if isinstance(opt, LyapunovGuard):
        c = opt.counters
        assert c["steps"] == rec["updates"] and c["steps"] > c["skips"]


def test_logged_policy_gradient_norm_is_the_actor_gradient_of_the_first_evaluation():
    agent = _agent()
    agent.collect()
    mb = next(agent.minibatches(0))
    opt = torch.optim.SGD(agent.model.parameters(), lr=0.0)
    agent.closure(opt, mb)()
    actor = torch.nn.utils.get_total_norm([p.grad for p in agent.model.actor_parameters()])
    torch.testing.assert_close(mb.stats["pg_sq"].sqrt(), actor)
    first = {k: v.clone() for k, v in mb.stats.items()}
    agent.closure(opt, mb)()  # a re-evaluation (as the guard does) records nothing new
    assert all(torch.equal(first[k], mb.stats[k]) for k in first)
    critic = {id(p) for p in agent.model.critic_parameters()}
    assert critic and not critic & {id(p) for p in agent.model.actor_parameters()}


def test_same_seed_same_run():
    logs = []
    for _ in range(2):
        agent = _agent(seed=3)
        opt = torch.optim.Adam(agent.model.parameters(), lr=1e-3)
        train(agent, opt, rollouts=2)
        logs.append((agent.log, _flat(agent)))
    assert logs[0][0] == logs[1][0]
    assert torch.equal(logs[0][1], logs[1][1])


def test_nonfinite_parameters_stop_training_as_diverged():
    agent = _agent()
    with torch.no_grad():
        next(agent.model.parameters()).fill_(float("nan"))
    opt = torch.optim.Adam(agent.model.parameters(), lr=1e-3)
    assert train(agent, opt, rollouts=3) == "diverged"
    assert np.isnan(agent.evaluate([0, 1])).all()


def _random_return(seeds: list[int]) -> float:
    total = []
    for s in seeds:
        env = make_env("cartpole")
        env.reset(seed=s)
        env.action_space.seed(s)
        ret, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(env.action_space.sample())
            ret, done = ret + r, term or trunc
        total.append(ret)
    return float(np.mean(total))


def test_short_training_beats_a_random_policy():
    # The fully observed CartPole learns in ~2k steps; the masked variants need ~1e5
    # (see docs/data_and_tasks.md for that measurement).
    cfg = PPOConfig(
        n_envs=4, n_steps=32, batch_size=128, n_epochs=4, lstm_hidden_size=16, net_arch=(16,)
    )
    torch.manual_seed(0)
    agent = RecurrentPPO("cartpole", cfg, seed=0, total_rollouts=15)
    opt = torch.optim.Adam(agent.model.parameters(), lr=3e-3)
    seeds = list(range(100, 110))
    before = float(np.mean(agent.evaluate(seeds)))
    assert train(agent, opt, rollouts=15) == "finished"
    after = float(np.mean(agent.evaluate(seeds)))
    random = _random_return(seeds)
    assert after > 2 * random and after > 2 * before, (before, after, random)


def test_count_collapses():
    assert count_collapses([10, 50, 100, 200, 500, 500], floor=100) == 0
    assert count_collapses([100, 500, 200, 500, 100], floor=100) == 2  # two separate drops
    assert count_collapses([100, 500, 200, 240, 100], floor=100) == 1  # one long slump
    assert count_collapses([20, 5, 30, 1], floor=100) == 0  # never high enough to collapse
    assert count_collapses([300, float("nan")], floor=100) == 1
    with pytest.raises(ValueError, match="0 < drop < recover"):
        count_collapses([1.0], floor=0, drop=0.9, recover=0.5)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="n_envs must be an int >= 1"):
        PPOConfig(n_envs=0)
    with pytest.raises(ValueError, match="clip_schedule must be one of"):
        PPOConfig(clip_schedule="cosine")
    with pytest.raises(ValueError, match="max_grad_norm must be > 0"):
        PPOConfig(max_grad_norm=0.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        PPOConfig(activation="gelu")
    with pytest.raises(ValueError, match="total_rollouts must be an int >= 1"):
        RecurrentPPO("cartpole_novel", SMALL, seed=0, total_rollouts=0)


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("popgym") is None, reason="popgym is not installed"
)
def test_popgym_memory_task_trains_one_rollout():
    agent = _agent("repeat_previous")  # discrete observations: SB3 one-hot encodes them
    opt = torch.optim.Adam(agent.model.parameters(), lr=1e-3)
    assert train(agent, opt, rollouts=1) == "finished"
    assert math.isfinite(agent.log[-1]["pg_norm"])
    returns = agent.evaluate([0, 1])
    assert (np.abs(returns) <= 1.0).all()


def test_observation_statistics_merge_to_those_of_all_batches():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(n, 3, generator=g) * 4 + 7 for n in (1, 8, 5, 32)]
    norm = ObservationNormalizer((3,))
    for b in batches:
        norm.update(b)
    every = torch.cat(batches).double()
    # The prior count of 1e-4 (SB3's) moves the statistics by about 1e-4 / 46 relative.
    torch.testing.assert_close(norm.mean, every.mean(0), rtol=1e-5, atol=0)
    torch.testing.assert_close(norm.var, every.var(0, unbiased=False), rtol=1e-4, atol=0)
    z = norm(every.float())
    assert z.dtype == torch.float32 and float(z.abs().max()) <= 10.0
    torch.testing.assert_close(
        z.double().mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-4, rtol=0
    )


def test_the_policy_sees_and_stores_normalised_observations_with_stats_in_the_model():
    agent = _agent(config=PPOConfig(**{**SMALL.__dict__, "normalize_obs": True}))
    agent.collect()
    norm = agent.model.obs_norm
    # Every reset and step observation went into the statistics, before its use.
    assert float(norm.count) == pytest.approx(SMALL.n_envs * (SMALL.n_steps + 1), abs=1e-3)
    shape = agent.envs.single_observation_space.shape
    stored = torch.as_tensor(agent.buffer.observations).reshape(-1, *shape)
    assert float(stored.abs().max()) <= 10.0
    assert "obs_norm.mean" in agent.model.state_dict()
    # A fresh agent given the trained model's state evaluates exactly like it.
    seeds = [7, 8, 9]
    twin = _agent(seed=5, config=agent.config)
    twin.model.load_state_dict(agent.model.state_dict())
    assert np.array_equal(twin.evaluate(seeds), agent.evaluate(seeds))
    # ...and the evaluation feeds the policy through them, without updating them.
    seen = []
    forward = norm.forward
    norm.forward = lambda obs: seen.append(obs) or forward(obs)
    count = float(norm.count)
    agent.evaluate(seeds)
    assert seen and all(x.shape == (len(seeds), *shape) for x in seen)
    assert float(norm.count) == count
