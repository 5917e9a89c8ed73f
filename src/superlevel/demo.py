"""``superlevel demo``: the project's main job — run the quick suite, write the report.

Tunes every optimizer of the ``quick`` suite on each of its tasks with the tuning protocol
(:mod:`superlevel.bench.tune`: the same number of trials for all, each in full,
ranges extended off their edges, selection on a tuning seed, finals on seeds never looked
at) into ``results/superlevel.db``, keeping finished runs (a second call only writes the
report again), and writes ``results/report/report.md``, ``report.html`` and ``figures/``. Runs
train in one worker process per CPU core (``--workers``); the results do not depend on
it. Tasks whose data is absent are skipped with a message. ``--readme README.md`` also
rewrites the README's demo block (the tuned table and this call's time) from the store.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DB = "results/superlevel.db"
DEFAULT_OUT = "results/report"
README_BEGIN = "<!-- demo summary: written by `superlevel demo --readme README.md`; do not edit -->"
README_END = "<!-- end of demo summary -->"


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``demo`` command."""
    from superlevel.bench.cli import _guarded, add_executor_options, seconds
    from superlevel.bench.executors import default_workers

    p = subparsers.add_parser("demo", help="run the quick benchmark suite and write the report")
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default {DEFAULT_DB})")
    p.add_argument("--db-timeout", type=seconds, default=5.0, help="seconds to wait for a lock")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"report folder (default {DEFAULT_OUT})")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--budget", default=None, help="quick | full (default: the suite's, quick)")
    p.add_argument("--data-dir", default=None, help="data folder (default: $SUPERLEVEL_DATA)")
    p.add_argument("--checkpoint-dir", default=None, help="default: checkpoints/ next to --db")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads, 0 up to the CPUs (0: torch's)"
    )
    p.add_argument("--readme", default=None, help="also rewrite the demo block of this README file")
    add_executor_options(p)
    p.set_defaults(func=_guarded(run_demo), workers=default_workers())


def run_demo(args: argparse.Namespace) -> int:
    """Run the quick suite into ``args.db`` and write the report into ``args.out``."""
    from superlevel.bench.cli import _check_device, _checked, _executor, _open_store, _printer
    from superlevel.bench.report import write_report
    from superlevel.bench.run import make_config, missing_data
    from superlevel.bench.suites import get_suite
    from superlevel.bench.tune import Protocol, Setting, TuneError, tune_settings
    from superlevel.blocks import check_block, replace_block

    start = time.perf_counter()
    suite = get_suite("quick")
    budget = args.budget or suite.budget
    # Every input is checked before the first run: minutes of training must not end in
    # an error a look at the arguments would have found.
    _check_device(args)
    for task in suite.tune_tasks:
        _checked(make_config, task, suite.optimizers[0], 1, budget=budget)
    if args.readme:
        _checked(check_block, args.readme, README_BEGIN, README_END)
    log = _printer(args)
    settings = []
    for task in suite.tune_tasks:
        missing = missing_data(task, args.data_dir)
        if missing:
            print(f"{task}: SKIPPED, its data is missing ({missing})")
            continue
        settings.append(Setting(task, budget))
    protocol = Protocol(trials=suite.trials, seeds=suite.seeds)
    with _executor(args) as executor, _open_store(args) as store:
        before = store.count("runs")
        try:
            tune_settings(
                settings, suite.optimizers, protocol, store, executor=executor,
                device=args.device, data_dir=args.data_dir, checkpoint_dir=args.checkpoint_dir,
                progress=not args.quiet, log=log, retry_failed=args.retry_failed,
                other_code=args.other_code,
            )  # fmt: skip
        except TuneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{store.count('runs') - before} runs trained in "
              f"{time.perf_counter() - start:.1f}s -> {args.db}")  # fmt: skip
        rep = write_report(store, args.out)
        minutes = (time.perf_counter() - start) / 60
        if args.readme:
            ran = store.count("runs") - before
            block = readme_block(store, minutes, ran, executor.workers)
            replace_block(args.readme, README_BEGIN, README_END, block)
            print(f"{args.readme}: demo block rewritten")
    print(f"report: {rep.markdown} and {rep.html} ({len(rep.figures)} figures)")
    print(f"demo done in {minutes:.1f} min: open {Path(args.out) / 'report.html'}")
    return 0


def readme_block(store: Any, minutes: float, ran: int, workers: int) -> str:
    """The README's demo block: the tuned test metric per optimizer and task, and the time.

    Rows are optimizers, columns the tasks (the report's overview, transposed); the best
    mean per task is bold. The time is this call's, with how many runs it trained (a
    call that finds its runs stored only writes the report).
    """
    from superlevel.bench.report.select import seeds_text, select
    from superlevel.bench.report.tables import environment_text, overview_table

    runs = store.runs()
    settings = select(runs)
    if not settings:
        return "No finished runs yet."
    head, rows = overview_table(settings)
    tasks = [row[0] for row in rows]
    labels = head[1:]
    cells = {
        (row[0], label): cell for row in rows for label, cell in zip(labels, row[1:], strict=True)
    }
    tuned = all(cells[t, lab].endswith("(tuned)") for t in tasks for lab in labels if cells[t, lab])
    table = [
        "| optimizer | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
        *(
            f"| {lab} | " + " | ".join(cells[t, lab].removesuffix(" (tuned)") for t in tasks) + " |"
            for lab in labels
        ),
    ]
    compared = [r for s in settings for c in s.compared for r in c.runs]
    seeds = seeds_text(sorted({r["seed"] for r in compared}))
    budgets = ", ".join(sorted({str(s.key[1]) for s in settings}))
    what = (
        "tuned (the tuning protocol: 9 trials per optimizer, selected on validation of a "
        "tuning seed, finals on fresh seeds; a diverged seed scored as untrained)"
        if tuned
        else ("as compared in the report")
    )
    timing = (
        f"This call trained {ran} runs and took **{minutes:.1f} min** "
        f"({workers} worker{'s' * (workers != 1)}) on {environment_text(compared)}."
        if ran
        else f"This call found every run stored and only wrote the report ({minutes:.1f} min)."
    )
    return "\n".join(
        [
            f"Test metric, mean ± std over seeds {seeds}, budget `{budgets}`, {what}; best "
            "mean per task in bold (↑ higher is better, ↓ lower):",
            "",
            *table,
            "",
            timing,
        ]
    )
