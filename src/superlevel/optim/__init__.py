"""The SuperLevelSGD optimizer: thin class, functional core, slow reference.

``SuperLevelSGD`` (the ``torch.optim`` class), ``damp_grad_norm_`` (the modulation alone,
for any optimizer), ``capture_step`` (the step as one CUDA graph replay),
``norm_in_backward`` (the global norm taken during backward, by hooks), the functional
pieces in :mod:`.functional` and the slow reference
:class:`.reference.ReferenceSuperLevelSGD` that the tests hold every path equal to.
"""

from .backward_norm import NormInBackward, norm_in_backward
from .clip import damp_grad_norm_
from .functional import decayed_lr, modulation, superlevel_update_
from .graphs import capture_step
from .norm import global_grad_norm
from .optimizer import SuperLevelSGD
from .reference import ReferenceSuperLevelSGD

__all__ = [
    "NormInBackward",
    "ReferenceSuperLevelSGD",
    "SuperLevelSGD",
    "capture_step",
    "damp_grad_norm_",
    "decayed_lr",
    "global_grad_norm",
    "modulation",
    "norm_in_backward",
    "superlevel_update_",
]
