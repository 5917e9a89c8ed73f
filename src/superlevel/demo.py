"""``superlevel demo``: the project's main job — run the quick suite, write the report.

Runs every task x optimizer x seed of the ``quick`` suite into ``results/superlevel.db``,
then the suite's learning-rate grid (DeepOBS style, for the LR-sensitivity plot; the best
lr is rerun over the seeds), keeping finished runs (a second call only writes the report
again), and writes ``results/report/report.md``, ``report.html`` and ``figures/``. Runs
train in one worker process per CPU core (``--workers``); the results do not depend on
it. Tasks whose data is absent are skipped with a message.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEFAULT_DB = "results/superlevel.db"
DEFAULT_OUT = "results/report"


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` command."""
    from superlevel.bench.cli import _guarded, add_executor_options
    from superlevel.bench.executors import default_workers

    p = subparsers.add_parser("demo", help="run the quick benchmark suite and write the report")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default {DEFAULT_DB})")
    p.add_argument("--db-timeout", type=float, default=5.0, help="seconds to wait for a lock")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--budget", default=None, help="quick | full (default: the suite's, quick)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $SUPERLEVEL_DATA)")
    p.add_argument("--checkpoint-dir", default=None, help="default: checkpoints/ next to --db")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    p.add_argument("--no-grid", action="store_true", help="skip the learning-rate grid")
    add_executor_options(p)
    p.set_defaults(func=_guarded(run_demo), workers=default_workers())


def run_demo(args: argparse.Namespace) -> int:
    """Run the quick suite into ``args.db`` and write the report into ``args.out``."""
    from superlevel.bench.cli import _executor, _open_store, _printer
    from superlevel.bench.report import write_report
    from superlevel.bench.runner import make_config, missing_data, outcome_counts, run_many
    from superlevel.bench.suites import get_suite
    from superlevel.bench.tune import tune

    start = time.perf_counter()
    suite = get_suite("quick")
    budget = args.budget or suite.budget
    log = _printer(args)
    common = {
        "device": args.device,
        "data_dir": args.data_dir,
        "checkpoint_dir": args.checkpoint_dir,
        "progress": not args.quiet,
        "log": log,
        "retry_failed": args.retry_failed,
    }
    configs = [
        make_config(t, o, s, budget=budget)
        for t in suite.tasks
        for o in suite.optimizers
        for s in range(1, suite.seeds + 1)
    ]
    with _open_store(args) as store, _executor(args) as executor:
        outcomes = run_many(configs, store, executor=executor, skip_missing_data=True, **common)
        print(f"{outcome_counts(outcomes)} in {time.perf_counter() - start:.1f}s -> {args.db}")
        for task in () if args.no_grid else suite.grid_tasks:
            missing = missing_data(task, args.data_dir)
            if missing:
                print(f"lr grid on {task}: SKIPPED, its data is missing ({missing})")
                continue
            tune(
                task,
                suite.optimizers,
                trials=suite.grid_points,
                seeds=suite.seeds,
                store=store,
                budget=budget,
                mode="grid",
                executor=executor,
                **common,
            )
        rep = write_report(store, args.out)
    print(f"report: {rep.markdown} and {rep.html} ({len(rep.figures)} figures)")
    minutes = (time.perf_counter() - start) / 60
    print(f"demo done in {minutes:.1f} min: open {Path(args.out) / 'report.html'}")
    return 0
