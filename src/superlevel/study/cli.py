"""``superlevel study``: run the study's sections through the harness and write the report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from superlevel.study.profiles import PROFILES


def _run(args: argparse.Namespace) -> int:
    import torch

    from superlevel.bench.store import Store, StoreError
    from superlevel.study.common import Context
    from superlevel.study.report import write_report
    from superlevel.study.sections import parse_only, run_sections

    try:
        ids = parse_only(args.only)
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if args.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {args.threads}")
    except ValueError as exc:
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
    before = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with Store(db) as store:
            ctx = Context(
                store=store,
                out=out,
                profile=args.profile,
                device=args.device,
                data_dir=args.data_dir,
                checkpoint_dir=Path(args.checkpoint_dir),
                workers=args.workers,
                log=lambda line: print(line, file=sys.stderr, flush=True),
            )
            if not args.report_only:
                run_sections(ctx, ids)
            path = write_report(ctx, Path(args.readme) if args.readme else None)
    except (StoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(before)
    print(f"report -> {path}")
    return 0


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
