"""Recurrent PPO whose every minibatch update is ``optimizer.step(closure)``.

What comes from maintained libraries and what is written here:

- **Policy:** sb3-contrib's ``RecurrentActorCriticPolicy`` (LSTM actor and a separate LSTM
  critic, MLP heads), the network RecurrentPPO and the RL Zoo use.
- **Rollout storage, GAE and sequence minibatches:** sb3-contrib's
  ``RecurrentRolloutBuffer`` (stores the LSTM states, computes GAE(lambda) via SB3's
  ``RolloutBuffer``, cuts minibatches into padded sequences at episode starts).
- **Environments:** gymnasium vector envs (:mod:`superlevel.rl.envs`).
- **Observation normalisation** (the Zoo's ``normalize: true``, SB3's ``VecNormalize``
  with ``norm_reward=False``): :class:`ObservationNormalizer`, written here because its
  running statistics must live in the model, not in the environment wrapper (gymnasium's
  ``NormalizeObservation`` keeps them in the env): a checkpoint, a resumed run and an
  evaluation on fresh environments then all see the same statistics.
- **Written here:** the collection loop and the update loop. sb3-contrib's
  ``RecurrentPPO.train`` owns its optimizer and calls ``loss.backward()``, then
  ``clip_grad_norm_(max_grad_norm)``, then ``optimizer.step()`` — a closure-needing
  optimizer (the Lyapunov guard re-evaluates the loss after a trial step) cannot drive it,
  and the clipping hides the raw gradient from a norm-aware rule. Here the loss of one
  minibatch is a pure function of the parameters (stored actions, old log-probabilities,
  advantages and initial LSTM states), so any ``torch.optim`` optimizer or
  ``LyapunovGuard`` can call it as often as it needs: ``optimizer.step(closure)``.

The loss of a minibatch (mask ``m`` drops the padding of the sequences)::

    r = exp(log pi(a|h) - log pi_old(a|h)),   A = normalised advantages
    L = -mean_m(min(r A, clip(r, 1 - eps, 1 + eps) A))
        + vf_coef * mean_m((R - V(h))^2) - ent_coef * mean_m(H[pi(.|h)])

with ``eps`` decaying linearly over the run (``eps_k = eps * (1 - k / K)`` for rollout
``k`` of ``K``, the RL Zoo's ``lin_0.2``) unless ``clip_schedule="constant"``.

Per rollout the agent logs (one host sync per rollout, none per update): the mean and
maximum policy-gradient norm ``||d L_pi / d theta_actor||`` (the actor and critic share no
parameters, so the actor's gradient is exactly the surrogate's plus entropy's), the
approximate KL ``mean((r - 1) - log r)``, the entropy, the clip fraction
``mean(|r - 1| > eps)``, value and policy losses, and the mean return of the last
training episodes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from superlevel.rl.envs import env_info, make_vec_env

__all__ = [
    "ZOO_CARTPOLE_NOVEL",
    "ActorCritic",
    "Minibatch",
    "PPOConfig",
    "PolicyOutput",
    "RecurrentPPO",
    "count_collapses",
    "ppo_loss",
    "train",
]

_CLIP_SCHEDULES = ("linear", "constant")
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass(frozen=True)
class PPOConfig:
    """Hyperparameters of :class:`RecurrentPPO` (defaults: the RL Zoo's for CartPoleNoVel-v1).

    Attributes:
        n_envs: parallel environments.
        n_steps: steps per environment per rollout (a rollout is ``n_envs * n_steps``).
        batch_size: transitions per minibatch (cut into sequences, padded).
        n_epochs: passes over each rollout.
        gamma: discount.
        gae_lambda: GAE's lambda.
        clip_range: PPO's ``eps`` at the start of the run.
        clip_schedule: ``"linear"`` (to 0 over the run) or ``"constant"``.
        ent_coef: entropy bonus weight.
        vf_coef: value loss weight.
        normalize_advantage: standardise advantages per minibatch.
        max_grad_norm: clip the gradient norm inside the closure (SB3's default is 0.5);
            ``None`` hands the optimizer the raw gradient (the harness uses ``None``:
            clipping is a competitor there, ``sgd_clip``, not part of the task).
        lstm_hidden_size: LSTM width (actor and critic each have one).
        net_arch: hidden widths of the MLP heads after the LSTMs.
        ortho_init: SB3's orthogonal initialisation.
        activation: ``"relu"`` or ``"tanh"``, the MLP heads' activation.
        normalize_obs: standardise continuous (``Box``) observations by their running
            mean and variance (updated while collecting, frozen for evaluation), clipped
            to ``+-10``; discrete observations are left as they are.
    """

    n_envs: int = 8
    n_steps: int = 32
    batch_size: int = 256
    n_epochs: int = 20
    gamma: float = 0.98
    gae_lambda: float = 0.8
    clip_range: float = 0.2
    clip_schedule: str = "linear"
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    normalize_advantage: bool = True
    max_grad_norm: float | None = None
    lstm_hidden_size: int = 64
    net_arch: tuple[int, ...] = (64,)
    ortho_init: bool = False
    activation: str = "relu"
    normalize_obs: bool = True

    def __post_init__(self) -> None:
        for name in ("n_envs", "n_steps", "batch_size", "n_epochs", "lstm_hidden_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        for name in ("clip_range", "ent_coef", "vf_coef"):
            v = getattr(self, name)
            if not 0.0 <= v < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.clip_schedule not in _CLIP_SCHEDULES:
            raise ValueError(
                f"clip_schedule must be one of {_CLIP_SCHEDULES}, got {self.clip_schedule!r}"
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0.0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in self.net_arch):
            raise ValueError(f"net_arch must be positive ints, got {self.net_arch!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {tuple(_ACTIVATIONS)}, got {self.activation!r}"
            )

    @property
    def rollout_size(self) -> int:
        """Transitions per rollout: ``n_envs * n_steps``."""
        return self.n_envs * self.n_steps


#: The RL Zoo's RecurrentPPO hyperparameters for CartPoleNoVel-v1, as its published agent
#: lists them (8 envs x 32 steps, minibatch 256, 20 epochs, gamma 0.98, lambda 0.8, no
#: entropy bonus, lr ``lin_0.001``, clip ``lin_0.2``, observations normalised; policy:
#: LSTM 64 for actor and critic, heads [64], ReLU, no orthogonal init), with SB3's
#: gradient clipping at 0.5. 1e5 env steps.
ZOO_CARTPOLE_NOVEL = PPOConfig(max_grad_norm=0.5)
ZOO_TIMESTEPS = 100_000
ZOO_LR = 1e-3


class PolicyOutput(NamedTuple):
    """The policy evaluated on a minibatch: values, log-probabilities and entropies."""

    values: torch.Tensor
    log_prob: torch.Tensor
    entropy: torch.Tensor


@dataclass(eq=False)
class Minibatch:
    """One PPO minibatch: padded sequences from the rollout buffer and the current ``eps``.

    ``stats`` is filled by the first loss evaluation on this minibatch (detached device
    tensors); later evaluations (a guard's re-evaluation) leave it alone.
    """

    samples: Any  # sb3-contrib RecurrentRolloutBufferSamples
    actions: torch.Tensor
    mask: torch.Tensor
    clip_range: float
    stats: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def shape(self) -> tuple[int]:
        """``(padded transitions,)``: lets the harness count a minibatch like a tensor."""
        return (len(self),)


class ObservationNormalizer(nn.Module):
    r"""Running mean and variance of observations; ``forward`` standardises and clips.

    .. math:: \hat o = \operatorname{clip}\big((o - \mu) / \sqrt{\sigma^2 + 10^{-8}},
              -10, 10\big)

    ``update(batch)`` merges a batch's mean and variance into the running ones (Chan et
    al.'s parallel formula, in float64; the count starts at ``1e-4`` as SB3's
    ``RunningMeanStd`` does). The statistics are buffers: saved with the model.
    """

    def __init__(self, shape: Sequence[int], clip: float = 10.0, eps: float = 1e-8) -> None:
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(tuple(shape), dtype=torch.float64))
        self.register_buffer("var", torch.ones(tuple(shape), dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Merge ``batch`` (observations along dim 0) into the running statistics."""
        x = batch.to(self.mean.device, torch.float64)
        n = x.shape[0]
        mean, var = x.mean(0), x.var(0, unbiased=False)
        delta, total = mean - self.mean, self.count + n
        m2 = self.var * self.count + var * n + delta.square() * self.count * n / total
        self.mean += delta * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        scaled = (obs.to(torch.float64) - self.mean) / torch.sqrt(self.var + self.eps)
        return scaled.clamp(-self.clip, self.clip).to(obs.dtype)


class ActorCritic(nn.Module):
    """The trainable model: sb3-contrib's recurrent policy, evaluated on a :class:`Minibatch`.

    ``forward(minibatch)`` re-runs both LSTMs over the minibatch's sequences from their
    stored initial states and returns :class:`PolicyOutput` for the stored actions.

    It computes what the policy's ``evaluate_actions`` computes, with one LSTM call per
    network instead of a Python loop over time steps: the buffer cuts sequences at episode
    starts, so a reset can only happen at a sequence's first step, and zeroing those
    sequences' initial states does the reset (``evaluate_actions`` loops over steps to
    multiply the state by ``1 - episode_start`` at every one; same function, 2-3x the
    CPU time).
    """

    def __init__(self, policy: nn.Module, obs_norm: ObservationNormalizer | None = None) -> None:
        super().__init__()
        if policy.lstm_critic is None or not policy.share_features_extractor:
            raise ValueError("ActorCritic needs a separate critic LSTM and a shared extractor")
        self.policy = policy
        self.obs_norm = obs_norm

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as the policy sees them (standardised when normalising)."""
        return obs if self.obs_norm is None else self.obs_norm(obs)

    def forward(self, mb: Minibatch) -> PolicyOutput:
        p, s = self.policy, mb.samples
        n_seq = s.lstm_states.pi[0].shape[1]
        # (n_seq * length, ...) -> (length, n_seq, features)
        features = p.extract_features(s.observations).reshape(n_seq, -1, p.features_dim)
        features = features.transpose(0, 1)
        keep = (1.0 - s.episode_starts.reshape(n_seq, -1)[:, 0]).view(1, n_seq, 1)

        def run(lstm: nn.LSTM, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            out, _ = lstm(features, (state[0] * keep, state[1] * keep))
            return out.transpose(0, 1).reshape(-1, lstm.hidden_size)

        latent_pi = p.mlp_extractor.forward_actor(run(p.lstm_actor, s.lstm_states.pi))
        latent_vf = p.mlp_extractor.forward_critic(run(p.lstm_critic, s.lstm_states.vf))
        dist = p._get_action_dist_from_latent(latent_pi)
        values = p.value_net(latent_vf).flatten()
        return PolicyOutput(values, dist.log_prob(mb.actions), dist.entropy())

    def critic_parameters(self) -> list[nn.Parameter]:
        """Parameters only the value loss reaches: the critic LSTM and the value head."""
        p = self.policy
        parts = [p.lstm_critic, p.mlp_extractor.value_net, p.value_net]
        return [w for m in parts if m is not None for w in m.parameters()]

    def actor_parameters(self) -> list[nn.Parameter]:
        """Every other parameter: the actor LSTM, the policy head and the action layer."""
        critic = {id(w) for w in self.critic_parameters()}
        return [w for w in self.parameters() if id(w) not in critic]


def ppo_loss(
    out: PolicyOutput,
    mb: Minibatch,
    *,
    vf_coef: float,
    ent_coef: float,
    normalize_advantage: bool,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped-surrogate PPO loss of one minibatch and its detached diagnostics.

    See the module docstring for the formula. Diagnostics: ``policy_loss``,
    ``value_loss``, ``entropy``, ``approx_kl = mean((r - 1) - log r)`` and
    ``clip_fraction = mean(|r - 1| > eps)``, all over the unpadded transitions.
    """
    s, m, eps = mb.samples, mb.mask, mb.clip_range
    adv = s.advantages
    if normalize_advantage:
        adv = (adv - adv[m].mean()) / (adv[m].std() + 1e-8)
    log_ratio = out.log_prob - s.old_log_prob
    ratio = torch.exp(log_ratio)
    surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1.0 - eps, 1.0 + eps))
    policy_loss = -surrogate[m].mean()
    value_loss = ((s.returns - out.values) ** 2)[m].mean()
    entropy = out.entropy[m].mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    with torch.no_grad():
        stats = {
            "policy_loss": policy_loss.detach(),
            "value_loss": value_loss.detach(),
            "entropy": entropy.detach(),
            "approx_kl": ((ratio - 1.0) - log_ratio)[m].mean(),
            "clip_fraction": ((ratio - 1.0).abs() > eps).float()[m].mean(),
        }
    return loss, stats


def count_collapses(
    returns: Sequence[float], *, floor: float, drop: float = 0.5, recover: float = 0.75
) -> int:
    """How often a return curve collapsed: fell below ``drop`` times its running peak.

    A collapse is counted when ``returns[t] < drop * peak_t`` with ``peak_t`` the running
    maximum, once the peak has reached ``floor`` (so early noise is not a collapse). The
    counter re-arms only after the curve is back above ``recover * peak``, so one long
    slump counts once. Non-finite values count as collapsed.
    """
    if not 0.0 < drop < recover <= 1.0:
        raise ValueError(f"need 0 < drop < recover <= 1, got drop={drop}, recover={recover}")
    peak, armed, n = -math.inf, True, 0
    for value in returns:
        if math.isfinite(value):
            peak = max(peak, value)
        if peak < floor:
            continue
        if armed and not value >= drop * peak:  # also true for NaN
            n += 1
            armed = False
        elif not armed and value >= recover * peak:
            armed = True
    return n


def _policy_class() -> type:
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy

    return RecurrentActorCriticPolicy


def build_model(env: Any, config: PPOConfig) -> ActorCritic:
    """A fresh :class:`ActorCritic` for ``env``'s spaces (initialised from torch's RNG)."""
    # SB3 policies build their own optimizer; ours is chosen by the caller, so the
    # policy's is a placeholder (plain SGD at lr 0) and is dropped at once.
    policy = _policy_class()(
        env.single_observation_space,
        env.single_action_space,
        lambda _: 0.0,
        net_arch=list(config.net_arch),
        activation_fn=_ACTIVATIONS[config.activation],
        ortho_init=config.ortho_init,
        lstm_hidden_size=config.lstm_hidden_size,
        optimizer_class=torch.optim.SGD,
    )
    policy.optimizer = None
    space = env.single_observation_space
    # As VecNormalize: only continuous (Box) observations; discrete ones are one-hot codes.
    norm = config.normalize_obs and type(space).__name__ == "Box"
    return ActorCritic(policy, ObservationNormalizer(space.shape) if norm else None)


def _seeds(seed: int, key: int, n: int) -> list[int]:
    """``n`` environment seeds derived from ``(seed, key)`` (independent streams)."""
    return [int(s) for s in np.random.SeedSequence([seed, key]).generate_state(n)]


class RecurrentPPO:
    """Recurrent PPO on one of :data:`superlevel.rl.envs.ENVS`, updated by any optimizer.

    Usage::

        agent = RecurrentPPO("cartpole_novel", PPOConfig(), seed=1, total_rollouts=391)
        optimizer = torch.optim.Adam(agent.model.parameters(), lr=1e-3)
        train(agent, optimizer, rollouts=391)           # or drive it yourself:
        for mb in agent.updates(rollout):                # collect, then n_epochs passes
            optimizer.step(agent.closure(optimizer, mb))

    Args:
        env: environment name.
        config: hyperparameters.
        seed: seeds the environments (the model is initialised from torch's global RNG,
            which the caller seeds; actions are sampled from it too).
        total_rollouts: rollouts in the whole run (for the clip-range schedule).
        device: where the model lives.
        env_options: options of the environment (e.g. ``obs_noise``).
        model: an existing :class:`ActorCritic` (``None``: build a fresh one).

    Attributes:
        model: the :class:`ActorCritic` to optimise.
        log: one dict per finished rollout (see the module docstring).
        episode_returns: returns of all finished training episodes, in order.
    """

    def __init__(
        self,
        env: str,
        config: PPOConfig | None = None,
        *,
        seed: int,
        total_rollouts: int,
        device: str | torch.device = "cpu",
        env_options: Mapping[str, Any] | None = None,
        model: ActorCritic | None = None,
    ) -> None:
        from sb3_contrib.common.recurrent.buffers import RecurrentRolloutBuffer

        if isinstance(total_rollouts, bool) or not isinstance(total_rollouts, int):
            raise ValueError(f"total_rollouts must be an int >= 1, got {total_rollouts!r}")
        if total_rollouts < 1:
            raise ValueError(f"total_rollouts must be an int >= 1, got {total_rollouts!r}")
        self.env_name = env
        self.env_options = dict(env_options or {})
        self.config = config or PPOConfig()
        self.seed = int(seed)
        self.total_rollouts = total_rollouts
        self.device = torch.device(device)
        self.max_return = env_info(env).max_return
        self.envs = make_vec_env(env, self.config.n_envs, **self.env_options)
        self.model = (model or build_model(self.envs, self.config)).to(self.device)
        self.policy = self.model.policy
        lstm = self.policy.lstm_actor
        self._state_shape = (lstm.num_layers, self.config.n_envs, lstm.hidden_size)
        self.buffer = RecurrentRolloutBuffer(
            self.config.n_steps,
            self.envs.single_observation_space,
            self.envs.single_action_space,
            (self.config.n_steps, *self._state_shape),
            self.device,
            gae_lambda=self.config.gae_lambda,
            gamma=self.config.gamma,
            n_envs=self.config.n_envs,
        )
        self.log: list[dict[str, float]] = []
        self.episode_returns: list[float] = []
        self._recent: deque[float] = deque(maxlen=20)
        self._obs: np.ndarray | None = None
        self._capture: torch.Tensor | None = None
        for p in self.model.actor_parameters():
            p.register_post_accumulate_grad_hook(self._accumulate_pg_norm)

    # -- environments ----------------------------------------------------------------
    def reset(self, key: int) -> None:
        """Start fresh episodes in every environment, seeded by ``(seed, key)``."""
        self._obs, _ = self.envs.reset(seed=_seeds(self.seed, key, self.config.n_envs))
        self._observe(self._obs)
        self._starts = np.ones(self.config.n_envs, dtype=np.float32)
        zeros = lambda: torch.zeros(self._state_shape, device=self.device)  # noqa: E731
        from sb3_contrib.common.recurrent.type_aliases import RNNStates

        self._states = RNNStates((zeros(), zeros()), (zeros(), zeros()))

    def _as_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """Observations as the policy's input (normalised when the model normalises)."""
        return self.model.normalize(torch.as_tensor(obs, device=self.device))

    def _observe(self, obs: np.ndarray) -> None:
        # As VecNormalize: the statistics take in every new observation before its use.
        if self.model.obs_norm is not None:
            self.model.obs_norm.update(torch.as_tensor(obs, device=self.device))

    def finite(self) -> bool:
        """Whether every parameter is finite (one host sync)."""
        flags = [torch.isfinite(p).all() for p in self.model.parameters()]
        return bool(torch.stack(flags).all())

    @torch.no_grad()
    def collect(self) -> None:
        """Fill the buffer with one rollout of the current policy, then compute GAE.

        A step that ends an episode by the time limit (``truncated`` and not
        ``terminated``) has ``gamma * V(final observation)`` added to its reward, so the
        cut is bootstrapped instead of being treated as a terminal state.
        """
        if self._obs is None:
            self.reset(0)
        self.policy.set_training_mode(False)
        self.buffer.reset()
        cfg = self.config
        states = self._states
        for _ in range(cfg.n_steps):
            starts = torch.as_tensor(self._starts, device=self.device)
            seen = self._as_tensor(self._obs)
            actions, values, log_probs, states = self.policy(seen, states, starts)
            actions = actions.cpu().numpy()
            obs, rewards, terminated, truncated, info = self.envs.step(actions)
            self._observe(obs)
            rewards = rewards.astype(np.float32)
            cut = truncated & ~terminated
            if cut.any():
                idx = np.flatnonzero(cut)
                final = np.stack([info["final_obs"][i] for i in idx])
                vf = tuple(s[:, idx].contiguous() for s in states.vf)
                no_start = torch.zeros(len(idx), device=self.device)
                v = self.policy.predict_values(self._as_tensor(final), vf, no_start)
                rewards[idx] += cfg.gamma * v.flatten().cpu().numpy()
            if "_episode" in info:
                for r in info["episode"]["r"][info["_episode"]]:
                    self.episode_returns.append(float(r))
                    self._recent.append(float(r))
            self.buffer.add(
                seen.cpu().numpy(),  # what the policy saw: the updates replay it
                actions.reshape(cfg.n_envs, -1),
                rewards,
                self._starts,
                values,
                log_probs,
                lstm_states=self._states,
            )
            self._obs, self._states = obs, states
            self._starts = (terminated | truncated).astype(np.float32)
        starts = torch.as_tensor(self._starts, device=self.device)
        last = self.policy.predict_values(self._as_tensor(self._obs), states.vf, starts)
        self.buffer.compute_returns_and_advantage(last_values=last, dones=self._starts)

    # -- updates ---------------------------------------------------------------------
    def clip_range_at(self, rollout: int) -> float:
        """``eps`` for rollout ``rollout`` (0-based): ``eps * (1 - rollout / total)``."""
        if self.config.clip_schedule == "constant":
            return self.config.clip_range
        return self.config.clip_range * (1.0 - rollout / self.total_rollouts)

    def minibatches(self, rollout: int) -> Iterator[Minibatch]:
        """``n_epochs`` passes over the buffer in minibatches of ``batch_size`` transitions.

        The buffer picks a random cut point per pass from numpy's global generator; it is
        seeded from ``(seed, rollout, pass)`` for the call and put back afterwards.
        """
        eps = self.clip_range_at(rollout)
        discrete = self.envs.single_action_space.__class__.__name__ == "Discrete"
        for epoch in range(self.config.n_epochs):
            # sb3-contrib's buffer draws from numpy's legacy global generator
            saved = np.random.get_state()  # noqa: NPY002
            try:
                key = _seeds(self.seed, 1 + rollout * 1000 + epoch, 1)[0]
                np.random.seed(key)  # noqa: NPY002
                batches = list(self.buffer.get(self.config.batch_size))
            finally:
                np.random.set_state(saved)  # noqa: NPY002
            for s in batches:
                actions = s.actions.long().flatten() if discrete else s.actions
                yield Minibatch(s, actions, s.mask > 1e-8, eps)

    def loss(self, out: PolicyOutput, mb: Minibatch) -> torch.Tensor:
        """The PPO loss of ``mb`` (records its diagnostics on the first evaluation)."""
        cfg = self.config
        loss, stats = ppo_loss(
            out,
            mb,
            vf_coef=cfg.vf_coef,
            ent_coef=cfg.ent_coef,
            normalize_advantage=cfg.normalize_advantage,
        )
        if mb.stats is None:
            stats["pg_sq"] = torch.zeros((), device=self.device)
            mb.stats = stats
            self._capture = stats["pg_sq"]  # the next backward's actor gradient
        else:
            self._capture = None  # a re-evaluation (guard): not a new gradient to log
        return loss

    def _accumulate_pg_norm(self, p: torch.Tensor) -> None:
        # Fires once per backward per actor parameter, after .grad is complete.
        if self._capture is not None and p.grad is not None:
            self._capture.add_(p.grad.detach().pow(2).sum())

    def closure(self, optimizer: Any, mb: Minibatch) -> Callable[[], torch.Tensor]:
        """``closure()``: zero grads, PPO loss of ``mb``, backward, optional clipping."""
        zero = getattr(optimizer, "optimizer", optimizer).zero_grad  # a guard wraps one
        max_norm = self.config.max_grad_norm

        def closure() -> torch.Tensor:
            zero(set_to_none=True)
            loss = self.loss(self.model(mb), mb)
            loss.backward()
            if max_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            return loss

        return closure

    def updates(self, rollout: int) -> Iterator[Minibatch]:
        """Collect rollout ``rollout`` and yield its minibatches; log it when exhausted.

        Stops without collecting (and logs ``nonfinite``) when a parameter is not finite:
        a policy with NaN weights cannot act.
        """
        if not self.finite():
            self.log.append({"rollout": rollout, "nonfinite": 1.0})
            return
        self.collect()
        self.policy.set_training_mode(True)
        done: list[Minibatch] = []
        for mb in self.minibatches(rollout):
            yield mb
            done.append(mb)
        self._capture = None
        self.log.append(self._summarise(rollout, done))

    def _summarise(self, rollout: int, done: list[Minibatch]) -> dict[str, float]:
        recs = [mb.stats for mb in done if mb.stats is not None]
        rec: dict[str, float] = {
            "rollout": rollout,
            "env_steps": (rollout + 1) * self.config.rollout_size,
            "clip_range": self.clip_range_at(rollout),
            "updates": len(recs),
            "episodes": len(self.episode_returns),
            "train_return": float(np.mean(self._recent)) if self._recent else math.nan,
        }
        if recs:
            keys = [k for k in recs[0] if k != "pg_sq"]
            table = torch.stack([torch.stack([r[k] for r in recs]) for k in keys])
            pg = torch.stack([r["pg_sq"] for r in recs]).sqrt()
            means = table.mean(dim=1).tolist()  # the one host sync of the rollout
            rec.update(zip(keys, means, strict=True))
            rec["pg_norm"], rec["pg_norm_max"] = torch.stack([pg.mean(), pg.max()]).tolist()
        return rec

    # -- evaluation ------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, seeds: Sequence[int], *, deterministic: bool = True) -> np.ndarray:
        """Returns of one episode per seed with the current policy (greedy by default)."""
        return evaluate_policy(
            self.policy,
            self.env_name,
            seeds,
            deterministic=deterministic,
            device=self.device,
            normalize=self.model.normalize,
            **self.env_options,
        )

    def summary(self) -> dict[str, Any]:
        """The run's RL diagnostics: config, per-rollout log, collapses of the return."""
        curve = [r.get("train_return", math.nan) for r in self.log]
        return {
            "env": self.env_name,
            "env_options": dict(self.env_options),
            "ppo": asdict(self.config),
            "rollouts": len(self.log),
            "episodes": len(self.episode_returns),
            "collapses": count_collapses(curve, floor=0.2 * self.max_return),
            "log": self.log,
        }


@torch.no_grad()
def evaluate_policy(
    policy: nn.Module,
    env: str,
    seeds: Sequence[int],
    *,
    deterministic: bool = True,
    device: str | torch.device = "cpu",
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **env_options: Any,
) -> np.ndarray:
    """The return of the first episode of ``env`` under each seed, all run side by side.

    ``normalize`` maps raw observations to the policy's input (the model's frozen
    observation statistics). Returns ``NaN`` for every episode when a parameter of
    ``policy`` is not finite.
    """
    from sb3_contrib.common.recurrent.type_aliases import RNNStates

    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_policy needs at least one seed")
    if not all(bool(torch.isfinite(p).all()) for p in policy.parameters()):
        return np.full(len(seeds), np.nan)
    dev = torch.device(device)
    envs = make_vec_env(env, len(seeds), **env_options)
    was_training = policy.training
    policy.set_training_mode(False)
    try:
        obs, _ = envs.reset(seed=seeds)
        lstm = policy.lstm_actor
        shape = (lstm.num_layers, len(seeds), lstm.hidden_size)
        states = RNNStates(*[(torch.zeros(shape, device=dev),) * 2] * 2)
        starts = torch.ones(len(seeds), device=dev)
        returns = np.full(len(seeds), np.nan)
        while np.isnan(returns).any():
            x = torch.as_tensor(obs, device=dev)
            actions, _, _, states = policy(
                x if normalize is None else normalize(x), states, starts, deterministic
            )
            obs, _, terminated, truncated, info = envs.step(actions.cpu().numpy())
            if "_episode" in info:
                ended = info["_episode"] & np.isnan(returns)
                returns[ended] = info["episode"]["r"][ended]
            starts = torch.as_tensor((terminated | truncated).astype(np.float32), device=dev)
    finally:
        envs.close()
        policy.set_training_mode(was_training)
    return returns


def train(
    agent: RecurrentPPO,
    optimizer: Any,
    *,
    rollouts: int,
    scheduler: Any = None,
    on_rollout: Callable[[int], None] | None = None,
) -> str:
    """Run ``rollouts`` rollouts, each minibatch update being ``optimizer.step(closure)``.

    Args:
        agent: the agent.
        optimizer: a ``torch.optim.Optimizer`` or anything with ``step(closure)`` and an
            ``optimizer`` attribute (``LyapunovGuard``).
        rollouts: how many rollouts to collect and learn from.
        scheduler: optional LR scheduler, stepped once per rollout (SB3's cadence).
        on_rollout: called with the rollout index after each rollout (evaluation hooks).

    Returns:
        ``"finished"``, or ``"diverged"`` when the parameters stopped being finite.
    """
    for k in range(rollouts):
        for mb in agent.updates(k):
            optimizer.step(agent.closure(optimizer, mb))
        if agent.log and agent.log[-1].get("nonfinite"):
            return "diverged"
        if scheduler is not None:
            scheduler.step()
        if on_rollout is not None:
            on_rollout(k)
    return "finished"
