"""SuperLevelSGD for JAX: optax transforms held equal to the PyTorch reference.

The rule (the same as :mod:`superlevel.optim`, t = completed, non-skipped steps)::

    a_t   = max(lr * exp(-decay * t), min_lr)
    n_t   = || (g_1, ..., g_k) ||_2                  one norm over the whole gradient pytree
    eta_t = 1 / (1 + n_t / norm_scale)
    buf  <- momentum * buf + g                       (g = -grad when maximize)
    d     = g + momentum * buf if nesterov else buf  (d = g without momentum)
    p    <- p - a_t * (eta_t * d + weight_decay * p)

:func:`superlevel` is the optimizer (an ``optax.chain`` of ``optax.trace``,
``optax.add_decayed_weights`` and ``optax.scale_by_learning_rate`` around the modulation,
with the torch optimizer's ``skip`` of non-finite gradients); :func:`scale_by_superlevel`
is the modulation alone, for chains of your own; :func:`decay_schedule` is ``a_t``;
:func:`stats` reads what ``SuperLevelSGD.stats()`` gives from any optax state.

Needs the ``jax`` extra (``pip install 'superlevel[jax]'``); nothing else in
``superlevel`` imports JAX.
"""

from __future__ import annotations

try:
    import jax  # noqa: F401
    import optax  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"superlevel.optax needs JAX and optax ({exc.name} is not installed): "
        "pip install 'superlevel[jax]'"
    ) from exc

from ._transform import *  # noqa: F403 (the public names are _transform's __all__)
from ._transform import __all__  # noqa: F401
