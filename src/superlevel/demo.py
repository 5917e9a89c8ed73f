"""``superlevel demo``: the project's main job — run the quick suite, write the report.

Runs every task x optimizer x seed of the ``quick`` suite into ``results/superlevel.db``
(finished runs are kept, so a second call only writes the report again) and writes
``results/report/report.md``, ``report.html`` and ``figures/``. Tasks whose data is
absent are skipped with a message.
"""

from __future__ import annotations

import argparse
import time

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
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Run the quick suite into ``args.db`` and write the report into ``args.out``."""
    from superlevel.bench import cli as bench_cli

    start = time.perf_counter()
    run_args = argparse.Namespace(
        task=None,
        suite="quick",
        optimizers=None,
        seeds=None,
        epochs=None,
        budget=args.budget,
        hp=None,
        option=None,
        db=args.db,
        db_timeout=5.0,
        device=args.device,
        data_dir=args.data_dir,
        checkpoint_dir=None,
        quiet=args.quiet,
    )
    status = bench_cli._guarded(bench_cli.cmd_run)(run_args)
    if status:
        return status
    report_args = argparse.Namespace(db=args.db, db_timeout=5.0, out=args.out)
    status = bench_cli._guarded(bench_cli.cmd_report)(report_args)
    print(f"demo done in {time.perf_counter() - start:.0f}s: open {args.out}/report.html")
    return status
