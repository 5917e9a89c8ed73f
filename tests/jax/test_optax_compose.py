"""superlevel inside optax's wrappers and JAX's transforms, held to the torch reference."""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax", reason="the JAX tests need the jax extra (pip install .[jax])")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from optax_helpers import (  # noqa: E402
    COMPLETED,
    NONFINITE,
    SHAPES,
    grad_sequence,
    init_params,
    momentum_buffers,
    population,
    reference_buffers,
    run_optax,
    run_reference,
)

from superlevel.optax import SuperlevelState, stats, superlevel  # noqa: E402
from superlevel.optim import ReferenceSuperLevelSGD  # noqa: E402

FULL = dict(
    learning_rate=0.5,
    decay=0.3,
    min_lr=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=0.1,
    norm_scale=0.5,
    maximize=False,
)


def assert_params(got, want, rtol=1e-12):
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=rtol, atol=1e-15, err_msg=k)


def test_jit_equals_eager_and_reference(x64):
    tx = superlevel(**FULL)
    eager, _ = run_optax(tx, grad_sequence(), jnp.float64)
    jitted, state = run_optax(tx, grad_sequence(), jnp.float64, update=jax.jit(tx.update))
    _, ref, _ = run_reference(FULL, grad_sequence())
    assert_params(jitted, ref)
    assert_params(eager, ref)
    assert int(stats(state)["step"]) == COMPLETED


def test_apply_if_finite_composes(x64):
    """apply_if_finite rejects the non-finite steps before superlevel sees them: the same
    params as superlevel's own skip, counted by the wrapper instead."""
    tx = optax.apply_if_finite(superlevel(**FULL), max_consecutive_errors=10)
    params, state = run_optax(tx, grad_sequence(), jnp.float64, update=jax.jit(tx.update))
    _, ref, _ = run_reference(FULL, grad_sequence())
    assert_params(params, ref)
    assert int(state.total_notfinite) == len(NONFINITE)
    s = stats(state)
    assert int(s["step"]) == COMPLETED and int(s["skipped"]) == 0


def test_inject_hyperparams_change_takes_effect_next_step(x64):
    kwargs = dict(FULL)
    tx = optax.inject_hyperparams(superlevel)(**kwargs)
    update = jax.jit(tx.update)
    seq = grad_sequence()
    params = {k: jnp.asarray(v) for k, v in init_params().items()}
    state = tx.init(params)
    ps = {k: torch.tensor(v) for k, v in init_params().items()}
    ref = ReferenceSuperLevelSGD(list(ps.values()), lr=0.5, **{
        k: v for k, v in kwargs.items() if k != "learning_rate"
    })  # fmt: skip
    for i, gs in enumerate(seq):
        if i == 4:  # both change a_0 (and the norm scale) before step 4
            state.hyperparams["learning_rate"] = jnp.asarray(0.8)
            state.hyperparams["norm_scale"] = jnp.asarray(2.0)
            ref.param_groups[0]["lr"] = 0.8
            ref.norm_scale = 2.0
        updates, state = update({k: jnp.asarray(v) for k, v in gs.items()}, state, params)
        params = optax.apply_updates(params, updates)
        for k, p in ps.items():
            p.grad = torch.tensor(gs[k])
        ref.step()
    assert_params(params, {k: p.numpy() for k, p in ps.items()})
    assert float(stats(state)["lr"]) == pytest.approx(ref.last_lr, rel=1e-15)


def test_multisteps_counts_optimizer_steps(x64):
    """MultiSteps(k=3): t counts the inner optimizer's steps, which see the mean gradient."""
    k, micro = 3, grad_sequence(steps=9, nonfinite={})
    # MultiSteps accumulates in float32 unless told otherwise.
    tx = optax.MultiSteps(superlevel(**FULL), every_k_schedule=k, accumulator_dtype=jnp.float64)
    params, state = run_optax(tx, micro, jnp.float64, update=jax.jit(tx.update))
    means = [
        {name: np.mean([g[name] for g in micro[i : i + k]], axis=0) for name in SHAPES}
        for i in range(0, len(micro), k)
    ]
    ref_opt, ref, _ = run_reference(FULL, means)
    assert_params(params, ref)
    s = stats(state)
    assert int(s["step"]) == ref_opt.t == 3
    assert float(s["lr"]) == pytest.approx(ref_opt.last_lr, rel=1e-15)  # a_2, not a_8


def test_vmap_over_hyperparameters_per_member_norms(x64):
    """A population of learning rates and norm scales in one vmapped update: each member
    equals its own reference run, with its own gradient norm (not the population's)."""
    lrs = jnp.array([0.05, 0.2, 0.5, 1.0])
    scales = jnp.array([0.25, 1.0, 1.0, 4.0])
    gain = np.array([1.0, 3.0, 0.2, 10.0])  # members see different gradients
    base = {k: v for k, v in FULL.items() if k not in ("learning_rate", "norm_scale")}
    tx = optax.inject_hyperparams(superlevel)(learning_rate=0.1, norm_scale=1.0, **base)
    p0 = {k: jnp.asarray(v) for k, v in init_params().items()}
    state, params, update = population(tx, p0, lrs, scales)
    seq = grad_sequence()
    for gs in seq:
        grads = {k: jnp.asarray(gain[:, None] * v.reshape(1, -1)).reshape(-1, *v.shape)
                 for k, v in gs.items()}  # fmt: skip
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    s = stats(state)
    for i in range(len(lrs)):
        member = [{k: gain[i] * v for k, v in gs.items()} for gs in seq]
        kw = dict(FULL, learning_rate=float(lrs[i]), norm_scale=float(scales[i]))
        ref_opt, ref, ps = run_reference(kw, member)
        assert_params({k: v[i] for k, v in params.items()}, ref)
        assert float(s["grad_norm"][i]) == pytest.approx(ref_opt.last_norm, rel=1e-14)
        got = {k: v[i] for k, v in momentum_buffers(state).items()}
        assert_params(got, reference_buffers(ref_opt, ps))
    assert len(set(np.asarray(s["grad_norm"]).tolist())) == len(lrs)


def _flat(tree) -> dict[str, np.ndarray]:
    """Leaves by path (the same paths for a model's params and their gradients)."""
    return {
        jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def test_flax_nnx_optimizer_loop(x64):
    """The docs' Flax NNX loop: nnx.Optimizer + superlevel equals the reference on the
    gradients the loop computed; stats() reads through nnx's optimizer state."""
    nnx = pytest.importorskip("flax.nnx", reason="the Flax test needs flax")
    model = nnx.Linear(4, 3, rngs=nnx.Rngs(0), param_dtype=jnp.float64)
    start = _flat(nnx.state(model, nnx.Param))
    kwargs = dict(FULL, maximize=False)
    opt = nnx.Optimizer(model, superlevel(**kwargs), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(1), (16, 4), jnp.float64)
    y = jax.random.normal(jax.random.key(2), (16, 3), jnp.float64)

    @nnx.jit
    def train_step(model, opt, x, y):
        loss, grads = nnx.value_and_grad(lambda m: ((m(x) - y) ** 2).mean())(model)
        opt.update(model, grads)
        return grads

    seen = []
    for _ in range(5):
        grads = train_step(model, opt, x, y)
        seen.append(_flat(grads))
    ref_opt, ref, _ = run_reference(kwargs, seen, params=start)
    assert_params(_flat(nnx.state(model, nnx.Param)), ref)
    s = stats(opt.opt_state)
    assert int(s["step"]) == 5 and float(s["lr"]) == pytest.approx(ref_opt.last_lr, rel=1e-15)


def test_stats_needs_exactly_one_state():
    with pytest.raises(ValueError, match="found 0 in a dict"):
        stats({"count": jnp.zeros(())})
    one = superlevel(0.1).init({"w": jnp.ones(2)})
    assert isinstance(one, SuperlevelState)
    with pytest.raises(ValueError, match="found 2 in a tuple"):
        stats((one, one))
