"""``superlevel study``: run the study's sections through the harness and write the report.

Every argument is checked before the store is opened (a bad ``--device`` or
``--threads``, a README without the study block); ``--report-only`` opens the store
read-only (an empty or absent file is an error, never given a schema); and a store this
call created is removed again when the call fails before storing anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superlevel.bench.cli import add_other_code_option
from superlevel.study.profiles import PROFILES


def _run(args: argparse.Namespace) -> int:
    import torch

    from superlevel.bench.cli import UsageError, check_threads
    from superlevel.bench.run import OtherCodeError, resolve_device
    from superlevel.bench.store import Store, StoreError
    from superlevel.study.common import Context
    from superlevel.study.report import write_report
    from superlevel.study.sections import parse_only, run_sections

    try:
        ids = parse_only(args.only)
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        check_threads(args.threads)
        resolve_device(args.device)  # a bad or absent device, before the store exists
    except (ValueError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.readme:
        text = Path(args.readme).read_text() if Path(args.readme).is_file() else ""
        from superlevel.study.report import BEGIN, END

        if BEGIN not in text or END not in text:
            print(f"error: {args.readme} has no study block ({BEGIN} ... {END})", file=sys.stderr)
            return 2
    out = Path(args.out)
    db = Path(args.db) if args.db else out / "raw" / "study.db"
    if args.report_only and not db.exists():
        print(f"error: no stored results at {db}; run the study first", file=sys.stderr)
        return 2
    created = not (db.is_file() and db.stat().st_size > 0)
    before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with Store(db, readonly=args.report_only) as store:
            ctx = Context(
                store=store,
                out=out,
                profile=args.profile,
                device=args.device,
                data_dir=args.data_dir,
                checkpoint_dir=Path(args.checkpoint_dir),
                workers=args.workers,
                other_code=args.other_code,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )
            if not args.report_only:
                run_sections(ctx, ids)
            path = write_report(ctx, Path(args.readme) if args.readme else None)
    except BrokenPipeError:  # the reader went away: the entry point ends quietly
        raise
    except (StoreError, ValueError, OSError, OtherCodeError) as exc:
        if created and not args.report_only:
            _remove_if_empty(db)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(before)
    print(f"report -> {path}")
    return 0


def _remove_if_empty(db: Path) -> None:
    """Remove the store ``db`` this call created, when it holds no run: a failed first call
    (missing data, a bad section argument) leaves no empty database behind."""
    from superlevel.bench.store import Store, StoreError

    try:
        with Store(db, readonly=True) as store:
            empty = store.count("runs") == 0 and store.count("tunings") == 0
    except StoreError:
        return  # not a store we can read: leave it as it is
    if empty:
        for path in (db, db.with_name(db.name + "-journal")):
            path.unlink(missing_ok=True)


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``superlevel study``."""
    p = subparsers.add_parser(
        "study",
        help="run the paper's experiments and open questions; write docs/study "
        "(README.md and report.html)",
        description=(
            "Run the study's sections (E1 quadratic, E2 landscape topology, E3 MNIST and "
            "beta, N2, Q1, Q2, Q3) through the benchmark harness, resuming where a previous "
            "call stopped, then write the report."
        ),
    )
    p.add_argument("--profile", choices=list(PROFILES), default="cpu", help="size (default cpu)")
    p.add_argument("--only", help="comma-separated section ids, e.g. E1,E2 (default: all)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    add_other_code_option(p)
    p.add_argument("--db", help="results store (default: OUT/raw/study.db)")
    p.add_argument("--out", default="docs/study", help="report folder (default docs/study)")
    p.add_argument(
        "--report-only", action="store_true", help="rebuild the report from stored results"
    )
    p.add_argument(
        "--readme",
        help="also refresh the study block (claims and verdicts) of this README file",
    )
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda (default cpu)")
    p.add_argument("--data-dir", help="data folder (default: $SUPERLEVEL_DATA)")
    p.add_argument(
        "--checkpoint-dir",
        default="results/study-checkpoints",
        help="checkpoints of interrupted runs (default results/study-checkpoints)",
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1; 0 keeps torch's)"
    )
    p.set_defaults(func=_run)
