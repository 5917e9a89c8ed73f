"""Reference accuracies of the task ladder with Adam, against published figures.

Trains each task with ``torch.optim.Adam`` at a fixed, sensible learning rate for a stated
budget and prints a Markdown table: task, model, data, budget, validation accuracy (best
epoch), test accuracy (final epoch), wall time on this machine. Published reference points:
MNIST-1D paper (MLP ~68%, CNN ~94%), AlgoPerf's MNIST target (97%), DeepOBS fmnist_2c2d
(~92% after 100 epochs).

Usage (from the project root)::

    SUPERLEVEL_DATA=path/to/data python benchmarks/reference_accuracy.py \
        [--tasks mnist1d_mlp,mnist1d_cnn,...] [--epochs fmnist_2c2d=3] [--out results.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace

import torch

from superlevel.bench.task import TaskInstance
from superlevel.bench.tasks import build_task, get_task

# task -> (Adam learning rate, epochs on this CPU; None = the task's full budget)
SETTINGS: dict[str, tuple[float, int | None]] = {
    "digits_mlp": (1e-3, None),
    "mnist1d_mlp": (1e-2, None),  # the MNIST-1D paper: Adam 1e-2, batch 100, ~6000 steps
    "mnist1d_cnn": (1e-2, None),
    "mnist_logreg": (1e-3, 5),
    "mnist_mlp": (1e-3, None),
    "fmnist_2c2d": (1e-3, 5),  # DeepOBS trains 100 epochs; a CPU affords a few
}


def evaluate(ti: TaskInstance, split: str) -> tuple[float, float]:
    """Mean loss and metric over ``split``."""
    ti.model.eval()
    loss = metric = 0.0
    n = 0
    with torch.no_grad():
        for x, y in ti.eval_batches(split):
            out = ti.model(x)
            loss += float(ti.loss_fn(out, y)) * y.shape[0]
            metric += float(ti.metric_fn(out, y))
            n += y.shape[0]
    ti.model.train()
    return loss / n, metric / n


def run(name: str, lr: float, epochs: int | None, device: str, seed: int) -> dict:
    """Train ``name`` with Adam; returns the row of the table."""
    budget = get_task(name).budgets["full"]
    if epochs is not None:
        budget = replace(budget, epochs=epochs)
    ti = build_task(name, seed=seed, device=device, budget=budget)
    opt = torch.optim.Adam(ti.model.parameters(), lr=lr)
    best_val, best_epoch, reached = -1.0, 0, None
    start = time.perf_counter()
    for epoch in range(budget.epochs):
        for x, y in ti.train_batches(epoch):
            opt.zero_grad(set_to_none=True)
            ti.loss_fn(ti.model(x), y).backward()
            opt.step()
        _, val = evaluate(ti, "val")
        if val > best_val:
            best_val, best_epoch = val, epoch + 1
        if reached is None and budget.target is not None and val >= budget.target:
            reached = epoch + 1
    train_s = time.perf_counter() - start
    _, test = evaluate(ti, "test")
    return {
        "task": name,
        "model": ti.info.get("model", ""),
        "data": ti.info.get("data", ""),
        "train_examples": ti.info["sizes"]["train"],
        "budget": f"{budget.epochs} ep x bs {budget.batch_size} "
        f"({budget.epochs * ti.steps_per_epoch} steps), Adam lr {lr:g}",
        "best_val": best_val,
        "best_epoch": best_epoch,
        "target": budget.target,
        "target_epoch": reached,
        "test": test,
        "seconds": train_s,
    }


def _reached(row: dict) -> str:
    if row["target"] is None:
        return "-"
    when = f"epoch {row['target_epoch']}" if row["target_epoch"] else "not reached"
    return f"{100 * row['target']:.0f}%: {when}"


def to_markdown(rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| task | model | data | budget | val acc (best epoch) | val target reached at "
        "| test acc (final) | time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['model']} | {r['data']}, {r['train_examples']} train | "
            f"{r['budget']} | {100 * r['best_val']:.1f}% ({r['best_epoch']}) | "
            f"{_reached(r)} | {100 * r['test']:.1f}% | {r['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(SETTINGS))
    parser.add_argument("--epochs", default="", help="overrides, e.g. fmnist_2c2d=3,mnist_mlp=5")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the table (.md) and rows (.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = {}
    for item in filter(None, args.epochs.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = int(value)
    rows = []
    for name in args.tasks.split(","):
        lr, epochs = SETTINGS.get(name, (1e-3, None))
        row = run(name, lr, overrides.get(name, epochs), args.device, args.seed)
        print(json.dumps(row), flush=True)
        rows.append(row)
    header = (
        f"Adam, seed {args.seed}, device {args.device} ({platform.processor() or 'cpu'}, "
        f"{torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    table = to_markdown(rows, header)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
        with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
