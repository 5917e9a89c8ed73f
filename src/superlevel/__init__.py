"""superlevel: gradient-norm-modulated exponential-decay SGD and the tools around it.

The paper's rule (arXiv 2409.16769)::

    theta_{t+1} = theta_t - a0 * exp(-beta * t) * grad / (1 + ||grad||)

Public names are imported lazily so that ``import superlevel`` stays cheap and the
optional extras (plots, benchmark) are only needed by the parts that use them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "SuperLevelSGD": "superlevel.optim",
    "damp_grad_norm_": "superlevel.optim",
    "LyapunovGuard": "superlevel.stability",
    "StabilityMonitor": "superlevel.stability",
    "sharpness": "superlevel.stability",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'superlevel' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
