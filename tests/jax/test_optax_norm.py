"""The global norm, the schedule, argument checks and the import boundary."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

jax = pytest.importorskip("jax", reason="the JAX tests need the jax extra (pip install .[jax])")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from optax_helpers import run_reference  # noqa: E402

from superlevel.optax import (  # noqa: E402
    decay_schedule,
    global_norm,
    modulation,
    scale_by_superlevel,
    stats,
    superlevel,
)
from superlevel.optim.functional import decayed_lr_host  # noqa: E402

SRC = Path(__file__).resolve().parents[2] / "src"


def exact_norm(tree) -> float:
    """``m * sqrt(sum (g / m)^2)`` in Python floats: no overflow, no underflow."""
    xs = [float(v) for leaf in jax.tree.leaves(tree) for v in np.ravel(np.asarray(leaf))]
    m = max(abs(v) for v in xs)
    return m * math.sqrt(sum((v / m) ** 2 for v in xs)) if m else 0.0


@pytest.mark.parametrize("size", [1e30, 1e-30, 1.0, 1e38])
def test_float32_norm_exact_from_huge_to_tiny(size):
    """float32 squares overflow above ~1.8e19 and flush to zero below ~1e-19."""
    tree = {"a": jnp.full((3, 2), size, jnp.float32), "b": jnp.array([-size, 0.5 * size])}
    assert tree["a"].dtype == jnp.float32
    n = global_norm(tree)
    assert n.dtype == jnp.float32 and np.isfinite(n)
    assert float(n) == pytest.approx(exact_norm(tree), rel=3e-7)
    assert float(jax.jit(global_norm)(tree)) == float(n)


def test_float32_norm_beyond_the_dtype_is_inf_but_steps():
    """A norm above float32's largest value is inf; every element is finite, so the step
    is taken in the scaled form (eta = s / (s + n) ~ 1.2e-39 is not representable as a
    normal number; stats report it as 0), not skipped."""
    g = {"w": jnp.full(8, 3e38, jnp.float32)}
    assert float(global_norm(g)) == np.inf
    p = {"w": jnp.ones(8, jnp.float32)}
    tx = superlevel(0.1, weight_decay=0.5)
    updates, state = tx.update(g, tx.init(p), p)
    s = stats(state)
    assert int(s["step"]) == 1 and int(s["skipped"]) == 0 and float(s["scale"]) == 0.0
    step = 3e38 / (1.0 + math.sqrt(8) * 3e38)  # g_i * eta in float64: 1 / sqrt(8)
    np.testing.assert_allclose(np.asarray(updates["w"]), -0.1 * (0.5 + step), rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_float32_norm_under_vmap_equals_each_member(jit):
    """Under vmap the scaled form runs for every member (a select): huge members must not
    flush their scaling to 0 (a reciprocal of max |g| above 8.5e37 is subnormal)."""
    rows = [[3e38, 3e38, 1.0], [1e38, 0.0, 0.0], [1e30, 1e30, 0.0], [1.0, 2.0, 2.0], [0, 0, 0]]
    x = jnp.asarray(np.array(rows, np.float32))
    f = jax.vmap(lambda v: global_norm({"a": v, "b": 2.0 * v[:1]}))
    got = np.asarray(jax.jit(f)(x) if jit else f(x))
    want = [global_norm({"a": v, "b": 2.0 * v[:1]}) for v in x]
    assert got.tolist() == [float(w) for w in want]
    assert got[0] == np.inf and got[1] == pytest.approx(math.sqrt(5) * 1e38, rel=3e-7)


def test_float64_norm_no_overflow(x64):
    tree = {"a": jnp.full(4, 1e200), "b": jnp.array([3e-200, -1e200])}
    n = global_norm(tree)
    assert n.dtype == jnp.float64
    assert float(n) == pytest.approx(math.sqrt(5) * 1e200, rel=1e-15)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_norm_nonfinite_exactly_when_an_element_is(bad):
    tree = {"a": jnp.ones(3), "b": jnp.array([1.0, bad])}
    assert not np.isfinite(global_norm(tree))
    eta, ok = modulation(global_norm(tree), 1.0)
    assert not bool(ok) and float(eta) == 0.0


def test_norm_edges():
    assert float(global_norm({})) == 0.0
    assert float(global_norm({"a": jnp.zeros(3), "e": jnp.zeros((0,))})) == 0.0
    z = {"c": jnp.array([3 + 4j], jnp.complex64)}
    assert float(global_norm(z)) == pytest.approx(5.0)
    with pytest.raises(TypeError, match="floating point, got dtype int32"):
        global_norm({"i": jnp.arange(3)})


def test_mixed_dtypes_take_the_widest(x64):
    tree = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float64)}
    assert global_norm(tree).dtype == jnp.float64


def test_huge_float32_gradient_gives_a_finite_step():
    """A finite gradient never skips: 1e30 in float32 steps like the reference."""
    g = {"w": jnp.full(4, 1e30, jnp.float32)}
    p = {"w": jnp.ones(4, jnp.float32)}
    tx = superlevel(0.1, momentum=0.9)
    updates, state = tx.update(g, tx.init(p), p)
    assert int(stats(state)["step"]) == 1 and int(stats(state)["skipped"]) == 0
    _, ref, _ = run_reference(
        dict(learning_rate=0.1, momentum=0.9), [{"w": np.full(4, 1e30)}], params={"w": np.ones(4)}
    )
    np.testing.assert_allclose(
        np.asarray(optax.apply_updates(p, updates)["w"]), ref["w"], rtol=1e-6
    )


def test_schedule_equals_torch_a_t(x64):
    for lr, decay, min_lr in [
        (0.5, 0.0, 0.0),
        (0.5, 2e-3, 0.0),
        (0.3, 0.01, 0.05),
        (0.1, 0.1, 0.2),
    ]:
        schedule = decay_schedule(lr, decay, min_lr)
        ts = np.arange(0, 2000, 7)
        got = np.asarray(jax.vmap(schedule)(jnp.asarray(ts, jnp.int32)))
        want = np.array([decayed_lr_host(float(t), lr, decay, min_lr) for t in ts])
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)


def test_scale_by_superlevel_alone():
    """g / (1 + ||g|| / s) with one norm over the tree; a chain with sgd is the rule
    without momentum."""
    g = {"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}
    tx = scale_by_superlevel(norm_scale=2.0)
    out, state = tx.update(g, tx.init(g))
    eta = 1.0 / (1.0 + 5.0 / 2.0)
    assert float(out["a"][0]) == pytest.approx(3.0 * eta) and float(
        out["b"][0, 0]
    ) == pytest.approx(4.0 * eta)
    assert float(state.grad_norm) == 5.0 and float(state.scale) == pytest.approx(eta)
    p = {"a": jnp.zeros(1), "b": jnp.zeros((1, 1))}
    chained = optax.chain(scale_by_superlevel(2.0), optax.sgd(0.3))
    mine = superlevel(0.3, norm_scale=2.0)
    u1, _ = chained.update(g, chained.init(p), p)
    u2, _ = mine.update(g, mine.init(p), p)
    for k in g:
        np.testing.assert_allclose(np.asarray(u1[k]), np.asarray(u2[k]), rtol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(learning_rate=-0.1),
            ValueError,
            "learning_rate must be a finite number >= 0, got -0.1",
        ),
        (dict(learning_rate=True), TypeError, "learning_rate must be a real number, got True"),
        (dict(learning_rate="0.1"), TypeError, "learning_rate must be a real number, got '0.1'"),
        (dict(learning_rate=jnp.ones(3)), TypeError, r"learning_rate .*shape \(3,\)"),
        (dict(learning_rate=0.1, decay=float("nan")), ValueError, "decay must be .* got nan"),
        (
            dict(learning_rate=0.1, norm_scale=0.0),
            ValueError,
            "norm_scale must be a finite number > 0",
        ),
        (dict(learning_rate=0.1, momentum=-0.5), ValueError, "momentum must .* got -0.5"),
        (dict(learning_rate=0.1, nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
        (dict(learning_rate=0.1, maximize=1), TypeError, "maximize must be True or False, got 1"),
        (
            dict(learning_rate=2.0, weight_decay=0.6),
            ValueError,
            "weight_decay=0.6 with learning_rate=2.0",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        superlevel(**kwargs)


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(SRC), **env}
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120
    )


def test_core_package_never_imports_jax():
    code = (
        "import sys, superlevel, superlevel.optim, superlevel.integrations\n"
        "assert superlevel.SuperLevelSGD\n"
        "bad = [m for m in ('jax', 'optax', 'flax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_missing_jax_is_a_clear_error():
    code = "import sys\nsys.modules['jax'] = None\nimport superlevel.optax\n"
    proc = _python(code)
    assert proc.returncode != 0
    assert "superlevel.optax needs JAX and optax (jax is not installed)" in proc.stderr
    assert "pip install 'superlevel[jax]'" in proc.stderr
