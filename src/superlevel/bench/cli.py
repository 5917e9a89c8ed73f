"""``superlevel bench``: list, run, tune, results, report.

Every sub-command returns an exit status: 0 on success, 2 on bad input or an unusable
environment (unknown name, bad number, unusable database, missing data, a file or
folder that cannot be written, a broken checkpoint) with a one-line ``error:`` message
on stderr that names the bad value or path and the cause. Only the project's own errors
(and operating-system errors, which name their file) are turned into that message; any
other exception is a bug and keeps its traceback.

Sizes have documented bounds (:data:`MAX_SEEDS`, :data:`MAX_TRIALS`, ``--threads`` at
most the CPUs, ``--workers`` capped at the cores and the runs): past them a command
would only exhaust memory or compete with itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from superlevel.bench.registry import ConfigError  # light: no torch, no data loaders

DEFAULT_DB = "results/superlevel.db"
MAX_SEEDS = 1000  # seeds 1..N per run setting; more only fills memory before any output
MAX_TRIALS = 10_000  # search points per optimizer in `bench tune`


class UsageError(ConfigError):
    """Bad command-line input (the message names the bad value)."""


def _checked(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``, a ``ValueError`` it raises being bad input (UsageError).

    Only for the validation calls made before any work starts (``make_config``,
    ``resolve_device``), whose ``ValueError`` can mean nothing but a bad argument.
    """
    try:
        return func(*args, **kwargs)
    except ValueError as exc:
        if isinstance(exc, UsageError):
            raise
        raise UsageError(str(exc)) from exc


def _os_error_text(exc: OSError) -> str:
    """``Permission denied: 'out/report.md'`` (the cause, then the file when known)."""
    cause = exc.strerror or str(exc)
    where = [f for f in (exc.filename, exc.filename2) if f is not None]
    return f"{cause}: {' -> '.join(repr(str(f)) for f in where)}" if where else cause


def _names(text: str, what: str) -> list[str]:
    names = []
    for part in text.split(","):
        part = part.strip()
        if part and part not in names:
            names.append(part)
    if not names:
        raise UsageError(f"--{what} needs at least one name, got {text!r}")
    return names


def _value(text: str) -> Any:
    """``KEY=VALUE`` values: JSON when it parses (numbers, true, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = _value(value.strip())
    return out


def _positive(name: str, value: int | None, most: int | None = None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{name} must be >= 1, got {value}")
    if value is not None and most is not None and value > most:
        raise UsageError(f"{name} must be at most {most}, got {value}")


def cpu_count() -> int:
    """The CPUs this process may run on (its affinity where the OS says, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_threads(threads: int) -> int:
    """``--threads``: 0 (torch's default) up to the CPUs; more only oversubscribes them
    (and a huge count crashes torch's thread pool)."""
    most = cpu_count()
    if not 0 <= threads <= most:
        raise UsageError(
            f"--threads must be in 0..{most} (0: torch's default; {most}: this machine's "
            f"CPUs), got {threads}"
        )
    return threads


def seconds(text: str) -> float:
    """An ``argparse`` type: a finite number of seconds >= 0 (``--db-timeout``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected failures into ``error: ...`` on stderr and exit status 2.

    Also applies ``--threads`` for the duration of the command (and restores it, so that
    in-process callers keep their own setting).
    """

    def wrapper(args: argparse.Namespace) -> int:
        import torch

        from superlevel.bench.registry import UnknownNameError
        from superlevel.bench.run.checkpointing import CheckpointError
        from superlevel.bench.run.parent import OtherCodeError
        from superlevel.bench.store import StoreError
        from superlevel.data.base import MissingDataError

        threads = getattr(args, "threads", 0) or 0
        before = torch.get_num_threads()
        try:
            if check_threads(threads):
                torch.set_num_threads(threads)
            return func(args)
        except BrokenPipeError:  # the reader went away: the entry point ends quietly
            raise
        except (
            UnknownNameError,
            ConfigError,
            StoreError,
            CheckpointError,
            MissingDataError,
            OtherCodeError,
        ) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # a folder or file that cannot be written, a full disk
            print(f"error: {_os_error_text(exc)}", file=sys.stderr)
            return 2
        finally:
            torch.set_num_threads(before)

    return wrapper


def _add_common(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help=f"results database (default {DEFAULT_DB})")
    p.add_argument(
        "--db-timeout",
        type=seconds,
        default=5.0,
        help="seconds to wait for a locked database (default 5)",
    )
    if device:
        p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
        p.add_argument("--data-dir", default=None, help="data folder (default: $SUPERLEVEL_DATA)")
        p.add_argument(
            "--checkpoint-dir",
            default=None,
            help="per-epoch checkpoints (default: checkpoints/ next to --db)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")
        p.add_argument(
            "--threads",
            type=int,
            default=1,
            help="torch CPU threads, 0 up to the CPUs (default 1: small models on a shared "
            "CPU run fastest and time most steadily on one; 0 keeps torch's default)",
        )


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--executor``, ``--address``, ``--retry-failed`` (run, tune, demo)."""
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs trained at once (default 1 with --executor local, the cluster's CPUs "
        "with ray); locally capped at the CPU cores and the number of runs, beyond which "
        "runs only compete; results do not depend on it",
    )
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: this machine (worker processes when --workers > 1); ray: Ray tasks",
    )
    p.add_argument("--address", default=None, help="Ray address (default: start a local Ray)")
    p.add_argument(
        "--retry-failed", action="store_true", help="run again the runs stored as failed"
    )
    add_other_code_option(p)


def add_other_code_option(p: argparse.ArgumentParser) -> None:
    """``--other-code``: what to do with stored runs made by other code (bench, demo, study)."""
    p.add_argument(
        "--other-code",
        choices=("refuse", "accept", "rerun"),
        default="refuse",
        help="stored runs made by other code than this: refuse (default; nothing runs), "
        "accept them as they are (the report says so) or rerun them",
    )


def add_protocol_options(p: argparse.ArgumentParser, *, trials: int = 9, seeds: int = 5) -> None:
    """The tuning protocol's options (``bench tune``, ``demo``); defaults as given."""
    from superlevel.bench.tune import SEARCHES, Protocol

    d = Protocol()
    p.add_argument(
        "--trials",
        type=int,
        default=trials,
        help=f"search points per optimizer, the same for all, at most "
        f"{MAX_TRIALS} (default {trials})",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=seeds,
        help=f"final seeds 1..N, never used for selection, N at most {MAX_SEEDS} (default {seeds})",
    )
    p.add_argument(
        "--tuning-seed",
        type=int,
        default=d.tuning_seed,
        help=f"the seed of every search run; > --seeds (default {d.tuning_seed})",
    )
    p.add_argument(
        "--search",
        choices=SEARCHES,
        default=d.search,
        help="halton: quasi-random over the whole search space (a grid in one "
        "dimension); lr-grid: the lr alone, others at their defaults (DeepOBS)",
    )
    p.add_argument(
        "--halving",
        type=int,
        default=d.halving,
        help=f"successive-halving factor (1: every trial in full; default {d.halving})",
    )
    p.add_argument(
        "--sampler-seed",
        type=int,
        default=d.sampler_seed,
        help="seed of the scrambled Halton sequence",
    )
    p.add_argument(
        "--max-rounds",
        type=int,
        default=d.max_rounds,
        help=f"at most this many rounds of edge extension (default {d.max_rounds})",
    )


def protocol_from(args: argparse.Namespace) -> Any:
    """The :class:`~superlevel.bench.tune.Protocol` of the parsed options (usage errors
    name the bad value)."""
    from superlevel.bench.tune import Protocol

    for flag, value, most in (("--trials", args.trials, MAX_TRIALS),
                              ("--seeds", args.seeds, MAX_SEEDS)):  # fmt: skip
        if value > most:  # the lower bounds are the protocol's own checks
            raise UsageError(f"{flag} must be at most {most}, got {value}")
    try:
        return Protocol(trials=args.trials, seeds=args.seeds, tuning_seed=args.tuning_seed,
                        search=args.search, halving=args.halving,
                        sampler_seed=args.sampler_seed, max_rounds=args.max_rounds)  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _workers(args: argparse.Namespace, runs: int | None) -> int | None:
    """``--workers``, capped locally at what helps: the cores and ``runs`` (when known).

    More processes than cores only take turns on them (and each holds a copy of its
    task's data); more than runs start idle. The cap is said on stderr.
    """
    _positive("--workers", args.workers)
    if args.executor != "local" or args.workers is None:
        return args.workers
    limits = [(cpu_count(), "the CPU cores")]
    if runs is not None:
        limits.append((max(1, runs), "the runs to train"))
    most, why = min(limits)
    if args.workers > most:
        print(f"note: --workers {args.workers} capped at {most} ({why}; more would only "
              "compete for them)", file=sys.stderr)  # fmt: skip
        return most
    return args.workers


def _executor(args: argparse.Namespace, runs: int | None = None) -> Any:
    from superlevel.bench.executors import make_executor

    workers = _workers(args, runs)
    try:
        return _checked(make_executor, args.executor, workers=workers, address=args.address)
    except ImportError as exc:  # the optional extra is not installed
        raise UsageError(str(exc)) from exc


def _check_device(args: argparse.Namespace) -> None:
    """A bad ``--device`` is an error before any work; where runs train resolves ``auto``.

    Locally the device must exist here; Ray workers have their own (only the name is checked).
    """
    from superlevel.bench.run import check_device_name, resolve_device

    _checked(resolve_device if args.executor == "local" else check_device_name, args.device)


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bench`` and its sub-commands on the top-level parser."""
    bench = subparsers.add_parser("bench", help="benchmark optimizers on the task ladder")
    sub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("list", help="tasks, optimizers and suites, one per line")
    p.set_defaults(func=_guarded(cmd_list))

    p = sub.add_parser("run", help="run tasks x optimizers x seeds with default hyperparameters")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--task", help="task name (see `bench list`)")
    what.add_argument("--suite", help="suite name: quick | full")
    p.add_argument("--optimizers", help="comma-separated names (default: the quick suite's)")
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"seeds 1..N, N at most {MAX_SEEDS} (default 1, suite: its own)",
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the budget's)")
    p.add_argument("--budget", default=None, help="quick | full (default quick, suite: its own)")
    p.add_argument(
        "--hp",
        action="append",
        metavar="[OPT:]KEY=VALUE",
        help="hyperparameter override: lr=0.05 for every optimizer, superlevel:lr=1 for one "
        "(repeatable)",
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="task option, e.g. subset=2000 or label_noise=0.2 (repeatable)",
    )
    _add_common(p)
    add_executor_options(p)
    p.set_defaults(func=_guarded(cmd_run))

    p = sub.add_parser(
        "tune",
        help="the tuning protocol: equal trials per optimizer, each in full, edge "
        "extension, selection on validation on a tuning seed, finals on fresh seeds",
    )
    p.add_argument("--task", required=True, help="task name")
    p.add_argument("--optimizers", required=True, help="comma-separated optimizer names")
    add_protocol_options(p)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--budget", default="quick")
    p.add_argument("--option", action="append", metavar="KEY=VALUE", help="task option")
    _add_common(p)
    add_executor_options(p)
    p.set_defaults(func=_guarded(cmd_tune))

    p = sub.add_parser("results", help="print one row per run")
    p.add_argument("--format", choices=("csv", "table"), default="table")
    p.add_argument("--task", default=None, help="only this task")
    _add_common(p, device=False)
    p.set_defaults(func=_guarded(cmd_results))

    p = sub.add_parser("report", help="write report.md, report.html and figures")
    p.add_argument("--out", default="results/report", help="output folder")
    _add_common(p, device=False)
    p.set_defaults(func=_guarded(cmd_report))


# ------------------------------------------------------------------ commands


def cmd_list(args: argparse.Namespace) -> int:
    """Print tasks, optimizers and suites, one per line."""
    from superlevel.bench.optimizers import OPTIMIZERS
    from superlevel.bench.suites import SUITES
    from superlevel.bench.tasks import TASKS

    for name, spec in TASKS.items():
        data = f" [needs {spec.needs_data} data]" if spec.needs_data else ""
        print(f"task       {name:<20} {spec.description}{data}")
    for name, opt in OPTIMIZERS.items():
        print(f"optimizer  {name:<20} {opt.description}")
    for name, suite in SUITES.items():
        print(f"suite      {name:<20} {suite.description}")
    return 0


def _open_store(args: argparse.Namespace, *, readonly: bool = False) -> Any:
    from superlevel.bench.store import Store

    return Store(args.db, timeout=args.db_timeout, readonly=readonly)


def _printer(args: argparse.Namespace) -> Callable[[str], None]:
    from superlevel.bench.run import console_log

    return console_log(getattr(args, "quiet", False))


def cmd_run(args: argparse.Namespace) -> int:
    """``bench run``: default hyperparameters, every task x optimizer x seed."""
    from superlevel.bench.optimizers import get_optimizer
    from superlevel.bench.run import make_config, outcome_counts, require_data, run_many
    from superlevel.bench.suites import SUITES, get_suite
    from superlevel.bench.tasks import get_task

    _positive("--seeds", args.seeds, MAX_SEEDS)
    _positive("--epochs", args.epochs)
    hp = _pairs(args.hp, "--hp")
    # "OPT:KEY=VALUE" applies to one optimizer, "KEY=VALUE" to all of them.
    per_opt: dict[str, dict[str, Any]] = {}
    for key in list(hp):
        if ":" in key:
            opt, _, name = key.partition(":")
            per_opt.setdefault(opt, {})[name] = hp.pop(key)
    options = _pairs(args.option, "--option")
    if args.suite:
        suite = get_suite(args.suite)
        tasks = list(suite.tasks)
        optimizers = (
            _names(args.optimizers, "optimizers")
            if args.optimizers is not None
            else list(suite.optimizers)
        )
        seeds = args.seeds or suite.seeds
        budget = args.budget or suite.budget
    else:
        get_task(args.task)
        tasks = [args.task]
        given = args.optimizers  # "" is a mistake, not "the default"
        optimizers = _names(",".join(SUITES["quick"].optimizers) if given is None else given,
                            "optimizers")  # fmt: skip
        seeds = args.seeds or 1
        budget = args.budget or "quick"
    for name in optimizers:
        get_optimizer(name)
    for name in per_opt:
        if name not in optimizers:
            raise UsageError(f"--hp names optimizer {name!r}, which is not in --optimizers")
    _check_device(args)  # fail on a bad device before any work
    if args.executor == "local" and not args.suite:
        require_data(args.task, args.data_dir, options)  # before the store: nothing created
    configs = [
        _checked(
            make_config,
            t,
            o,
            s,
            budget=budget,
            epochs=args.epochs,
            hparams={**hp, **per_opt.get(o, {})},
            task_options=options,
        )
        for t in tasks
        for o in optimizers
        for s in range(1, seeds + 1)
    ]
    log = _printer(args)
    start = time.perf_counter()
    # The executor first: a Ray address that cannot be reached leaves no database behind.
    with _executor(args, len({c.run_id for c in configs})) as executor, _open_store(args) as store:
        outcomes = run_many(
            configs,
            store,
            executor=executor,
            device=args.device,
            data_dir=args.data_dir,
            checkpoint_dir=args.checkpoint_dir,
            progress=not args.quiet,
            log=log,
            skip_missing_data=bool(args.suite),
            retry_failed=args.retry_failed,
            other_code=args.other_code,
        )
    seconds = time.perf_counter() - start
    earlier = sum(o.status == "failed" and o.previous for o in outcomes)
    again = (
        f"; {earlier} failed in an earlier call and were not run again (fixed data or "
        "code? --retry-failed reruns them)"
        if earlier
        else ""
    )
    print(f"{outcome_counts(outcomes)} in {seconds:.1f}s -> {args.db}{again}")
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def cmd_tune(args: argparse.Namespace) -> int:
    """``bench tune``: the tuning protocol on one task, then its finals."""
    from superlevel.bench.run import make_config, require_data
    from superlevel.bench.tune import TuneError, tune

    protocol = protocol_from(args)
    _positive("--epochs", args.epochs)
    optimizers = _names(args.optimizers, "optimizers")
    options = _pairs(args.option, "--option")
    _check_device(args)
    for name in optimizers:  # names, budget, epochs and options, before any work
        _checked(
            make_config, args.task, name, 1, budget=args.budget, epochs=args.epochs,
            task_options=options,
        )  # fmt: skip
    if args.executor == "local":
        require_data(args.task, args.data_dir, options)  # before the store: nothing created
    with _executor(args) as executor, _open_store(args) as store:
        try:
            results = tune(
                args.task, optimizers, protocol, store, budget=args.budget, epochs=args.epochs,
                task_options=options, executor=executor, retry_failed=args.retry_failed,
                other_code=args.other_code, device=args.device, data_dir=args.data_dir,
                checkpoint_dir=args.checkpoint_dir, progress=not args.quiet, log=_printer(args),
            )  # fmt: skip
        except TuneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        rows = {name: [store.get_run(rid) for rid in res.finals] for name, res in results.items()}
    for name, res in results.items():
        from superlevel.bench.tune import final_score

        scores = [final_score(r) for r in rows[name]]
        diverged = sum(r["status"] == "diverged" for r in rows[name])
        mean = sum(scores) / len(scores) if all(v is not None for v in scores) else None
        val = "every trial diverged" if res.best_val is None else f"val {res.best_val:.4g}"
        edges = f"; STILL ON AN EDGE: {res.edges}" if res.edges else ""
        print(
            f"{name}: selected {json.dumps(res.best_hparams, sort_keys=True)} ({val}; "
            f"{len(res.extensions)} range extension(s){edges}); finals on seeds "
            f"1-{protocol.seeds}: test mean {'-' if mean is None else f'{mean:.4g}'}"
            f"{f', {diverged} diverged (scored as untrained)' if diverged else ''}"
        )
    print(f"report: superlevel bench report --db {args.db}")
    return 0


RESULT_COLUMNS = (
    "task",
    "optimizer",
    "seed",
    "status",
    "test_metric",
    "test_loss",
    "val_metric",
    "steps",
    "wall_s",
    "budget",
    "epochs",
    "metric_name",
    "steps_to_target",
    "tags",
    "run_id",
    "hparams",
)


def _cell(run: dict[str, Any], col: str) -> str:
    v = run.get(col)
    if col == "tags":
        return ";".join(v)
    if col == "hparams":
        return json.dumps(v, sort_keys=True)
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def cmd_results(args: argparse.Namespace) -> int:
    """``bench results``: one row per run, CSV or an aligned table."""
    with _open_store(args, readonly=True) as store:
        runs = store.runs(task=args.task)
    if args.task is not None and not runs:
        from superlevel.bench.tasks import get_task

        get_task(args.task)  # an unknown name is an error; a known one may have no runs yet
    rows = [[_cell(r, c) for c in RESULT_COLUMNS] for r in runs]
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(RESULT_COLUMNS)
        writer.writerows(rows)
        return 0
    cols = RESULT_COLUMNS[:-2]  # the table leaves out run_id and hparams
    rows = [r[: len(cols)] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    print(f"({len(rows)} runs)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``bench report``: Markdown + self-contained HTML + PNG figures."""
    from superlevel.bench.report import write_report

    with _open_store(args, readonly=True) as store:
        rep = write_report(store, args.out)
    print(f"report: {rep.markdown} and {rep.html} ({len(rep.figures)} figures)")
    return 0
