"""Train an MNIST MLP while a StabilityMonitor watches; write the figure and the CSV.

    SUPERLEVEL_DATA=path/to/data python examples/stability_mnist.py \
        --optimizer superlevel --lr 0.5 --epochs 2 --every 50 --out stability_mnist.png

The MNIST IDX files are read from ``$SUPERLEVEL_DATA/mnist`` (see ``superlevel.data``).
``--guard`` wraps the optimizer in a LyapunovGuard (each step must not raise the batch
loss); the figure then shows how many steps the guard had to shrink or skip.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from superlevel.stability import LyapunovGuard, StabilityMonitor

F = nn.functional


def make_optimizer(name: str, params, lr: float, decay: float) -> torch.optim.Optimizer:
    """``superlevel`` (SuperLevelSGD with ``decay``), ``sgd``, ``momentum`` or ``adam``."""
    if name == "superlevel":
        from superlevel.optim import SuperLevelSGD

        return SuperLevelSGD(params, lr=lr, decay=decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--optimizer", default="superlevel", choices=["superlevel", "sgd", "momentum", "adam"]
    )
    p.add_argument("--lr", type=float, default=0.5, help="lr (a0 for superlevel)")
    p.add_argument("--decay", type=float, default=1e-4, help="beta of a(t) = a0 exp(-beta t)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--every", type=int, default=50, help="probe period in steps")
    p.add_argument("--probe-size", type=int, default=512)
    p.add_argument("--guard", action="store_true", help="wrap the optimizer in a LyapunovGuard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("stability_mnist.png"))
    args = p.parse_args(argv)

    from superlevel.data import MissingDataError, load_mnist

    try:
        data = load_mnist()
    except MissingDataError as exc:
        print(f"MNIST not found: {exc}", file=sys.stderr)
        return 1
    x = torch.from_numpy(data["train_images"].copy()).float().reshape(-1, 784) / 255.0
    y = torch.from_numpy(data["train_labels"].copy()).long()
    xt = torch.from_numpy(data["test_images"].copy()).float().reshape(-1, 784) / 255.0
    yt = torch.from_numpy(data["test_labels"].copy()).long()
    mean, std = x.mean(), x.std()
    x, xt = (x - mean) / std, (xt - mean) / std

    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(784, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    opt = make_optimizer(args.optimizer, model.parameters(), args.lr, args.decay)
    guard = LyapunovGuard(opt) if args.guard else None
    # a fixed probe batch from the training set (the probes see the same function each time)
    probe = (x[: args.probe_size], y[: args.probe_size])
    monitor = StabilityMonitor(
        model, opt, probe_batch=probe, loss_fn=F.cross_entropy, every=args.every, guard=guard
    )

    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    for _epoch in range(args.epochs):
        for idx in torch.randperm(len(x), generator=gen).split(args.batch):
            xb, yb = x[idx], y[idx]

            def closure(xb=xb, yb=yb):
                opt.zero_grad()
                loss = F.cross_entropy(model(xb), yb)
                loss.backward()
                return loss

            if guard is not None:
                loss = guard.step(closure)
            else:
                loss = closure()
                opt.step()
            monitor.record(loss)
    seconds = time.perf_counter() - t0

    model.eval()
    with torch.no_grad():
        acc = (model(xt).argmax(1) == yt).float().mean().item()
    summary = monitor.summary()
    guard_note = f", guard {guard.counters}" if guard is not None else ""
    title = (
        f"MNIST MLP 784-{args.hidden}-10, {args.optimizer} lr={args.lr}"
        + (f" decay={args.decay}" if args.optimizer == "superlevel" else "")
        + (" + guard" if guard is not None else "")
        + f", test acc {100 * acc:.1f}%"
    )
    monitor.plot(args.out, title=title)
    csv_path = monitor.to_csv(args.out.with_suffix(".csv"))
    print(
        f"{summary['steps']} steps in {seconds:.1f} s, test accuracy {100 * acc:.2f}%, "
        f"{summary['violations']} steps with dV > 0 ({100 * summary['violation_rate']:.1f}%), "
        f"max sharpness {summary['max_sharpness']:.3g}, max sub-level barrier "
        f"{summary['max_barrier_sub']:.3g}, max super-level barrier "
        f"{summary['max_barrier_super']:.3g}{guard_note}"
    )
    print(f"wrote {args.out} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
