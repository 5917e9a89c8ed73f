"""Reference accuracies of the task ladder, measured through the harness (``bench run``).

Each row is one configuration (task, task options, budget, epochs, Adam at a fixed
learning rate) run over seeds by ``superlevel bench run`` into a results database; the
table is read back from that database: test accuracy mean ± std over the seeds (final
epoch), the range, and the wall time per run. There is no training loop here: the
numbers are the harness's own.

Rows marked "paper protocol" reproduce the MNIST-1D paper's table with the tasks'
``protocol=paper`` option: all 4000 training examples (no validation carve-out), the
paper's models, batch 100 and 6000 steps (the ``full`` budget's 150 epochs), Adam lr 1e-2.

Usage (from the project root)::

    SUPERLEVEL_DATA=path/to/data python benchmarks/reference_runs.py \
        [--rows mnist1d,digits,mnist] [--db results/reference.db] \
        [--write-docs docs/data_and_tasks.md]

``--write-docs`` replaces the block between the ``reference-runs`` markers of that file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BEGIN = "<!-- reference-runs:begin (written by benchmarks/reference_runs.py) -->"
END = "<!-- reference-runs:end -->"


@dataclass(frozen=True)
class Row:
    """One configuration of the table and the published figure it is compared with."""

    group: str
    task: str
    lr: float
    seeds: int
    options: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None  # None: the full budget's
    published: str = ""


# The paper's table, and what the MNIST-1D repository's classification notebook prints
# at step 6000 with the same protocol (seed 42).
_MLP_PUBLISHED = "~68% (paper), 65.1% (its notebook)"
_CNN_PUBLISHED = "~94% (paper), 92.3% (its notebook)"

ROWS = [
    Row(
        "mnist1d",
        "mnist1d_mlp",
        1e-2,
        5,
        {"protocol": "paper"},
        published=_MLP_PUBLISHED,
    ),
    Row(
        "mnist1d",
        "mnist1d_cnn",
        1e-2,
        5,
        {"protocol": "paper"},
        published=_CNN_PUBLISHED,
    ),
    Row("mnist1d", "mnist1d_mlp", 1e-2, 5),
    Row("mnist1d", "mnist1d_cnn", 1e-2, 5),
    Row("digits", "digits_mlp", 1e-3, 3),
    Row("mnist", "mnist_logreg", 1e-3, 1, epochs=5),
    Row("mnist", "mnist_mlp", 1e-3, 1, published="target 97% (AlgoPerf)"),
    Row("fmnist", "fmnist_2c2d", 1e-3, 1, published="~92% after 100 epochs (DeepOBS)"),
]


def _argv(row: Row, db: str, device: str) -> list[str]:
    argv = ["bench", "run", "--task", row.task, "--optimizers", "adam", "--budget", "full"]
    argv += ["--seeds", str(row.seeds), "--hp", f"lr={row.lr}", "--db", db]
    argv += ["--device", device, "--quiet", "--threads", "1"]
    if row.epochs is not None:
        argv += ["--epochs", str(row.epochs)]
    for key, value in row.options.items():
        argv += ["--option", f"{key}={value}"]
    return argv


def _runs_of(row: Row, db: str) -> list[dict[str, Any]]:
    """The stored runs of exactly ``row``'s configuration."""
    from superlevel.bench.store import Store
    from superlevel.bench.tasks import get_task

    epochs = row.epochs or get_task(row.task).budgets["full"].epochs
    with Store(db, readonly=True) as store:
        runs = store.runs(task=row.task)
    return [
        r
        for r in runs
        if r["optimizer"] == "adam"
        and r["budget"] == "full"
        and r["epochs"] == epochs
        and r["task_options"] == row.options
        and r["hparams"].get("lr") == row.lr
        and r["seed"] <= row.seeds
        and r["status"] in ("finished", "diverged")
    ]


def _line(row: Row, runs: list[dict[str, Any]]) -> str:
    acc = [100 * r["test_metric"] for r in runs if r["test_metric"] is not None]
    first = runs[0]
    info = first["info"]["task_info"]
    steps = first["steps"]
    mean = statistics.fmean(acc)
    std = statistics.stdev(acc) if len(acc) > 1 else 0.0
    spread = f"{min(acc):.1f}-{max(acc):.1f}" if len(acc) > 1 else "—"
    value = f"{mean:.1f} ± {std:.1f}" if len(acc) > 1 else f"{mean:.1f}"
    opts = ", ".join(f"{k}={v}" for k, v in row.options.items()) or "—"
    wall = statistics.fmean(r["wall_s"] for r in runs)
    return (
        f"| {row.task} | {opts} | {info.get('model', '?')} | {info['sizes']['train']} | "
        f"{first['epochs']} ep, {steps} steps, Adam lr {row.lr:g} | {len(runs)} | "
        f"{value} | {spread} | {row.published or '—'} | {wall:.0f} s |"
    )


def table(rows: list[Row], db: str) -> str:
    """The Markdown block (header, environment line, table) for ``rows`` from ``db``."""
    lines = []
    env: dict[str, Any] = {}
    for row in rows:
        runs = _runs_of(row, db)
        if len(runs) != row.seeds:
            raise SystemExit(f"{row.task}: {len(runs)} of {row.seeds} runs in {db}")
        env = runs[0]["env"]
        lines.append(_line(row, runs))
    head = [
        "| task | options | model | train examples | budget | seeds | test acc % mean ± std "
        "| range | published | time/run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    where = (
        f"{env.get('device_name', '?')} ({env.get('device', '?')}, "
        f"torch threads {env.get('torch_threads', '?')}), torch {env.get('torch', '?')}"
    )
    return "\n".join(
        [f"Measured on {where}; seeds 1..N, final-epoch test accuracy.", ""] + head + lines
    )


def write_docs(path: Path, block: str) -> None:
    """Replace the text between the markers of ``path`` with ``block``."""
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path} has no {BEGIN!r} ... {END!r} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}", encoding="utf-8")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    groups = sorted({r.group for r in ROWS})
    p.add_argument("--rows", default="mnist1d,digits,mnist", help=f"groups: {','.join(groups)}")
    p.add_argument("--db", default="results/reference.db")
    p.add_argument("--device", default="cpu")
    p.add_argument("--write-docs", default=None, help="Markdown file with the marker block")
    args = p.parse_args()
    wanted = args.rows.split(",")
    rows = [r for r in ROWS if r.group in wanted]
    if not rows:
        p.error(f"--rows: no group among {wanted}; valid: {','.join(groups)}")

    from superlevel.cli import main as superlevel

    start = time.perf_counter()
    for row in rows:
        argv = _argv(row, args.db, args.device)
        print("superlevel " + " ".join(argv), flush=True)
        status = superlevel(argv)
        if status != 0:
            return status
    block = table(rows, args.db)
    print(block)
    print(
        f"({time.perf_counter() - start:.0f} s in all; rows {json.dumps(wanted)})", file=sys.stderr
    )
    if args.write_docs:
        write_docs(Path(args.write_docs), block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
