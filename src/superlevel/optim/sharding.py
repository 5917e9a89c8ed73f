"""Refuse params that are a shard of the model when no ``shard_group`` says so.

``ZeroRedundancyOptimizer`` and FSDP1 hand each rank's optimizer plain tensors that hold
only part of the model: without ``shard_group`` the "global" gradient norm would be the
rank's shard's, and every rank would step with its own ``eta_t`` (ZeRO's params then
drift apart; FSDP1 steps its shards with too small a norm). Both are visible on the host
when a param group is added, so the check runs there, once, and never in ``step()``:

* ZeRO builds its local optimizer inside its own methods (over more than one rank);
* FSDP1 flat parameters record their unsharded size; a shard holds fewer elements.

FSDP1 with ``use_orig_params=True`` hands over the original parameters as flat views that
do not say whether they are sharded (``NO_SHARD`` gives full views): a warning then.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from ._torch_api import fsdp1_flat_param_numel, zero_building

__all__ = ["check_shards"]

_FIX = (
    "Pass shard_group= the process group the shards are spread over "
    "(torch.distributed.group.WORLD for plain full sharding): the squared norm is then "
    "summed over it, one all-reduce per step"
)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def check_shards(params: Sequence[Tensor], shard_group: Any) -> None:
    """Raise ``ValueError`` when ``params`` are a shard of the model and ``shard_group`` is None.

    Args:
        params: One param group's params, as the optimizer holds them.
        shard_group: The optimizer's ``shard_group``; with one, nothing is checked.

    Raises:
        ValueError: Built by a ``ZeroRedundancyOptimizer`` over more than one rank, or
            handed an FSDP1 flat parameter that holds fewer elements than the whole.

    Warns:
        UserWarning: FSDP1 ``use_orig_params=True`` parameters on more than one rank.
    """
    if shard_group is not None:
        return
    zero = zero_building()
    ranks = getattr(zero, "world_size", 1)
    if zero is not None and ranks > 1:
        raise ValueError(
            f"SuperLevelSGD is the local optimizer of a ZeroRedundancyOptimizer over {ranks} "
            f"ranks, which gives it only this rank's params: without shard_group its gradient "
            f"norm would be this rank's share's, not the model's, and the ranks would step "
            f"differently. {_FIX} (ZeroRedundancyOptimizer(..., optimizer_class=SuperLevelSGD, "
            f"shard_group=...) passes it on)."
        )
    flat = [n for n in map(fsdp1_flat_param_numel, params) if n is not None]
    shards = [(here, whole) for here, whole in flat if here < whole]
    if shards:
        here, whole = shards[0]
        raise ValueError(
            f"SuperLevelSGD got {len(shards)} FSDP1 flat parameter(s) that are shards (this "
            f"rank holds {here} of the {whole} elements of the first): without shard_group "
            f"the gradient norm would be this rank's shard's, not the model's. {_FIX}."
        )
    if any(whole < 0 for _, whole in flat) and _world_size() > 1:
        warnings.warn(
            "SuperLevelSGD got FSDP1 parameters with use_orig_params=True and no shard_group: "
            "if FSDP shards them (any strategy but NO_SHARD), the gradient norm is this "
            f"rank's shard's. {_FIX}. (With NO_SHARD, shard_group=None is right.)",
            UserWarning,
            stacklevel=4,
        )
