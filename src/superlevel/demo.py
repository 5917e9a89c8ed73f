"""``superlevel demo``: the project's main job — run the quick suite, write the report.

Runs every task x optimizer x seed of the ``quick`` suite into ``results/superlevel.db``,
then the suite's learning-rate grid (DeepOBS style, for the LR-sensitivity plot; the best
lr is rerun over the seeds), keeping finished runs (a second call only writes the report
again), and writes
``results/report/report.md``, ``report.html`` and ``figures/``. Tasks whose data is
absent are skipped with a message.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT_DB = "results/superlevel.db"
DEFAULT_OUT = "results/report"


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` command."""
    p = subparsers.add_parser("demo", help="run the quick benchmark suite and write the report")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default {DEFAULT_DB})")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--budget", default=None, help="quick | full (default: the suite's, quick)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $SUPERLEVEL_DATA)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-grid", action="store_true", help="skip the learning-rate grid")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run the quick suite into ``args.db`` and write the report into ``args.out``."""
    from superlevel.bench.suites import get_suite
    from superlevel.cli import main

    start = time.perf_counter()
    budget = ["--budget", args.budget] if args.budget else []
    status = main(["bench", "run", "--suite", "quick", *budget, *_passed_on(args)])
    if status:
        return status
    suite = get_suite("quick")
    for task in () if args.no_grid else suite.grid_tasks:
        missing = _missing_data(task, args.data_dir)
        if missing:
            print(f"lr grid on {task}: SKIPPED, its data is missing ({missing})")
            continue
        grid = ["bench", "tune", "--task", task, "--mode", "grid",
                "--optimizers", ",".join(suite.optimizers), "--trials", str(suite.grid_points),
                "--seeds", str(suite.seeds), "--budget", args.budget or suite.budget,
                *_passed_on(args)]  # fmt: skip
        status = main(grid)
        if status:
            return status
    status = main(["bench", "report", "--db", args.db, "--out", args.out])
    minutes = (time.perf_counter() - start) / 60
    print(f"demo done in {minutes:.1f} min: open {Path(args.out) / 'report.html'}")
    return status


def _passed_on(args: argparse.Namespace) -> list[str]:
    """The options that ``demo`` hands on unchanged to ``bench run`` and ``bench tune``."""
    argv = ["--db", args.db, "--device", args.device, "--threads", str(args.threads)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.quiet:
        argv.append("--quiet")
    return argv


def _missing_data(task: str, data_dir: str | None) -> str | None:
    """Where the task's data folder was looked for, when it is absent; else ``None``."""
    from superlevel.bench.tasks import get_task
    from superlevel.data.base import resolve_data_dir

    needs = get_task(task).needs_data
    if needs is None:
        return None
    folder = resolve_data_dir(data_dir) / needs
    return None if folder.is_dir() else f"no folder {folder}"
