"""The shared option matrix and gradient sequence, run through the torch reference and optax.

Imported by the test modules after their ``pytest.importorskip("jax")``.
"""

from __future__ import annotations

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from superlevel.optax import superlevel
from superlevel.optim import ReferenceSuperLevelSGD

SHAPES = {"w": (3, 4), "b": (5,), "k": (2, 2, 2), "v": (7,)}
MOMENTUM = [(0.0, False), (0.9, False), (0.9, True)]  # (momentum, nesterov)
SCHEDULE = [(0.3, 0.0, 0.0), (0.5, 0.4, 0.1)]  # (lr, decay, min_lr): the floor is reached
CASES = [
    dict(
        learning_rate=lr,
        decay=dec,
        min_lr=mn,
        momentum=m,
        nesterov=n,
        weight_decay=wd,
        norm_scale=ns,
        maximize=mx,
    )
    for (m, n), (lr, dec, mn), wd, ns, mx in itertools.product(
        MOMENTUM, SCHEDULE, [0.0, 0.1], [1.0, 0.25], [False, True]
    )
]
# nan at step 0 (the momentum buffer first seen on a skipped step stays zero, t stays 0),
# inf at step 3; 7 gradients, 5 completed steps.
STEPS, NONFINITE = 7, {0: np.nan, 3: np.inf}
COMPLETED = STEPS - len(NONFINITE)


def case_id(kwargs: dict[str, Any]) -> str:
    return "-".join(f"{v}" for v in kwargs.values())


def init_params(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s) for k, s in SHAPES.items()}


def grad_sequence(steps: int = STEPS, seed: int = 0, nonfinite=NONFINITE) -> list[dict]:
    """float64 gradients with norms from ~0.3 to ~30 (so eta_t varies), non-finite steps."""
    rng = np.random.default_rng(seed)
    seq = []
    for s in range(steps):
        size = 10.0 ** rng.uniform(-1.0, 1.0)
        gs = {k: size * rng.standard_normal(shape) for k, shape in SHAPES.items()}
        if s in nonfinite:
            gs["b"][2] = nonfinite[s]
        seq.append(gs)
    return seq


def torch_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    k = dict(kwargs)
    k["lr"] = k.pop("learning_rate")
    return k


def run_reference(kwargs: dict[str, Any], seq: list[dict], params=None):
    """The torch reference (float64) through ``seq``: (optimizer, params as numpy, name -> p)."""
    start = init_params() if params is None else params
    ps = {k: torch.tensor(v, dtype=torch.float64) for k, v in start.items()}
    opt = ReferenceSuperLevelSGD(list(ps.values()), **torch_kwargs(kwargs))
    for gs in seq:
        for k, p in ps.items():
            p.grad = torch.tensor(gs[k], dtype=torch.float64)
        opt.step()
    return opt, {k: p.numpy() for k, p in ps.items()}, ps


def run_optax(tx: optax.GradientTransformation, seq: list[dict], dtype, update=None, params=None):
    """``tx`` through ``seq`` in ``dtype``: (final params, final state)."""
    start = init_params() if params is None else params
    params = {k: jnp.asarray(v, dtype) for k, v in start.items()}
    state = tx.init(params)
    update = update or tx.update
    for gs in seq:
        grads = {k: jnp.asarray(v, dtype) for k, v in gs.items()}
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def reference_buffers(opt: ReferenceSuperLevelSGD, ps: dict) -> dict[str, np.ndarray]:
    return {k: opt.buffers[id(p)].numpy() for k, p in ps.items()}


def momentum_buffers(state) -> dict[str, np.ndarray]:
    """The ``optax.trace`` buffer inside a superlevel state (any wrapper around it)."""
    traces = [
        x
        for x in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.TraceState))
        if isinstance(x, optax.TraceState)
    ]
    assert len(traces) == 1
    return {k: np.asarray(v) for k, v in traces[0].trace.items()}


def build(kwargs: dict[str, Any]) -> optax.GradientTransformation:
    return superlevel(**kwargs)


def population(tx: optax.GradientTransformation, p0: dict, lrs: jax.Array, scales: jax.Array):
    """``(state, params, update)`` of one member per (lr, norm_scale) pair under ``vmap``.

    ``tx`` is ``optax.inject_hyperparams(superlevel)(...)``: each member's state gets its
    own injected ``learning_rate`` and ``norm_scale``; ``update`` is the jitted, vmapped
    ``tx.update``.
    """

    def init(lr, s):
        state = tx.init(p0)
        state.hyperparams["learning_rate"] = lr
        state.hyperparams["norm_scale"] = s
        return state

    params = jax.tree.map(lambda x: jnp.stack([x] * len(lrs)), p0)
    return jax.vmap(init)(lrs, scales), params, jax.jit(jax.vmap(tx.update))
