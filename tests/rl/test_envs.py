"""The partially observable environments: masking, noise, seeding, vector autoreset."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnasium", reason="the rl extra (gymnasium) is not installed")

from superlevel.rl.envs import (  # noqa: E402
    CARTPOLE_VELOCITIES,
    ENVS,
    make_env,
    make_vec_env,
    popgym_available,
)


def _steps(env, n: int, seed: int = 0):
    obs, _ = env.reset(seed=seed)
    out = [(obs, np.array(env.unwrapped.state, dtype=np.float32))]
    for i in range(n):
        obs, _, term, trunc, _ = env.step(i % 2)
        out.append((obs, np.array(env.unwrapped.state, dtype=np.float32)))
        if term or trunc:
            break
    return out


def test_masked_cartpole_hides_velocities_and_keeps_positions():
    env = make_env("cartpole_novel")
    pairs = _steps(env, 8)
    vel = list(CARTPOLE_VELOCITIES)
    for obs, state in pairs:
        assert obs.shape == (4,)
        np.testing.assert_array_equal(obs[vel], 0.0)
        np.testing.assert_array_equal(obs[[0, 2]], state[[0, 2]])
    # the hidden velocities are really there (and moving): the mask is doing the work
    assert max(abs(state[1]) + abs(state[3]) for _, state in pairs[1:]) > 0.05


def test_noisy_cartpole_adds_seeded_noise_on_positions_only():
    env = make_env("cartpole_noisy", obs_noise=0.1)
    pairs = _steps(env, 8, seed=3)
    errors = np.array([obs[[0, 2]] - state[[0, 2]] for obs, state in pairs])
    assert 0.03 < errors.std() < 0.3  # noise of about sigma = 0.1 ...
    for obs, _ in pairs:  # ... and the velocities stay hidden
        np.testing.assert_array_equal(obs[list(CARTPOLE_VELOCITIES)], 0.0)
    again = _steps(make_env("cartpole_noisy", obs_noise=0.1), 8, seed=3)
    for (a, _), (b, _) in zip(pairs, again, strict=True):
        np.testing.assert_array_equal(a, b)  # reset(seed) fixes the noise too
    clean = _steps(make_env("cartpole_noisy", obs_noise=0.0), 3, seed=3)
    for obs, state in clean:
        np.testing.assert_array_equal(obs[[0, 2]], state[[0, 2]])


def test_bad_names_and_options_are_refused():
    with pytest.raises(ValueError, match="unknown environment 'cartpol'"):
        make_env("cartpol")
    with pytest.raises(ValueError, match="no option 'obs_noise'"):
        make_env("cartpole_novel", obs_noise=0.1)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        make_env("cartpole_noisy", obs_noise=-1.0)
    with pytest.raises(ValueError, match="n_envs must be an int >= 1"):
        make_vec_env("cartpole_novel", 0)


def test_vector_env_resets_in_the_same_step_and_reports_episodes():
    envs = make_vec_env("cartpole_novel", 3)
    obs, _ = envs.reset(seed=[1, 2, 3])
    assert obs.shape == (3, 4)
    ended = 0
    for _ in range(60):
        obs, _, term, trunc, info = envs.step(np.zeros(3, dtype=np.int64))  # always push left
        done = term | trunc
        if done.any():
            assert info["_final_obs"][done].all() and info["_episode"][done].all()
            assert (info["episode"]["l"][done] == info["episode"]["r"][done]).all()
            np.testing.assert_array_equal(obs[done][:, list(CARTPOLE_VELOCITIES)], 0.0)
            ended += int(done.sum())
    assert ended >= 3  # pushing one way ends every episode within 60 steps


@pytest.mark.skipif(not popgym_available(), reason="popgym is not installed")
def test_popgym_repeat_previous_steps():
    env = make_env("repeat_previous")
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    total, steps, done = 0.0, 0, False
    while not done:
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        total, steps, done = total + r, steps + 1, term or trunc
    assert steps == 51 and -1.0 <= total <= 1.0
    assert ENVS["repeat_previous"].max_return == 1.0
