"""Stability tools: the Lyapunov guard, Hessian sharpness and the stability monitor.

* :class:`LyapunovGuard` enforces ``L(theta_{t+1}) <= L(theta_t) + tol`` on each batch
  around any ``torch.optim`` optimizer (backtracking on the lr, bit-exact restore of
  params, state and, with ``model=``, module buffers); it is a ``torch.optim.Optimizer``
  itself, so frameworks that pass a closure (Lightning) take it.
* :func:`sharpness` / :func:`top_eigenvalue` estimate ``lambda_max`` of the Hessian
  from Hessian-vector products (power iteration or Lanczos).
* :class:`StabilityMonitor` records ``dV``, norms, the effective lr, sharpness against
  the optimizer's threshold and sub/super-level segment barriers while training.
"""

from __future__ import annotations

from superlevel.stability.guard import GuardRecord, LyapunovGuard, Snapshot
from superlevel.stability.monitor import StabilityMonitor
from superlevel.stability.sharpness import (
    SharpnessResult,
    hessian_vector_product,
    sharpness,
    top_eigenvalue,
)
from superlevel.stability.thresholds import (
    StabilityRule,
    adam_preconditioner,
    momentum_factor,
    stability_rule,
)

__all__ = [
    "GuardRecord",
    "LyapunovGuard",
    "SharpnessResult",
    "Snapshot",
    "StabilityMonitor",
    "StabilityRule",
    "adam_preconditioner",
    "hessian_vector_product",
    "momentum_factor",
    "sharpness",
    "stability_rule",
    "top_eigenvalue",
]
