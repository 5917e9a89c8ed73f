"""Console text of the parent side: per-run lines, overall progress with an ETA, counts.

Nothing here decides anything about a run; the parent calls it to say what happened.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from superlevel.bench.run.parent import RunOutcome

WARNING = "warning: "  # the prefix of log lines that must be shown even when quiet

Log = Callable[[str], None]


def minutes(seconds: float) -> str:
    """``"12 s"`` below a minute, else ``"3.4 min"``."""
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class Progress:
    """Overall progress over runs: a tqdm bar with ETA in a terminal, else plain lines.

    Not in a terminal (a pipe, a log file), a line ``progress: k/n runs, elapsed, ETA``
    goes to ``log`` at most every ``interval`` seconds: no ``\\r`` frames in logs.
    """

    def __init__(self, total: int, enabled: bool, log: Log | None, interval: float = 30.0):
        self.total, self.done, self.log, self.interval = total, 0, log, interval
        self.start = self.last = time.perf_counter()
        self.enabled = enabled and total > 0
        self.bar = None
        if self.enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="run", desc="runs", file=sys.stderr, position=0)

    def say(self, msg: str) -> None:
        if self.log is None:
            return
        if self.bar is None:
            self.log(msg)
            return
        with self.bar.external_write_mode():
            self.log(msg)

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.perf_counter()
        if self.enabled and self.done < self.total and now - self.last >= self.interval:
            self.last = now
            elapsed = now - self.start
            eta = elapsed / self.done * (self.total - self.done)
            self.say(
                f"progress: {self.done}/{self.total} runs, {minutes(elapsed)} elapsed, "
                f"ETA {minutes(eta)}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def describe(i: int, n: int, out: RunOutcome) -> str:
    """One line for run ``i`` of ``n``: what happened to it."""
    head = f"[{i}/{n}] {out.config.label()} ({out.config.run_id})"
    s = out.summary
    if out.status == "skipped":
        return f"{head}: already done, skipped"
    if out.status == "failed":
        if out.previous:
            return f"{head}: failed earlier ({out.error}), skipped; --retry-failed reruns it"
        return f"{head}: FAILED: {out.error}"
    if out.status == "diverged":
        return f"{head}: DIVERGED after {s['steps']} steps"
    if out.status == "paused":
        return (
            f"{head}: paused after epoch {s['epochs_done']}: val {s['metric_name']}="
            f"{_number(s.get('val_metric'))} in {s['wall_s']:.1f}s"
        )
    return (
        f"{head}: test {s['metric_name']}={_number(s.get('test_metric'))} "
        f"loss={_number(s.get('test_loss'))} in {s['wall_s']:.1f}s"
    )


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def outcome_counts(outcomes: Sequence[RunOutcome]) -> str:
    """``"N runs (a finished, b skipped, ...)"``: what a call of ``run_many`` did."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    return f"{len(outcomes)} runs ({summary})"


def console_log(quiet: bool) -> Log:
    """The command line's ``log``: lines to stdout, warnings to stderr (even when quiet)."""

    def log(msg: str) -> None:
        if msg.startswith(WARNING):
            print(msg, file=sys.stderr, flush=True)
        elif not quiet:
            print(msg, flush=True)

    return log
