"""The runner: trains (task, optimizer, hyperparameters, seed) runs and hands them to the store.

A run is identified by :attr:`RunConfig.run_id`, a hash of exactly what determines its
result: task, task options, budget, epochs, optimizer, hyperparameters and seed.

Two halves, so that runs can train anywhere while one process writes the store:

- :func:`execute_job` (the *worker* side) trains one :class:`RunJob` and returns a
  :class:`RunResult`; it never touches the store. It checkpoints at every epoch end
  (write to a temporary file, then rename, so a checkpoint is either the old one or the
  new one, never half), and an interrupted run, even by ``kill -9``, resumes from its
  last completed epoch. A checkpoint it cannot use (unreadable, another format, not this
  run's, inconsistent with the configuration) is set aside with a warning and the run
  restarts; temporary files left by a killed writer are removed.
- :func:`run_many` (the *parent* side) skips runs already ``finished`` or ``diverged``
  (and ``failed`` ones unless ``retry_failed``), hands the rest to an executor (this
  process, a local worker pool or Ray: :mod:`superlevel.bench.executors`) and writes each
  result as it arrives: a finished run and all its metrics in one transaction. The final
  checkpoint is written *before* that commit and removed after it, so a failed commit or
  a killed parent loses nothing: the rerun commits without retraining. A run that raises
  is stored as ``failed`` with its error.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from superlevel.bench.checkpoint import CheckpointError, remove_orphans, save_atomic
from superlevel.bench.checkpoint import load as load_checkpoint
from superlevel.bench.optimizers import Stepper, get_optimizer
from superlevel.bench.store import DONE, FAILED, Store
from superlevel.bench.task import TaskInstance

if TYPE_CHECKING:
    from superlevel.bench.executors import Executor

CHECKPOINT_VERSION = 2
CHECKPOINT_ERROR = "checkpoint_error"  # a worker could not write a checkpoint
WARNING = "warning: "  # the prefix of log lines that must be shown even when quiet

Log = Callable[[str], None]


@dataclass(frozen=True)
class RunConfig:
    """The identity of one run (all fields resolved: no defaults left implicit).

    Attributes:
        task: task name in the registry.
        optimizer: optimizer name in the registry.
        seed: seed (>= 1) for model init, data order and noise.
        budget: the task budget name (``quick`` or ``full``).
        epochs: epochs to train.
        hparams: the optimizer's complete hyperparameters (defaults merged in).
        task_options: options passed to the task builder.
    """

    task: str
    optimizer: str
    seed: int
    budget: str
    epochs: int
    hparams: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        """``sha256`` of the canonical JSON of all fields, first 16 hex digits."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Short human label, e.g. ``digits_mlp/adam/s1``."""
        return f"{self.task}/{self.optimizer}/s{self.seed}"


def check_positive(name: str, value: int) -> int:
    """``value`` if it is an integer >= 1, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def make_config(
    task: str,
    optimizer: str,
    seed: int,
    *,
    budget: str = "quick",
    epochs: int | None = None,
    hparams: Mapping[str, Any] | None = None,
    task_options: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Validate names and numbers and resolve defaults into a :class:`RunConfig`.

    Raises:
        UnknownNameError: unknown task or optimizer.
        ValueError: seed or epochs < 1, unknown budget, option or hyperparameter.
    """
    from superlevel.bench.tasks import get_task

    spec = get_task(task)
    opt = get_optimizer(optimizer)
    check_positive("seed", seed)
    if budget not in spec.budgets:
        raise ValueError(
            f"task {task!r} has no budget {budget!r}; valid: {', '.join(sorted(spec.budgets))}"
        )
    epochs = spec.budgets[budget].epochs if epochs is None else check_positive("epochs", epochs)
    options = dict(task_options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(
            f"task {task!r} has no option {unknown[0]!r}; valid: {', '.join(sorted(spec.options))}"
        )
    return RunConfig(
        task=task,
        optimizer=optimizer,
        seed=seed,
        budget=budget,
        epochs=epochs,
        hparams=opt.resolve(hparams),
        task_options=options,
    )


def check_device_name(device: str) -> str:
    """``device`` if it is ``auto``, ``cpu`` or ``cuda[:N]``, else ``ValueError`` naming it."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; otherwise ``torch.device(device)``."""
    if check_device_name(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def missing_data(task: str, data_dir: str | Path | None) -> str | None:
    """Where the data folder of ``task`` was looked for, when it is absent; else ``None``."""
    from superlevel.bench.tasks import get_task
    from superlevel.data.base import resolve_data_dir

    needs = get_task(task).needs_data
    if needs is None:
        return None
    folder = resolve_data_dir(data_dir) / needs
    return None if folder.is_dir() else f"no folder {folder}"


def require_data(task: str, data_dir: str | Path | None) -> None:
    """Raise ``MissingDataError`` when the data folder of ``task`` is absent.

    A cheap check before anything is created (a database, a checkpoint folder); the
    loaders still check every file when the task is built.
    """
    from superlevel.data.base import MissingDataError

    where = missing_data(task, data_dir)
    if where is not None:
        raise MissingDataError(
            f"task {task!r} needs its data set: {where} (set --data-dir or $SUPERLEVEL_DATA; "
            "`superlevel data download` fetches it)"
        )


@lru_cache(maxsize=1)
def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """What a number depends on besides its config: software versions and hardware."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "device": device.type,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_revision": _git_revision(),
    }


@torch.no_grad()
def evaluate(task: TaskInstance, split: str) -> tuple[float, float]:
    """Mean loss and mean metric of the model on ``split``.

    ``loss = sum_b loss_b * n_b / sum_b n_b`` and ``metric = sum_b metric_sum_b / sum_b n_b``
    with ``n_b`` the number of targets in batch ``b`` (exact means, whatever the batching).
    A task with its own ``evaluate`` hook (RL: episodes, not batches) is asked instead.
    """
    if task.evaluate is not None:
        return task.evaluate(split)
    model = task.model
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=task.device, dtype=torch.float64)
    metric_sum = torch.zeros((), device=task.device, dtype=torch.float64)
    n = 0
    for x, y in task.eval_batches(split):
        out = model(x)
        b = _count(y)
        loss_sum += task.loss_fn(out, y).double() * b
        metric_sum += task.metric_fn(out, y).double()
        n += b
    model.train(was_training)
    if n == 0:
        raise ValueError(f"task {task.name!r} has an empty {split!r} split")
    return float(loss_sum) / n, float(metric_sum) / n


def _count(y: torch.Tensor) -> int:
    # Tasks sum their metric over examples (rows); losses are means over the batch's rows.
    return int(y.shape[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reached(value: float, target: float | None, higher: bool) -> bool:
    if target is None or not math.isfinite(value):
        return False
    return value >= target if higher else value <= target


# ------------------------------------------------------------------ run state and checkpoints


@dataclass
class RunState:
    """Where a run stands: everything a checkpoint needs besides model, optimizer and RNG.

    Attributes:
        epoch: completed epochs.
        step: optimizer steps taken.
        train_s: seconds inside the training loop (evaluation excluded).
        wall_s: seconds since the run started (across resumes).
        epochs: per-epoch records (epoch, step, split, loss, metric, wall_s), epoch 0 first.
        steps: per-step log records (step, loss, grad_norm, lr, effective_lr).
        steps_to_target: first step whose epoch-end validation metric reached the target.
        window_sum: training-loss sum since the last log point (it spans epoch ends).
        window_n: steps in that sum.
        log_every: steps between log points.
        done: ``None`` while training, then ``finished`` or ``diverged``.
    """

    epoch: int = 0
    step: int = 0
    train_s: float = 0.0
    wall_s: float = 0.0
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    steps_to_target: int | None = None
    window_sum: float = 0.0
    window_n: int = 0
    log_every: int = 1
    done: str | None = None


def checkpoint_path(checkpoint_dir: str | Path, run_id: str) -> Path:
    """The checkpoint file of ``run_id`` in ``checkpoint_dir``."""
    return Path(checkpoint_dir) / f"{run_id}.pt"


def _checkpoint(state: RunState, run_id: str, model: torch.nn.Module, stepper: Stepper,
                dev: torch.device) -> dict[str, Any]:  # fmt: skip
    return {
        "version": CHECKPOINT_VERSION,
        "run_id": run_id,
        "state": asdict(state),
        "model": model.state_dict(),
        "stepper": stepper.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
    }


def _mismatch(ckpt: Any, config: RunConfig, steps_per_epoch: int, log_every: int) -> str | None:
    """Why checkpoint ``ckpt`` cannot be this run's, or ``None`` when it is consistent.

    Consistent means: this format, this ``run_id``, ``0 <= epoch <= epochs`` (``epochs``
    when finished), ``step <= steps_per_epoch * (epoch + diverged)``, this ``log_every``
    and one record per split for epochs ``0..epoch``.
    """
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        found = ckpt.get("version") if isinstance(ckpt, dict) else type(ckpt).__name__
        return f"format {found!r}, expected {CHECKPOINT_VERSION}"
    if ckpt.get("run_id") != config.run_id:
        return f"it belongs to run {ckpt.get('run_id')!r}"
    try:
        s = RunState(**ckpt["state"])
    except TypeError as exc:
        return f"its state has other fields ({exc})"
    if s.done not in (None, *DONE):
        return f"its status is {s.done!r}"
    if not 0 <= s.epoch <= config.epochs or (s.done == "finished" and s.epoch != config.epochs):
        return f"it claims epoch {s.epoch} ({s.done or 'running'}) of a {config.epochs}-epoch run"
    max_steps = steps_per_epoch * min(config.epochs, s.epoch + (s.done == "diverged"))
    if not 0 <= s.step <= max_steps:
        return f"it claims {s.step} steps after epoch {s.epoch}; at most {max_steps} fit"
    if s.log_every != log_every:
        return f"it logs every {s.log_every} steps, this run every {log_every}"
    if len(s.epochs) != 3 * (s.epoch + 1):
        return f"it has {len(s.epochs)} epoch records for epoch {s.epoch}"
    return None


def _set_aside(path: Path, reason: str) -> str:
    """Move an unusable checkpoint out of the way; the warning that says so."""
    aside = path.with_name(f"{path.name}.unusable-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        os.replace(path, aside)
    except OSError as exc:
        raise CheckpointError(
            f"checkpoint {path} is unusable ({reason}) and cannot be moved aside: "
            f"{exc.strerror or exc}",
            path,
        ) from exc
    return f"checkpoint {path} is unusable ({reason}); moved it to {aside.name}, run restarted"


# ------------------------------------------------------------------ the worker side


@dataclass(frozen=True)
class RunJob:
    """One run to train, with everything a worker (maybe on another machine) needs.

    Attributes:
        config: the run.
        device: ``auto``, ``cpu`` or ``cuda[:N]``, resolved by the worker.
        data_dir: data folder (``None``: the worker's ``$SUPERLEVEL_DATA``).
        checkpoint_dir: where the run's checkpoints live (a shared path for a cluster).
        log_points: about how many per-step records to keep.
        threads: torch CPU threads in the worker (0: leave torch's setting).
        progress: show a per-step bar (only meaningful in a terminal, in this process).
    """

    config: RunConfig
    device: str
    data_dir: str | None
    checkpoint_dir: str
    log_points: int = 100
    threads: int = 0
    progress: bool = False


@dataclass
class RunResult:
    """What a worker hands back: a trained run, or why there is none.

    ``status`` is ``finished``, ``diverged``, ``failed`` (``error`` says why, ``info`` has
    the traceback), ``missing_data`` (``error`` names the data) or ``checkpoint_error``
    (a checkpoint could not be written: the folder is at fault, the caller stops).
    """

    run_id: str
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


def execute_job(job: RunJob) -> RunResult:
    """Train ``job`` (resuming from its checkpoint) and return the result; never raises.

    Any exception becomes a ``failed`` result with the error and its traceback, absent
    data a ``missing_data`` one, a checkpoint that cannot be written a
    ``checkpoint_error`` one. Interrupts (``KeyboardInterrupt``) propagate.
    """
    from superlevel.data.base import MissingDataError

    if job.threads:
        torch.set_num_threads(job.threads)
    env: dict[str, Any] = {}
    try:
        dev = resolve_device(job.device)
        env = environment(dev)
        return _train_job(job, dev, env)
    except MissingDataError as exc:
        return RunResult(job.config.run_id, "missing_data", environment=env, error=str(exc))
    except CheckpointError as exc:  # the folder's fault, not the run's: stop the command
        return RunResult(
            job.config.run_id, CHECKPOINT_ERROR, info={"path": str(exc.path)}, error=str(exc)
        )
    except Exception as exc:
        return RunResult(
            job.config.run_id,
            FAILED,
            info={"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
            environment=env,
            error=f"{type(exc).__name__}: {exc}",
        )


def _build(
    config: RunConfig, dev: torch.device, data_dir: str | None
) -> tuple[TaskInstance, Stepper]:
    from superlevel.bench.tasks import build_task

    torch.manual_seed(config.seed)
    task = build_task(
        config.task,
        seed=config.seed,
        device=str(dev),
        budget=config.budget,
        data_dir=data_dir,
        **config.task_options,
    )
    stepper = get_optimizer(config.optimizer).build(
        task.model.parameters(),
        config.hparams,
        steps_per_epoch=task.steps_per_epoch,
        epochs=config.epochs,
        buffers=task.model.buffers(),
    )
    return task, stepper


def _resume(path: Path, config: RunConfig, task: TaskInstance, stepper: Stepper,
            dev: torch.device, log_every: int) -> RunState:  # fmt: skip
    """Load ``path`` into ``task.model``, ``stepper`` and the RNG; raises when unusable."""
    ckpt = load_checkpoint(path, map_location=dev)
    reason = _mismatch(ckpt, config, task.steps_per_epoch, log_every)
    if reason is not None:
        raise ValueError(reason)
    task.model.load_state_dict(ckpt["model"])
    stepper.load_state_dict(ckpt["stepper"])
    torch.set_rng_state(ckpt["rng"].cpu())
    if dev.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), dev)
    return RunState(**ckpt["state"])


def _train_job(job: RunJob, dev: torch.device, env: dict[str, Any]) -> RunResult:
    config = job.config
    path = checkpoint_path(job.checkpoint_dir, config.run_id)
    notes = [f"removed orphan temporary file {p.name}" for p in remove_orphans(path)]
    task, stepper = _build(config, dev, job.data_dir)
    total = config.epochs * task.steps_per_epoch
    log_every = max(1, math.ceil(total / max(1, job.log_points)))
    state = RunState(log_every=log_every)
    if path.exists():
        try:
            state = _resume(path, config, task, stepper, dev, log_every)
        except Exception as exc:  # unreadable, foreign or inconsistent: never trust half of it
            notes.append(_set_aside(path, f"{type(exc).__name__}: {exc}"))
            task, stepper = _build(config, dev, job.data_dir)
    resumed_from = state.epoch
    if state.done is None:
        _train(config, task, stepper, state, path, dev, job.progress)
    info: dict[str, Any] = {"task_info": task.info, "device": str(dev), "log_every": log_every}
    if task.probe is not None and (state.done or "finished") == "finished":
        info["probe"] = task.probe()  # the trained model, measured once
    guard = getattr(stepper, "guard", None)
    if guard is not None:  # how often the Lyapunov check rejected a step
        info["guard"] = dict(guard.counters)
    return RunResult(
        config.run_id,
        state.done or "finished",
        summary=_summary(task, state, resumed_from),
        epochs=state.epochs,
        steps=state.steps,
        info=info,
        environment=env,
        warnings=notes,
    )


def _record_eval(task: TaskInstance, state: RunState, epoch: int, wall: float) -> dict[str, float]:
    vals = {}
    for split in ("train", "val", "test"):
        loss, metric = evaluate(task, split)
        state.epochs.append(
            {
                "epoch": epoch,
                "step": state.step,
                "split": split,
                "loss": loss,
                "metric": metric,
                "wall_s": wall,
            }
        )
        vals[split] = metric
        vals[f"{split}_loss"] = loss
    return vals


def _train(
    config: RunConfig,
    task: TaskInstance,
    stepper: Stepper,
    state: RunState,
    ckpt_path: Path,
    dev: torch.device,
    progress: bool,
) -> None:
    """Train from ``state`` to the end of the run (or divergence), updating it in place."""
    total = config.epochs * task.steps_per_epoch
    log_every = state.log_every
    target, higher = task.budget.target, task.higher_is_better
    model = task.model
    model.train()
    bar = None
    if progress and sys.stderr.isatty():  # a bar's \r frames only make sense in a terminal
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total,
            initial=state.step,
            desc=config.label(),
            leave=False,
            unit="step",
            file=sys.stderr,
            position=1,
        )
    start = time.perf_counter() - state.wall_s
    if state.epoch == 0 and not state.epochs:
        _record_eval(task, state, 0, 0.0)
    # The window mean of the training loss between log points; it spans epoch ends, so it
    # is part of the checkpoint (a resumed run logs exactly what an uninterrupted one does).
    window = torch.tensor(state.window_sum, device=dev)
    window_n = state.window_n
    bad = torch.zeros((), dtype=torch.bool, device=dev)
    diverged = False
    for epoch in range(state.epoch, config.epochs):
        t0 = time.perf_counter()
        for x, y in task.train_batches(epoch):

            def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                stepper.optimizer.zero_grad(set_to_none=True)
                loss = task.loss_fn(model(x), y)
                loss.backward()
                return loss

            loss = stepper.step(closure)
            # Flags and sums stay on the device; the host reads them only every k steps.
            bad |= ~torch.isfinite(loss)
            window += loss
            window_n += 1
            state.step += 1
            if state.step % log_every == 0 or state.step == total:
                if bool(bad):
                    diverged = True
                    break
                _log_point(state, stepper, window, window_n)
                window_n = 0
                if bar is not None:
                    bar.update(state.step - bar.n)
        _sync(dev)
        state.train_s += time.perf_counter() - t0
        if diverged or bool(bad):
            diverged = True
            break
        vals = _record_eval(task, state, epoch + 1, time.perf_counter() - start)
        if state.steps_to_target is None and _reached(vals["val"], target, higher):
            state.steps_to_target = state.step
        state.epoch = epoch + 1
        state.wall_s = time.perf_counter() - start
        if not math.isfinite(vals["train_loss"]):
            diverged = True
            break
        state.window_sum, state.window_n = float(window), window_n
        if state.epoch < config.epochs:
            save_atomic(_checkpoint(state, config.run_id, model, stepper, dev), ckpt_path)
    if bar is not None:
        bar.close()
    if not diverged and window_n:  # the task gave fewer batches than steps_per_epoch says
        _log_point(state, stepper, window, window_n)
    state.wall_s = time.perf_counter() - start
    state.done = "diverged" if diverged else "finished"
    # Written before the store commit: if that commit fails, the rerun just commits.
    save_atomic(_checkpoint(state, config.run_id, model, stepper, dev), ckpt_path)


def _log_point(state: RunState, stepper: Stepper, window: torch.Tensor, n: int) -> None:
    """Append one per-step record (window-mean loss over ``n`` steps) and reset the window."""
    s = stepper.stats()
    state.steps.append(
        {
            "step": state.step,
            "loss": float(window) / n,
            "grad_norm": float(s["grad_norm"]),
            "lr": float(s["lr"]),
            "effective_lr": float(s["effective_lr"]),
        }
    )
    window.zero_()


def _summary(task: TaskInstance, state: RunState, resumed_from: int) -> dict[str, Any]:
    last: dict[str, dict[str, Any]] = {}
    for rec in state.epochs:
        last[rec["split"]] = rec
    diverged = state.done == "diverged"
    summary: dict[str, Any] = {
        "steps": state.step,
        "wall_s": state.wall_s,
        "train_s": state.train_s,
        "resumed_from_epoch": resumed_from,
        "metric_name": task.metric_name,
        "higher_is_better": int(task.higher_is_better),
        "target": task.budget.target,
        "steps_to_target": state.steps_to_target,
    }
    for split in ("train", "val", "test"):
        rec = last.get(split)
        ok = rec is not None and not diverged
        summary[f"{split}_loss"] = rec["loss"] if ok else None
        if split != "train":
            summary[f"{split}_metric"] = rec["metric"] if ok else None
    return summary


# ------------------------------------------------------------------ the parent side


@dataclass
class RunOutcome:
    """What happened to one config in :func:`run_many`.

    ``status``: ``finished``, ``diverged``, ``failed`` (``error`` says why), ``skipped``
    (already done), ``missing_data``. ``previous`` is true when the outcome is an earlier
    call's (a done or failed run not run again).
    """

    config: RunConfig
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    previous: bool = False


def _commit(store: Store, config: RunConfig, result: RunResult, tags: list[str],
            checkpoint_dir: str) -> None:  # fmt: skip
    """Write ``result`` (the parent is the only writer); then drop the final checkpoint."""
    env_id = store.environment_id(result.environment) if result.environment else None
    store.start_run(config.run_id, asdict(config), env_id=env_id, tags=tags)  # type: ignore[arg-type]
    if result.status == FAILED:
        store.fail_run(config.run_id, error=result.error or "unknown error", info=result.info)
        return
    store.finish_run(
        config.run_id,
        status=result.status,
        summary=result.summary,
        epochs=result.epochs,
        steps=result.steps,
        info=result.info,
    )
    checkpoint_path(checkpoint_dir, config.run_id).unlink(missing_ok=True)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class _Progress:
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
                f"progress: {self.done}/{self.total} runs, {_minutes(elapsed)} elapsed, "
                f"ETA {_minutes(eta)}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _executor_or_default(executor: Executor | None) -> Iterator[Executor]:
    if executor is not None:
        yield executor
        return
    from superlevel.bench.executors import InProcessExecutor

    with InProcessExecutor() as own:
        yield own


def run_many(
    configs: Sequence[RunConfig],
    store: Store,
    *,
    executor: Executor | None = None,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    tags: Iterable[str] = ("default",),
    log_points: int = 100,
    progress: bool = False,
    log: Log | None = None,
    skip_missing_data: bool = False,
    retry_failed: bool = False,
) -> list[RunOutcome]:
    """Run ``configs`` on ``executor`` and store each result as it arrives.

    Runs already finished or diverged are skipped (their tags added), ``failed`` ones too
    unless ``retry_failed``; a config listed twice runs once. Results do not depend on the
    executor or its number of workers: each run is seeded by its config alone.

    Args:
        configs: the runs.
        store: where results go; this process is its only writer.
        executor: where runs train (default: this process, one at a time).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (resolved where the run trains).
        data_dir: data folder for tasks with real data (``None``: env ``SUPERLEVEL_DATA``).
        checkpoint_dir: per-epoch checkpoints (default: ``checkpoints/`` next to the
            database; created on the first checkpoint). On a cluster: a shared path.
        tags: why these runs exist; added even to skipped runs.
        log_points: about how many per-step records to keep per run (every ``k`` steps
            with ``k = ceil(total_steps / log_points)``).
        progress: an overall bar with ETA in a terminal, else a line every 30 s.
        log: receives one line per run; lines starting with :data:`WARNING` (a skipped
            task's missing data, a checkpoint set aside) must be shown even when quiet.
        skip_missing_data: a run whose data files are absent is reported (status
            ``missing_data``) and skipped; otherwise ``MissingDataError`` propagates.
        retry_failed: run ``failed`` runs again.

    Returns:
        One :class:`RunOutcome` per config, in the order of ``configs``.
    """
    from superlevel.data.base import MissingDataError

    tags = list(tags)
    ckpt_dir = str(Path(checkpoint_dir) if checkpoint_dir else store.path.parent / "checkpoints")
    outcomes: list[RunOutcome | None] = [None] * len(configs)
    first: dict[str, int] = {}
    todo: list[int] = []
    with _executor_or_default(executor) as ex:
        # Where the runs train decides what "auto" means; a local one fails early here.
        device = check_device_name(device) if ex.remote else str(resolve_device(device))
        for i, cfg in enumerate(configs):
            if cfg.run_id in first:
                continue
            first[cfg.run_id] = i
            status = store.status(cfg.run_id)
            if status in DONE or (status == FAILED and not retry_failed):
                store.add_tags(cfg.run_id, tags)
                error = (store.get_run(cfg.run_id) or {}).get("info", {}).get("error")
                shown = "skipped" if status in DONE else FAILED
                outcomes[i] = RunOutcome(cfg, shown, error=error, previous=True)
            else:
                todo.append(i)
        threads = torch.get_num_threads()
        jobs = [
            RunJob(
                configs[i],
                device,
                None if data_dir is None else str(data_dir),
                ckpt_dir,
                log_points,
                threads,
                progress and ex.in_process,
            )
            for i in todo
        ]
        bar = _Progress(len(jobs), progress, log)
        n, k = len(first), 0
        with ExitStack() as stack:
            stack.callback(bar.close)
            for out in outcomes:
                if out is not None:
                    k += 1
                    bar.say(_describe(k, n, out))
            missing: set[str] = set()
            results = stack.enter_context(closing(ex.map(jobs)))  # an error stops its workers
            for j, result in results:
                cfg = configs[todo[j]]
                for note in result.warnings:
                    bar.say(f"{WARNING}{cfg.label()}: {note}")
                k += 1
                if result.status == CHECKPOINT_ERROR:
                    raise CheckpointError(result.error or "", Path(result.info["path"]))
                if result.status == "missing_data":
                    if not skip_missing_data:
                        raise MissingDataError(result.error)
                    out = RunOutcome(cfg, "missing_data", error=result.error)
                    if cfg.task not in missing:
                        missing.add(cfg.task)
                        bar.say(f"{WARNING}[{k}/{n}] {cfg.task}: SKIPPED, its data is missing "
                                f"({result.error})")  # fmt: skip
                else:
                    _commit(store, cfg, result, tags, ckpt_dir)
                    out = RunOutcome(cfg, result.status, result.summary, error=result.error)
                    bar.say(_describe(k, n, out))
                outcomes[todo[j]] = out
                bar.advance()
    for i, cfg in enumerate(configs):  # a config listed twice ran once
        if outcomes[i] is None:
            outcomes[i] = RunOutcome(cfg, "skipped", previous=True)
    return [o for o in outcomes if o is not None]


def run_one(
    config: RunConfig,
    store: Store,
    *,
    executor: Executor | None = None,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    log_points: int = 100,
    tags: Iterable[str] = ("default",),
    progress: bool = False,
    retry_failed: bool = False,
) -> RunOutcome:
    """Train ``config`` (or resume it, or skip it when done) and store the result.

    The one-run case of :func:`run_many` (same arguments); missing data raises
    ``MissingDataError``.
    """
    return run_many(
        [config],
        store,
        executor=executor,
        device=device,
        data_dir=data_dir,
        checkpoint_dir=checkpoint_dir,
        tags=tags,
        log_points=log_points,
        progress=progress,
        retry_failed=retry_failed,
    )[0]


def _describe(i: int, n: int, out: RunOutcome) -> str:
    head = f"[{i}/{n}] {out.config.label()} ({out.config.run_id})"
    if out.status == "skipped":
        return f"{head}: already done, skipped"
    if out.status == FAILED:
        if out.previous:
            return f"{head}: failed earlier ({out.error}), skipped; --retry-failed reruns it"
        return f"{head}: FAILED: {out.error}"
    s = out.summary
    if out.status == "diverged":
        return f"{head}: DIVERGED after {s['steps']} steps"
    return (
        f"{head}: test {s['metric_name']}={s['test_metric']:.4g} "
        f"loss={s['test_loss']:.4g} in {s['wall_s']:.1f}s"
    )


def outcome_counts(outcomes: Sequence[RunOutcome]) -> str:
    """``"N runs (a finished, b skipped, ...)"``: what a call of :func:`run_many` did."""
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
