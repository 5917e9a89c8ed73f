"""Partially observable environments: CartPole without velocities, a noisy variant, POPGym.

Built from gymnasium's own pieces — ``CartPole-v1``, the ``TransformObservation`` wrapper,
``SyncVectorEnv`` with same-step autoreset and the vector ``RecordEpisodeStatistics``
wrapper — plus one small observation wrapper gymnasium lacks (additive Gaussian noise on
vector observations, drawn from the environment's seeded generator; gymnasium's
``AddWhiteNoise`` acts on rendered pixels). This module needs the ``rl`` extra and is only
imported when an RL task or agent is used.

Registered names (:data:`ENVS`):

- ``cartpole``: plain CartPole-v1, fully observed: the MDP control, where a policy
  needs no memory (and the agent's tests can learn in a few thousand steps).
- ``cartpole_novel``: CartPole-v1 with the cart and pole velocities set to zero in every
  observation (the RL Zoo's ``CartPoleNoVel-v1``: the shape stays 4, entries 1 and 3 are 0),
  so the policy must infer velocities from the history of positions.
- ``cartpole_noisy``: ``cartpole_novel`` with ``N(0, obs_noise^2)`` added to the two
  observed entries (cart position, pole angle); the default ``obs_noise=0.1`` is POPGym's
  "easy" level of its noisy position-only CartPole.
- ``repeat_previous``: POPGym's ``RepeatPreviousEasy`` (name the suit of the card seen
  4 cards ago; 52 cards, 51 steps; return in ``[-1, 1]``). Needs the ``popgym`` package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = [
    "ENVS",
    "EnvInfo",
    "GaussianObservationNoise",
    "make_env",
    "make_vec_env",
    "popgym_available",
]

# CartPole-v1 observation: (cart position, cart velocity, pole angle, pole angular velocity)
CARTPOLE_VELOCITIES = (1, 3)


class GaussianObservationNoise(gym.ObservationWrapper):
    """Add Gaussian noise to the observation entries selected by ``where``.

    ``obs' = obs + sigma * z * where`` with ``z ~ N(0, I)`` drawn from the wrapped
    environment's generator, so ``reset(seed=s)`` fixes the noise as well.

    Args:
        env: an environment with a ``Box`` observation space.
        sigma: the noise standard deviation, finite and ``>= 0``.
        where: boolean mask of the noisy entries (shape of an observation); ``None``: all.
    """

    def __init__(self, env: gym.Env, sigma: float, where: np.ndarray | None = None) -> None:
        super().__init__(env)
        if (
            isinstance(sigma, bool)
            or not isinstance(sigma, (int, float))
            or not 0 <= sigma < np.inf
        ):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
        shape = env.observation_space.shape
        self.sigma = float(sigma)
        self.where = np.ones(shape, bool) if where is None else np.asarray(where, bool)
        if self.where.shape != shape:
            raise ValueError(f"where has shape {self.where.shape}, observations have {shape}")

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """The observation with noise added on the ``where`` entries."""
        z = self.np_random.standard_normal(observation.shape)
        return (observation + self.sigma * z * self.where).astype(observation.dtype)


@dataclass(frozen=True)
class EnvInfo:
    """A registered environment: its description, best episode return and options."""

    description: str
    max_return: float
    factory: Callable[..., gym.Env]
    options: tuple[str, ...] = ()


def _masked_cartpole() -> gym.Env:
    env = gym.make("CartPole-v1")
    mask = np.ones(env.observation_space.shape, dtype=env.observation_space.dtype)
    mask[list(CARTPOLE_VELOCITIES)] = 0.0
    return gym.wrappers.TransformObservation(
        env, lambda obs: obs * mask, observation_space=env.observation_space
    )


def _noisy_cartpole(obs_noise: float = 0.1) -> gym.Env:
    env = _masked_cartpole()
    observed = np.ones(env.observation_space.shape, dtype=bool)
    observed[list(CARTPOLE_VELOCITIES)] = False
    return GaussianObservationNoise(env, obs_noise, where=observed)


def _repeat_previous() -> gym.Env:
    try:
        from popgym.envs.repeat_previous import RepeatPreviousEasy
    except ImportError as exc:
        raise ImportError("repeat_previous needs the popgym package: pip install popgym") from exc
    return RepeatPreviousEasy()


def popgym_available() -> bool:
    """Whether ``popgym`` imports here (``repeat_previous`` needs it)."""
    try:
        import popgym  # noqa: F401
    except ImportError:
        return False
    return True


ENVS: dict[str, EnvInfo] = {
    "cartpole": EnvInfo(
        "CartPole-v1, fully observed (the MDP control for the masked variants)",
        500.0,
        lambda: gym.make("CartPole-v1"),
    ),
    "cartpole_novel": EnvInfo(
        "CartPole-v1 with both velocities masked to 0 (the RL Zoo's CartPoleNoVel-v1)",
        500.0,
        _masked_cartpole,
    ),
    "cartpole_noisy": EnvInfo(
        "cartpole_novel plus N(0, obs_noise^2) on cart position and pole angle",
        500.0,
        _noisy_cartpole,
        ("obs_noise",),
    ),
    "repeat_previous": EnvInfo(
        "POPGym RepeatPreviousEasy: name the suit seen 4 cards ago (return in [-1, 1])",
        1.0,
        _repeat_previous,
    ),
}


def env_info(name: str) -> EnvInfo:
    """The :class:`EnvInfo` registered as ``name``; ``ValueError`` naming it otherwise."""
    if name not in ENVS:
        raise ValueError(f"unknown environment {name!r}; valid: {', '.join(ENVS)}")
    return ENVS[name]


def make_env(name: str, **options: Any) -> gym.Env:
    """One environment called ``name`` (see :data:`ENVS`); seed it with ``reset(seed=...)``.

    Raises:
        ValueError: unknown name, unknown option or bad option value.
        ImportError: popgym is missing (``repeat_previous`` only).
    """
    info = env_info(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        raise ValueError(
            f"environment {name!r} has no option {unknown[0]!r}; "
            f"valid: {', '.join(info.options) or 'none'}"
        )
    return info.factory(**options)


def make_vec_env(name: str, n_envs: int, **options: Any) -> gym.vector.VectorEnv:
    """``n_envs`` copies of ``name`` stepped in this process, with same-step autoreset.

    When a sub-environment's episode ends, ``step`` already returns the first observation
    of its next episode; the last one is in ``info["final_obs"]`` (mask
    ``info["_final_obs"]``) and the episode's return and length in ``info["episode"]``
    (mask ``info["_episode"]``).
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs must be an int >= 1, got {n_envs!r}")
    make_env(name, **options).close()  # a bad name or option fails here, with its message
    vec = gym.vector.SyncVectorEnv(
        [lambda: make_env(name, **options) for _ in range(n_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    return gym.wrappers.vector.RecordEpisodeStatistics(vec)
