"""The optax optimizer equals ReferenceSuperLevelSGD on every option combination.

float64 (``jax_enable_x64``): rtol 1e-12. float32: the tolerance below, measured.
"""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax", reason="the JAX tests need the jax extra (pip install .[jax])")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from optax_helpers import (  # noqa: E402
    CASES,
    COMPLETED,
    NONFINITE,
    case_id,
    grad_sequence,
    momentum_buffers,
    reference_buffers,
    run_optax,
    run_reference,
)

from superlevel.optax import stats, superlevel  # noqa: E402

RTOL64 = 1e-12
ATOL64 = 1e-15  # for elements that pass near zero
# float32 after 7 steps against the float64 reference, as an absolute error relative to
# max |p| (elements near zero have no meaningful relative error): ~10 roundings of 6e-8
# per step in the norm and the update, and exp(-decay * t) of a float32 argument. The
# largest error measured over the matrix was 2.2e-7; 2e-6 leaves a 10x margin.
RTOL32 = 2e-6


def _check_against_reference(kwargs, params, state, rtol, atol):
    ref_opt, ref, ps = run_reference(kwargs, grad_sequence())
    for k, v in ref.items():
        np.testing.assert_allclose(np.asarray(params[k]), v, rtol=rtol, atol=atol, err_msg=k)
    if kwargs["momentum"]:
        got, want = momentum_buffers(state), reference_buffers(ref_opt, ps)
        for k, v in want.items():
            np.testing.assert_allclose(got[k], v, rtol=rtol, atol=atol, err_msg=f"buffer {k}")
    s = stats(state)
    assert int(s["step"]) == ref_opt.t == COMPLETED
    assert int(s["skipped"]) == ref_opt.skipped == len(NONFINITE)
    assert float(s["lr"]) == pytest.approx(ref_opt.last_lr, rel=max(rtol, 1e-15))
    assert float(s["grad_norm"]) == pytest.approx(ref_opt.last_norm, rel=max(rtol, 1e-15))
    eta = 1.0 / (1.0 + ref_opt.last_norm / kwargs["norm_scale"])
    assert float(s["effective_lr"]) == pytest.approx(ref_opt.last_lr * eta, rel=max(rtol, 1e-15))


@pytest.mark.parametrize("kwargs", CASES, ids=case_id)
def test_equals_reference_float64(kwargs, x64):
    params, state = run_optax(superlevel(**kwargs), grad_sequence(), jnp.float64)
    assert params["w"].dtype == jnp.float64
    _check_against_reference(kwargs, params, state, RTOL64, ATOL64)


# One compiled update per (nesterov, maximize): the numbers live in the state.
_JITTED: dict = {}


def _injected(kwargs):
    flags = (kwargs["nesterov"], kwargs["maximize"])
    tx = optax.inject_hyperparams(superlevel)(**kwargs)
    if flags not in _JITTED:
        _JITTED[flags] = jax.jit(tx.update)
    return tx, _JITTED[flags]


@pytest.mark.parametrize("kwargs", CASES, ids=case_id)
def test_jit_inject_hyperparams_equals_reference_float64(kwargs, x64):
    """jit, and every number an array (inject_hyperparams): the transforms a Python 0
    leaves out are in the chain with 0."""
    tx, update = _injected(kwargs)
    params, state = run_optax(tx, grad_sequence(), jnp.float64, update=update)
    _check_against_reference(kwargs, params, state, RTOL64, ATOL64)


@pytest.mark.parametrize("kwargs", CASES, ids=case_id)
def test_float32_within_documented_tolerance(kwargs):
    params, state = run_optax(superlevel(**kwargs), grad_sequence(), jnp.float32)
    assert params["w"].dtype == jnp.float32
    ref_opt, ref, _ = run_reference(kwargs, grad_sequence())
    scale = max(np.abs(v).max() for v in ref.values())
    for k, v in ref.items():
        np.testing.assert_allclose(np.asarray(params[k]), v, rtol=0, atol=RTOL32 * scale)
    assert int(stats(state)["step"]) == COMPLETED
