"""float32 gradients whose norm exceeds float32 (finite elements) or whose eta is subnormal.

The step is taken in the scaled form (``x * eta = (x u) v``), so the params equal torch's
``SuperLevelSGD`` on the same float32 gradients, and the float64 reference, within the
documented float32 tolerance.
"""

from __future__ import annotations

import itertools

import pytest

jax = pytest.importorskip("jax", reason="the JAX tests need the jax extra (pip install .[jax])")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402
from optax_helpers import (  # noqa: E402
    SHAPES,
    init_params,
    momentum_buffers,
    population,
    run_optax,
    run_reference,
    torch_kwargs,
)
from test_optax_reference import RTOL32  # noqa: E402

from superlevel.optax import global_norm, scale_by_superlevel, stats, superlevel  # noqa: E402
from superlevel.optim import SuperLevelSGD  # noqa: E402

F32 = np.finfo(np.float32)
BIG = 1.4e38  # 8 elements: norm 4e38 > float32 max; with momentum 0.5, |buf| <= 2.8e38
CASES = [
    dict(
        learning_rate=0.5,
        decay=0.4,
        min_lr=0.1,
        momentum=m,
        nesterov=n,
        weight_decay=wd,
        norm_scale=ns,
    )
    for (m, n), wd, ns in itertools.product(
        [(0.0, False), (0.5, False), (0.5, True)], [0.0, 0.1], [1.0, 0.25]
    )
]


def _case_id(kwargs) -> str:
    k = kwargs
    return f"m{k['momentum']}-nesterov{k['nesterov']}-wd{k['weight_decay']}-s{k['norm_scale']}"


def overflow_sequence(seed: int = 0) -> list[dict[str, np.ndarray]]:
    """float32 gradients: 2 ordinary, then norms above float32 max (8 elements of
    +-1.4e38), a nan (skipped), and norm 1.4e38 (finite, eta ~ 7e-39: subnormal)."""
    rng = np.random.default_rng(seed)
    total = sum(int(np.prod(s)) for s in SHAPES.values())
    seq = []
    for kind in ["plain", "plain", "over", "over", "nan", "subnormal", "over"]:
        flat = rng.standard_normal(total) * (10.0 if kind == "plain" else 1.0)
        if kind == "over":
            flat[rng.choice(total, 8, replace=False)] = BIG * rng.choice([-1.0, 1.0], 8)
        if kind == "subnormal":
            flat[rng.integers(total)] = BIG
        if kind == "nan":
            flat[3] = np.nan
        flat = flat.astype(np.float32)
        gs, i = {}, 0
        for k, shape in SHAPES.items():
            n = int(np.prod(shape))
            gs[k] = flat[i : i + n].reshape(shape)
            i += n
        seq.append(gs)
    return seq


def widened(seq):
    """The same float32 values as float64, for the float64 reference."""
    return [{k: v.astype(np.float64) for k, v in gs.items()} for gs in seq]


def run_torch32(kwargs, seq):
    """torch's SuperLevelSGD on float32 params through ``seq``: (params, momentum buffers)."""
    ps = {k: torch.tensor(v, dtype=torch.float32) for k, v in init_params().items()}
    opt = SuperLevelSGD(list(ps.values()), **torch_kwargs(kwargs))
    for gs in seq:
        for k, p in ps.items():
            p.grad = torch.tensor(gs[k])
        opt.step()
    bufs = {k: opt.state[p].get("momentum_buffer") for k, p in ps.items()}
    return {k: p.numpy() for k, p in ps.items()}, bufs


def test_the_sequence_is_what_it_claims():
    seq = overflow_sequence()
    norms = [np.sqrt(sum(np.sum(v.astype(np.float64) ** 2) for v in gs.values())) for gs in seq]
    assert all(np.isfinite(v).all() for i, gs in enumerate(seq) if i != 4 for v in gs.values())
    assert [n > F32.max for n in norms] == [False, False, True, True, False, False, True]
    assert np.isnan(norms[4])
    assert 1.0 / (1.0 + norms[5]) < F32.tiny  # eta subnormal at norm_scale 1 (and 0.25)
    assert float(global_norm({k: jnp.asarray(v) for k, v in seq[2].items()})) == np.inf


@pytest.mark.parametrize("kwargs", CASES, ids=_case_id)
def test_overflowing_norm_steps_like_torch_float32(kwargs):
    """Fails on a modulation that takes eta = 0 for these steps (weight decay only)."""
    seq = overflow_sequence()
    params, state = run_optax(superlevel(**kwargs), seq, jnp.float32)
    want32, torch_bufs = run_torch32(kwargs, seq)
    ref_opt, want64, _ = run_reference(kwargs, widened(seq))
    scale = max(np.abs(v).max() for v in want64.values())
    for k in SHAPES:
        got = np.asarray(params[k])
        assert got.dtype == np.float32 and np.isfinite(got).all(), k
        np.testing.assert_allclose(got, want64[k], rtol=0, atol=RTOL32 * scale, err_msg=k)
        np.testing.assert_allclose(got, want32[k], rtol=0, atol=RTOL32 * scale, err_msg=k)
    if kwargs["momentum"]:
        # The same float32 operations (mu * b + g) on both sides: equal.
        got = momentum_buffers(state)
        for k in SHAPES:
            np.testing.assert_array_equal(got[k], torch_bufs[k].numpy(), err_msg=k)
    s = stats(state)
    assert int(s["step"]) == ref_opt.t == 6 and int(s["skipped"]) == ref_opt.skipped == 1
    # The last gradient's norm exceeds float32: reported as inf, eta and a_t * eta as 0.
    assert float(s["grad_norm"]) == np.inf
    assert float(s["scale"]) == 0.0 and float(s["effective_lr"]) == 0.0


def test_jit_and_injected_hyperparams_take_the_same_steps():
    kwargs = CASES[-1]  # momentum, Nesterov, weight decay, norm_scale 0.25
    seq = overflow_sequence()
    eager, _ = run_optax(superlevel(**kwargs), seq, jnp.float32)
    tx = optax.inject_hyperparams(superlevel)(**kwargs)
    jitted, _ = run_optax(tx, seq, jnp.float32, update=jax.jit(tx.update))
    _, want64, _ = run_reference(kwargs, widened(seq))
    scale = max(np.abs(v).max() for v in want64.values())
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(jitted[k]), want64[k], rtol=0, atol=RTOL32 * scale)
        np.testing.assert_allclose(
            np.asarray(jitted[k]), np.asarray(eager[k]), rtol=0, atol=RTOL32 * scale
        )


def test_vmap_members_with_and_without_overflow():
    """Under vmap one member's norm overflows, one's eta is subnormal, one is ordinary:
    each equals its own torch run (the select runs both forms for every member)."""
    lrs = jnp.array([0.3, 0.3, 0.5], jnp.float32)
    scales = jnp.array([1.0, 0.25, 1.0], jnp.float32)
    gain = np.array([1.0, 1.0, 1e-37], np.float32)  # the last member: plain norms only
    kwargs = dict(momentum=0.5, weight_decay=0.1)
    tx = optax.inject_hyperparams(superlevel)(learning_rate=0.1, norm_scale=1.0, **kwargs)
    p0 = {k: jnp.asarray(v, jnp.float32) for k, v in init_params().items()}
    state, params, update = population(tx, p0, lrs, scales)
    seq = overflow_sequence()
    for gs in seq:
        grads = {k: jnp.asarray(np.stack([g * v for g in gain])) for k, v in gs.items()}
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
    s = stats(state)
    assert np.asarray(s["grad_norm"]).tolist()[:2] == [np.inf, np.inf]
    assert np.isfinite(np.asarray(s["grad_norm"])[2])
    for i in range(len(lrs)):
        member = [{k: gain[i] * v for k, v in gs.items()} for gs in seq]
        kw = dict(kwargs, learning_rate=float(lrs[i]), norm_scale=float(scales[i]))
        want, _ = run_torch32(kw, member)
        scale = max(np.abs(v).max() for v in want.values())
        for k in SHAPES:
            got = np.asarray(params[k][i])
            np.testing.assert_allclose(
                got, want[k], rtol=0, atol=RTOL32 * scale, err_msg=f"{i} {k}"
            )


@pytest.mark.parametrize(
    ("values", "norm_scale"),
    [
        ([3e38, 3e38, -1.0, 2.0], 1.0),  # the norm overflows
        ([3e38, 3e38, -1.0, 2.0], 1e-3),  # and s / max|g| is subnormal
        ([2e38, 1.0, -3.0, 1e30], 1.0),  # finite norm, eta ~ 5e-39 (subnormal)
        ([1e37, 5e36, 1.0, 0.0], 0.25),  # finite norm, eta ~ 2e-38 (normal, barely)
    ],
)
def test_scale_by_superlevel_alone_beyond_float32(values, norm_scale):
    """``g / (1 + ||g|| / s)`` elementwise as float64 computes it from the float32 values;
    elements whose exact result is below float32's smallest normal may flush to 0."""
    g = np.array(values, np.float32)
    tx = scale_by_superlevel(norm_scale)
    out, state = tx.update({"g": jnp.asarray(g)}, tx.init({"g": jnp.zeros(4, jnp.float32)}))
    g64 = g.astype(np.float64)
    want = g64 / (1.0 + np.linalg.norm(g64) / np.float32(norm_scale))
    got = np.asarray(out["g"])
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=4 * F32.eps, atol=F32.tiny)
    assert np.abs(got).max() > 0.1 * norm_scale  # a step, not 0
    n = np.linalg.norm(g64)
    assert float(state.grad_norm) == (np.inf if n > F32.max else pytest.approx(n, rel=3e-7))


def test_nonfinite_elements_still_skip():
    """An inf element is not an overflowing norm: superlevel skips, the transform alone
    gives a non-finite output."""
    g = {"w": jnp.array([3e38, 3e38, jnp.inf], jnp.float32)}
    p = {"w": jnp.ones(3, jnp.float32)}
    tx = superlevel(0.1, momentum=0.5, weight_decay=0.5)
    updates, state = tx.update(g, tx.init(p), p)
    s = stats(state)
    assert int(s["step"]) == 0 and int(s["skipped"]) == 1 and float(s["scale"]) == 0.0
    assert not np.asarray(updates["w"]).any()
    assert not momentum_buffers(state)["w"].any()
    out, _ = scale_by_superlevel().update(g, scale_by_superlevel().init(p))
    assert not np.isfinite(np.asarray(out["w"])).all()
