"""Sharded arrays on two host devices: the norm is the whole gradient's, not a shard's.

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts its CPU
backend, so the check runs in a fresh interpreter (this process may have started JAX
with one device already, and the flag must not leak into other tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("jax", reason="the JAX tests need the jax extra (pip install .[jax])")

SRC = Path(__file__).resolve().parents[2] / "src"

SCRIPT = r"""
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from superlevel.optax import global_norm, stats, superlevel

assert len(jax.devices()) == 2, jax.devices()
mesh = jax.make_mesh((2,), ("d",))
rows = NamedSharding(mesh, P("d"))      # split over the devices
copies = NamedSharding(mesh, P())       # replicated
rng = np.random.default_rng(0)
params = {"w": rng.standard_normal((8, 4)), "b": rng.standard_normal(4)}
grads = [{"w": 10.0 * rng.standard_normal((8, 4)), "b": rng.standard_normal(4)} for _ in range(4)]
grads[2]["w"][7, 3] = np.inf  # on the second device's shard: both must skip

def place(tree):
    return {"w": jax.device_put(jnp.asarray(tree["w"]), rows),
            "b": jax.device_put(jnp.asarray(tree["b"]), copies)}

tx = superlevel(0.5, decay=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)

def run(tree_of, update):
    p = tree_of(params)
    state = tx.init(p)
    norms = []
    for g in grads:
        u, state = update(tree_of(g), state, p)
        p = optax.apply_updates(p, u)
        norms.append(float(stats(state)["grad_norm"]))
    return p, state, norms

plain = lambda t: {k: jnp.asarray(v) for k, v in t.items()}
p1, s1, n1 = run(plain, jax.jit(tx.update))
p2, s2, n2 = run(place, jax.jit(tx.update))
assert len(p2["w"].sharding.device_set) == 2 and p2["w"].sharding.is_equivalent_to(rows, 2)
assert len(p2["w"].addressable_shards) == 2
for k in params:
    np.testing.assert_allclose(np.asarray(p2[k]), np.asarray(p1[k]), rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(n2, n1, rtol=1e-13)
g0 = place(grads[0])
whole = float(np.sqrt((grads[0]["w"] ** 2).sum() + (grads[0]["b"] ** 2).sum()))
shard = float(np.sqrt((grads[0]["w"][:4] ** 2).sum() + (grads[0]["b"] ** 2).sum()))
assert abs(n2[0] - whole) <= 1e-12 * whole, (n2[0], whole)
assert abs(n2[0] - shard) > 1e-3 * whole, (n2[0], shard)  # not one device's part
assert abs(float(jax.jit(global_norm)(g0)) - whole) <= 1e-12 * whole
assert int(stats(s2)["skipped"]) == 1 and int(stats(s2)["step"]) == 3
print("OK", n2)
"""


def test_two_host_devices_global_norm_and_equal_params():
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "XLA_FLAGS": (
            os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        ).strip(),
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.startswith("OK")
