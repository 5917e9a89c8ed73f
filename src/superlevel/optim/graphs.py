"""One call to run an optimizer's step as a CUDA graph replay.

A captured step launches its ~15 small kernels (norm, flag, schedule, update) as one
graph: on an accelerator, where the eager step is launch-bound for small and medium
models, that is the fastest way to run it. torch offers the pieces (``torch.cuda.graph``,
side-stream warm-up, ``capturable=True`` optimizers); this module puts them in the order
they must come in, and refuses the states in which a replay would silently be wrong.

Usage::

    lr = torch.tensor(0.1, device="cuda")          # a tensor lr: schedulers edit it in place
    opt = SuperLevelSGD(model.parameters(), lr=lr, decay=1e-4, capturable=True)
    loss_fn(model(x), y).backward()                # gradients exist, in their final tensors
    step = capture_step(opt)                       # one real step (warm-up), then capture
    for x, y in loader:
        opt.zero_grad(set_to_none=False)           # keep the captured gradient tensors
        loss_fn(model(x), y).backward()
        step()                                     # replays the captured optimizer.step()
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["capture_step"]


def _check_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Refuse what a replay cannot do right, before anything runs."""
    groups = optimizer.param_groups
    if not all(g.get("capturable", False) for g in groups):
        raise ValueError(
            "capture_step needs an optimizer built with capturable=True (its scalars then "
            "stay on the device and the step never reads them on the host)"
        )
    params = [p for g in groups for p in g["params"]]
    off = sorted({str(p.device) for p in params if p.device.type != "cuda"})
    if off:
        raise ValueError(f"capture_step needs CUDA tensors (CUDA graphs); got params on {off}")
    missing = sum(1 for p in params if p.grad is None)
    if missing:
        raise ValueError(
            f"capture_step: {missing} of {len(params)} params have no gradient; run a "
            "backward first (the graph reads the gradient tensors that exist at capture)"
        )
    if not torch.cuda.is_available():  # pragma: no cover - CUDA params imply CUDA
        raise RuntimeError("capture_step needs CUDA")


def capture_step(optimizer: torch.optim.Optimizer, *, warmup: int = 1) -> Callable[[], None]:
    """Capture ``optimizer.step()`` in a CUDA graph and return its replay.

    Args:
        optimizer: A ``capturable=True`` optimizer over CUDA params that all have a
            gradient (SuperLevelSGD, or torch's capturable optimizers).
        warmup: Real steps taken first on a side stream, on the current gradients, so
            that lazily created state (momentum buffers, counters) exists and the graph
            records the steady-state step. They change the params like any step;
            ``0`` when the optimizer has stepped before.

    Returns:
        ``replay()``: runs the captured step on whatever the gradient tensors hold.
        Keep them (``zero_grad(set_to_none=False)``) and keep the lr a tensor edited in
        place: a new tensor or a Python float after capture is not seen by the replay.

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer`` (``None``, a model...).
        ValueError: not capturable, a param off CUDA, or a param without gradient.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"capture_step needs a torch.optim.Optimizer, got {optimizer!r} "
            f"({type(optimizer).__name__})"
        )
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    _check_capturable(optimizer)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            optimizer.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        optimizer.step()
    return graph.replay
