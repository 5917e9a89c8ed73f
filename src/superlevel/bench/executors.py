"""Executors: where runs train. In this process, in a local worker pool, or on Ray.

Every executor takes :class:`~superlevel.bench.run.worker.RunJob` s and yields
``(index, RunResult)`` pairs as runs complete; none of them touches the results store.
The caller (:func:`~superlevel.bench.run.parent.run_many`) is the only writer: it stores each
result as it arrives. A run's numbers depend on its configuration alone (it is seeded by
it, and its worker uses the caller's torch thread count), so every executor gives the
same results, run for run.

Kill safety comes from the checkpoints, not from the executor: a run whose worker dies is
started again and resumes from its last epoch; a run whose parent dies is finished by the
next call (the worker notices its parent is gone and exits).

- :class:`InProcessExecutor`: one run at a time, in this process (the default).
- :class:`LocalPoolExecutor`: ``workers`` processes on this machine. A small pool of our
  own over :mod:`multiprocessing` rather than :class:`concurrent.futures.ProcessPoolExecutor`:
  that one cannot say *which* job a dead worker was running (it breaks the whole pool)
  nor stop its workers on an interrupt; here each worker has its own pipe, a dead
  worker's job is retried (up to ``max_attempts``) and the others carry on.
- :class:`RayExecutor`: Ray tasks on a local Ray or a cluster (``ray`` is imported only
  here). Ray retries a task whose worker died (``max_retries``); a GPU run asks for one GPU.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import socket
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from superlevel.bench.run.worker import FAILED, RunJob, RunResult, execute_job

EXECUTORS = ("local", "ray")
MAX_DEFAULT_WORKERS = 8  # each worker holds its own copy of a task's data set


def default_workers() -> int:
    """The CPU cores this process may use (at most :data:`MAX_DEFAULT_WORKERS`)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_WORKERS))


class Executor:
    """Where runs train. Use as a context manager; :meth:`map` may be called many times.

    Attributes:
        workers: how many runs train at once.
        in_process: runs train in this process (a per-step bar can be shown).
        remote: runs may train on other machines (their device and data are theirs).
    """

    workers: int = 1
    in_process: bool = False
    remote: bool = False

    def map(self, jobs: Sequence[RunJob]) -> Iterator[tuple[int, RunResult]]:
        """Train ``jobs``; yield ``(index into jobs, result)`` as each run completes."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers (a run in flight resumes from its checkpoint next time)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """One run at a time, in this process."""

    in_process = True

    def map(self, jobs: Sequence[RunJob]) -> Iterator[tuple[int, RunResult]]:
        for i, job in enumerate(jobs):
            yield i, execute_job(job)


def _died(job: RunJob, attempts: int, why: str) -> RunResult:
    error = f"{why} {attempts} times while training this run"
    return RunResult(job.config.run_id, FAILED, info={"error": error}, error=error)


# ------------------------------------------------------------------ local worker pool


def _watch_parent(alive: Connection) -> None:
    """Exit when the parent is gone (``kill -9``): no orphan keeps training a run.

    The parent holds the only write end of ``alive`` and never writes: end of file on it
    means the parent has died (or stopped this worker).
    """
    with contextlib.suppress(EOFError, OSError):
        alive.recv()
    os._exit(1)


def _worker_main(conn: Connection, alive: Connection) -> None:
    """A pool worker: receive a job, train it, send the result; ``None`` or EOF ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    threading.Thread(target=_watch_parent, args=(alive,), daemon=True).start()
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(execute_job(job))


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        alive, self._alive = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_worker_main, args=(child, alive), daemon=True)
        self.proc.start()
        child.close()
        alive.close()

    def stop(self) -> None:
        self._alive.close()  # the worker's watchdog sees end of file and exits
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(timeout=5)
        self.conn.close()


# What every run imports: the runner, the task registry, the loop, scipy and mnist1d.
_PRELOAD = ["superlevel.bench.run.worker", "superlevel.bench.tasks", "superlevel.bench.run.loop",
            "superlevel.data.generated", "mnist1d.data", "scipy.stats"]  # fmt: skip


def _context(start_method: str | None) -> Any:
    """``forkserver`` with the runner preloaded where there is one, else ``spawn``.

    Both start workers from a clean interpreter (``fork`` would copy this process's torch
    thread pools and open databases); the fork server imports torch, the runner and the
    data generators once and forks every worker from there, instead of each worker
    importing them again (seconds of CPU each). A module that is not installed is skipped.
    """
    if start_method is None:
        start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class LocalPoolExecutor(Executor):
    """``workers`` worker processes on this machine (started on first use, then reused).

    Args:
        workers: number of processes (>= 1).
        max_attempts: a run whose worker process dies is started again, at most this many
            times in all; then it is reported ``failed``.
        start_method: ``multiprocessing`` start method (default: ``forkserver`` where
            available, else ``spawn``; not ``fork``: a forked worker would hold its
            siblings' parent-liveness pipes open).
    """

    def __init__(
        self, workers: int, *, max_attempts: int = 3, start_method: str | None = None
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.workers = workers
        self.max_attempts = max_attempts
        self._ctx = _context(start_method)
        self._idle: list[_Worker] = []
        self._busy: dict[_Worker, RunJob] = {}

    def running(self) -> dict[str, int]:
        """``{run_id: worker pid}`` of the runs training now (for diagnostics and tests)."""
        return {job.config.run_id: w.proc.pid or 0 for w, job in list(self._busy.items())}

    def map(self, jobs: Sequence[RunJob]) -> Iterator[tuple[int, RunResult]]:
        pending = deque(range(len(jobs)))
        attempts = [0] * len(jobs)
        busy: dict[_Worker, int] = {}
        try:
            while pending or busy:
                while pending and len(busy) < self.workers:
                    w = self._idle.pop() if self._idle else _Worker(self._ctx)
                    j = pending.popleft()
                    try:
                        w.conn.send(jobs[j])
                    except OSError:  # it died while idle: the job never started
                        w.stop()
                        pending.appendleft(j)
                        continue
                    attempts[j] += 1
                    busy[w] = j
                    self._busy[w] = jobs[j]
                ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy]))
                for w in [w for w in busy if w.conn in ready or w.proc.sentinel in ready]:
                    j = busy.pop(w)
                    del self._busy[w]
                    try:
                        result = w.conn.recv() if w.conn.poll() else None
                    except (EOFError, OSError):
                        result = None
                    if result is not None:
                        self._idle.append(w)
                        yield j, result
                        continue
                    w.stop()  # it died mid-run: its checkpoint lets the next attempt resume
                    if attempts[j] < self.max_attempts:
                        pending.appendleft(j)
                    else:
                        yield j, _died(jobs[j], attempts[j], "the worker process died")
        finally:
            for w in busy:  # abandoned (an error or interrupt in the caller): stop them
                w.stop()
            self._busy.clear()

    def close(self) -> None:
        for w in self._idle:
            with contextlib.suppress(OSError):
                w.conn.send(None)
            w.proc.join(timeout=5)
            w.stop()
        self._idle.clear()


# ------------------------------------------------------------------ Ray


RAY_CONNECT_TIMEOUT = 10.0  # seconds to reach a Ray address before giving up


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; ``None`` for other forms
    (``auto``, ``local``: Ray finds those itself)."""
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Check that something listens at a Ray ``address`` (a TCP connect, ``timeout`` s).

    ``ray.init`` itself cannot be bounded: at an address nobody answers it retries for
    many minutes, printing warnings. The probe turns that into one error in seconds.

    Raises:
        ValueError: nothing accepted a connection at ``address`` within ``timeout`` s.
    """
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as exc:
        cause = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ValueError(
            f"cannot reach Ray at --address {address!r}: {cause} (tried for up to "
            f"{timeout:g} s); start the cluster (`ray start --head`) or check the address"
        ) from None


def _ray_execute(job: RunJob) -> RunResult:
    return execute_job(job)


class RayExecutor(Executor):
    """Runs as Ray tasks: on a local Ray (``address=None``) or a cluster.

    Uses the Ray this process already initialised, else ``ray.init(address=address)``
    (and shuts it down on :meth:`close`). Each run asks for ``num_cpus`` CPUs and, when its
    device is ``cuda`` (or ``auto`` on a cluster with GPUs), one GPU. Checkpoints must be on
    a path every node and this process share.

    Args:
        address: Ray address (``auto``, ``ray://host:10001``, ``host:6379``); ``None``
            starts a local Ray unless one is initialised.
        workers: runs in flight at once (default: the cluster's CPUs / ``num_cpus``).
        num_cpus: CPUs reserved per run.
        max_retries: how often Ray starts a task again whose worker process died.
        connect_timeout: seconds to reach ``address`` (``host:port``, ``ray://...``)
            before :class:`ValueError` (:func:`probe_address`).
    """

    remote = True

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        num_cpus: float = 1,
        max_retries: int = 3,
        connect_timeout: float = RAY_CONNECT_TIMEOUT,
    ) -> None:
        try:
            import ray
        except ImportError as exc:  # an optional extra
            raise ImportError("--executor ray needs Ray: pip install 'superlevel[ray]'") from exc
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            if address is not None:
                probe_address(address, connect_timeout)
            ray.init(address=address, log_to_driver=False)
        resources = ray.cluster_resources()
        self._gpus = resources.get("GPU", 0) > 0
        self.workers = workers or max(1, int(resources.get("CPU", 1) // num_cpus))
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self._task = ray.remote(_ray_execute)

    def _options(self, job: RunJob) -> dict[str, Any]:
        gpu = job.device.startswith("cuda") or (job.device == "auto" and self._gpus)
        return {
            "num_cpus": self.num_cpus,
            "num_gpus": 1 if gpu else 0,
            "max_retries": self.max_retries,
            "retry_exceptions": False,  # a run that raises is a failed run, not a retry
        }

    def map(self, jobs: Sequence[RunJob]) -> Iterator[tuple[int, RunResult]]:
        ray = self._ray
        pending = deque(range(len(jobs)))
        refs: dict[Any, int] = {}
        try:
            while pending or refs:
                while pending and len(refs) < self.workers:
                    j = pending.popleft()
                    refs[self._task.options(**self._options(jobs[j])).remote(jobs[j])] = j
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    j = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # retries used up, node lost
                        why = f"the Ray worker died ({type(exc).__name__})"
                        result = _died(jobs[j], self.max_retries + 1, why)
                    yield j, result
        finally:
            for ref in refs:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(
    kind: str = "local", *, workers: int | None = None, address: str | None = None
) -> Executor:
    """The executor for ``--executor KIND --workers N --address ADDR``.

    ``local`` with one worker trains in this process; with more, in a worker pool.
    ``ray`` uses Ray at ``address`` (``workers``: runs in flight, default the cluster's CPUs).

    Raises:
        ValueError: unknown kind, ``workers < 1``, or an address for ``local``.
    """
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if kind == "local":
        if address is not None:
            raise ValueError(f"--address {address!r} needs --executor ray")
        n = workers or 1
        return InProcessExecutor() if n == 1 else LocalPoolExecutor(n)
    if kind == "ray":
        return RayExecutor(address, workers=workers)
    raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
