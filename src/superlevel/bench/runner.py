"""The runner: trains one (task, optimizer, hyperparameters, seed) and hands it to the store.

A run is identified by :attr:`RunConfig.run_id`, a hash of exactly what determines its
result: task, task options, budget, epochs, optimizer, hyperparameters and seed. The
runner is idempotent: a run already ``finished`` or ``diverged`` in the store is not
redone. It checkpoints at every epoch end (write to a temporary file, then rename, so a
checkpoint is either the old one or the new one, never half), and an interrupted run —
even by ``kill -9`` — resumes from its last completed epoch when the same command runs
again. The finished run and all its metrics reach the store in one transaction; the
final checkpoint is written *before* that commit and removed after it, so a failed
commit (locked database) loses nothing either.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from superlevel.bench.checkpoint import load as _load_checkpoint
from superlevel.bench.checkpoint import save_atomic as _save_atomic
from superlevel.bench.optimizers import get_optimizer
from superlevel.bench.store import DONE, Store
from superlevel.bench.task import TaskInstance

CHECKPOINT_VERSION = 1


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


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available else ``cpu``; otherwise ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


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


@dataclass
class RunOutcome:
    """What happened to one config in :func:`run_one`."""

    config: RunConfig
    status: str  # finished | diverged | skipped (already done)
    summary: dict[str, Any] = field(default_factory=dict)


def _fresh_state() -> dict[str, Any]:
    return {
        "version": CHECKPOINT_VERSION,
        "epoch": 0,
        "step": 0,
        "train_s": 0.0,
        "wall_s": 0.0,
        "epochs": [],
        "steps": [],
        "steps_to_target": None,
        "window_sum": 0.0,
        "window_n": 0,
        "done": None,
    }


def run_one(
    config: RunConfig,
    store: Store,
    *,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    log_points: int = 100,
    tags: Iterable[str] = ("default",),
    progress: bool = False,
    env_id: int | None = None,
) -> RunOutcome:
    """Train ``config`` (or resume it, or skip it when done) and store the result.

    Args:
        config: the run.
        store: where results go.
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        data_dir: data folder for tasks with real data (``None``: env ``SUPERLEVEL_DATA``).
        checkpoint_dir: where per-epoch checkpoints live (default: ``checkpoints/`` next
            to the database).
        log_points: about how many per-step records to keep (every ``k`` steps with
            ``k = ceil(total_steps / log_points)``).
        tags: why this run exists; added even when the run is skipped.
        progress: show a tqdm bar over the run's steps.
        env_id: environment id in ``store`` (computed when ``None``).
    """
    from superlevel.bench.tasks import build_task

    tags = list(tags)
    run_id = config.run_id
    if store.status(run_id) in DONE:
        store.add_tags(run_id, tags)
        return RunOutcome(config, "skipped")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if env_id is None:
        env_id = store.environment_id(environment(dev))
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else store.path.parent / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / f"{run_id}.pt"

    torch.manual_seed(config.seed)
    task = build_task(
        config.task,
        seed=config.seed,
        device=str(dev),
        budget=config.budget,
        data_dir=data_dir,
        **config.task_options,
    )
    spec = get_optimizer(config.optimizer)
    stepper = spec.build(
        task.model.parameters(),
        config.hparams,
        steps_per_epoch=task.steps_per_epoch,
        epochs=config.epochs,
    )
    state = _fresh_state()
    if ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, map_location=dev)
        if state.get("version") != CHECKPOINT_VERSION:
            raise RuntimeError(f"checkpoint {ckpt_path} has an unknown format; delete it")
        task.model.load_state_dict(state["model"])
        stepper.load_state_dict(state["stepper"])
        torch.set_rng_state(state["rng"].cpu())
        if dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), dev)
    resumed_from = state["epoch"]
    store.start_run(run_id, _config_row(config), env_id=env_id, tags=tags)

    if state["done"] is None:
        state = _train(config, task, stepper, state, ckpt_path, dev, log_points, progress)
    summary = _summary(task, state, resumed_from)
    info = {"task_info": task.info, "device": str(dev), "log_every": state.get("log_every")}
    guard = getattr(stepper, "guard", None)
    if guard is not None:  # how often the Lyapunov check rejected a step
        info["guard"] = dict(guard.counters)
    store.finish_run(
        run_id,
        status=state["done"],
        summary=summary,
        epochs=state["epochs"],
        steps=state["steps"],
        info=info,
    )
    ckpt_path.unlink(missing_ok=True)
    return RunOutcome(config, state["done"], summary)


def _config_row(config: RunConfig) -> dict[str, Any]:
    return asdict(config)


def _record_eval(
    task: TaskInstance, state: dict[str, Any], epoch: int, wall: float
) -> dict[str, float]:
    vals = {}
    for split in ("train", "val", "test"):
        loss, metric = evaluate(task, split)
        state["epochs"].append(
            {
                "epoch": epoch,
                "step": state["step"],
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
    stepper: Any,
    state: dict[str, Any],
    ckpt_path: Path,
    dev: torch.device,
    log_points: int,
    progress: bool,
) -> dict[str, Any]:
    total = config.epochs * task.steps_per_epoch
    log_every = max(1, math.ceil(total / max(1, log_points)))
    state["log_every"] = log_every
    target, higher = task.budget.target, task.higher_is_better
    model = task.model
    model.train()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=total,
            initial=state["step"],
            desc=config.label(),
            leave=False,
            unit="step",
            file=sys.stderr,
        )
    start = time.perf_counter() - state["wall_s"]
    if state["epoch"] == 0 and not state["epochs"]:
        _record_eval(task, state, 0, 0.0)
    # The window mean of the training loss between log points; it spans epoch ends, so it
    # is part of the checkpoint (a resumed run logs exactly what an uninterrupted one does).
    window = torch.tensor(state.get("window_sum", 0.0), device=dev)
    window_n = state.get("window_n", 0)
    bad = torch.zeros((), dtype=torch.bool, device=dev)
    diverged = False
    for epoch in range(state["epoch"], config.epochs):
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
            state["step"] += 1
            if state["step"] % log_every == 0 or state["step"] == total:
                if bool(bad):
                    diverged = True
                    break
                _log_point(state, stepper, window, window_n)
                window_n = 0
                if bar is not None:
                    bar.update(state["step"] - bar.n)
        _sync(dev)
        state["train_s"] += time.perf_counter() - t0
        if diverged or bool(bad):
            diverged = True
            break
        vals = _record_eval(task, state, epoch + 1, time.perf_counter() - start)
        if state["steps_to_target"] is None and _reached(vals["val"], target, higher):
            state["steps_to_target"] = state["step"]
        state["epoch"] = epoch + 1
        state["wall_s"] = time.perf_counter() - start
        if not math.isfinite(vals["train_loss"]):
            diverged = True
            break
        state["window_sum"], state["window_n"] = float(window), window_n
        if state["epoch"] < config.epochs:
            _save_atomic(_checkpoint(state, model, stepper, dev), ckpt_path)
    if bar is not None:
        bar.close()
    if not diverged and window_n:  # the task gave fewer batches than steps_per_epoch says
        _log_point(state, stepper, window, window_n)
    state["wall_s"] = time.perf_counter() - start
    state["done"] = "diverged" if diverged else "finished"
    # Written before the store commit: if that commit fails, the rerun just commits.
    _save_atomic(_checkpoint(state, model, stepper, dev), ckpt_path)
    return state


def _log_point(state: dict[str, Any], stepper: Any, window: torch.Tensor, n: int) -> None:
    """Append one per-step record (window-mean loss over ``n`` steps) and reset the window."""
    s = stepper.stats()
    state["steps"].append(
        {
            "step": state["step"],
            "loss": float(window) / n,
            "grad_norm": float(s["grad_norm"]),
            "lr": float(s["lr"]),
            "effective_lr": float(s["effective_lr"]),
        }
    )
    window.zero_()


def _checkpoint(
    state: dict[str, Any], model: torch.nn.Module, stepper: Any, dev: torch.device
) -> dict[str, Any]:
    return {
        **state,
        "model": model.state_dict(),
        "stepper": stepper.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
    }


def _summary(task: TaskInstance, state: dict[str, Any], resumed_from: int) -> dict[str, Any]:
    last: dict[str, dict[str, Any]] = {}
    for rec in state["epochs"]:
        last[rec["split"]] = rec
    diverged = state["done"] == "diverged"
    summary: dict[str, Any] = {
        "steps": state["step"],
        "wall_s": state["wall_s"],
        "train_s": state["train_s"],
        "resumed_from_epoch": resumed_from,
        "metric_name": task.metric_name,
        "higher_is_better": int(task.higher_is_better),
        "target": task.budget.target,
        "steps_to_target": state["steps_to_target"],
    }
    for split in ("train", "val", "test"):
        rec = last.get(split)
        ok = rec is not None and not diverged
        summary[f"{split}_loss"] = rec["loss"] if ok else None
        if split != "train":
            summary[f"{split}_metric"] = rec["metric"] if ok else None
    return summary


def run_many(
    configs: Sequence[RunConfig],
    store: Store,
    *,
    device: str = "cpu",
    data_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    tags: Iterable[str] = ("default",),
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    skip_missing_data: bool = False,
) -> list[RunOutcome]:
    """Run ``configs`` in order (skipping finished ones); one line per run to ``log``.

    With ``skip_missing_data`` a run whose data files are absent is reported (status
    ``missing_data``, a message naming the data) and skipped; otherwise the error propagates.
    """
    from superlevel.data.base import MissingDataError

    dev = resolve_device(device)
    env_id = store.environment_id(environment(dev))
    tags = list(tags)
    outcomes = []
    missing: set[str] = set()
    for i, cfg in enumerate(configs, 1):
        if cfg.task in missing:
            outcomes.append(RunOutcome(cfg, "missing_data"))
            continue
        try:
            out = run_one(
                cfg,
                store,
                device=dev,
                data_dir=data_dir,
                checkpoint_dir=checkpoint_dir,
                tags=tags,
                progress=progress,
                env_id=env_id,
            )
        except MissingDataError as exc:
            if not skip_missing_data:
                raise
            missing.add(cfg.task)
            msg = f"[{i}/{len(configs)}] {cfg.task}: SKIPPED, its data is missing ({exc})"
            print(msg, file=sys.stderr, flush=True)
            outcomes.append(RunOutcome(cfg, "missing_data"))
            continue
        outcomes.append(out)
        if log is not None:
            log(_describe(i, len(configs), out))
    return outcomes


def _describe(i: int, n: int, out: RunOutcome) -> str:
    head = f"[{i}/{n}] {out.config.label()} ({out.config.run_id})"
    if out.status == "skipped":
        return f"{head}: already done, skipped"
    s = out.summary
    if out.status == "diverged":
        return f"{head}: DIVERGED after {s['steps']} steps"
    return (
        f"{head}: test {s['metric_name']}={s['test_metric']:.4g} "
        f"loss={s['test_loss']:.4g} in {s['wall_s']:.1f}s"
    )
