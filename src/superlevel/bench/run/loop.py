"""The training loop: build a run's task and stepper, train, evaluate, summarise.

One run trains epoch by epoch; after every epoch the model is evaluated on the train,
validation and test splits and the run checkpoints (except after its last epoch, whose
checkpoint the worker writes once the run has ended). A run can stop early at an epoch
boundary (``until_epoch``) and resume later from that checkpoint: successive halving
promotes a search trial this way, without training its first epochs twice.

A run *diverges* when a training loss or the epoch-end training loss is not finite; the
one check is :func:`_diverged`. The device keeps the flag and the host reads it only at
log points and epoch ends, so the step itself never waits for the host.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from superlevel.bench.optimizers import Stepper, get_optimizer
from superlevel.bench.run.checkpointing import RunState, make_checkpoint, save_atomic
from superlevel.bench.task import TaskInstance

if TYPE_CHECKING:
    from superlevel.bench.run.identity import RunConfig


def build(config: RunConfig, dev: torch.device, data_dir: str | None) -> tuple[
    TaskInstance, Stepper
]:  # fmt: skip
    """The task (seeded by the run's seed) and its stepper, as the run starts them."""
    from superlevel.bench.tasks.registry import build_task

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
        b = int(y.shape[0])  # tasks sum their metric over rows; losses are row means
        loss_sum += task.loss_fn(out, y).double() * b
        metric_sum += task.metric_fn(out, y).double()
        n += b
    model.train(was_training)
    if n == 0:
        raise ValueError(f"task {task.name!r} has an empty {split!r} split")
    return float(loss_sum) / n, float(metric_sum) / n


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


def _reached(value: float, target: float | None, higher: bool) -> bool:
    if target is None or not math.isfinite(value):
        return False
    return value >= target if higher else value <= target


def _diverged(bad: torch.Tensor, train_loss: float = 0.0) -> bool:
    """The divergence rule: a non-finite training loss at any step so far (``bad``, kept
    on the device) or a non-finite epoch-end training loss. Reads ``bad`` (a host sync)."""
    return bool(bad) or not math.isfinite(train_loss)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    config: RunConfig,
    task: TaskInstance,
    stepper: Stepper,
    state: RunState,
    ckpt_path: Path,
    dev: torch.device,
    *,
    code_id: str,
    progress: bool = False,
    until_epoch: int | None = None,
) -> None:
    """Train from ``state`` to epoch ``until_epoch`` (default: the end), updating it in place.

    ``code_id`` goes into every checkpoint (see
    :func:`~superlevel.bench.run.checkpointing.mismatch`). Sets ``state.done`` to
    ``finished`` or ``diverged`` when the run has ended; it stays ``None`` when the run
    stopped at ``until_epoch`` before its last epoch (its checkpoint is on disk: a later
    call resumes it).
    """
    total = config.epochs * task.steps_per_epoch
    stop = config.epochs if until_epoch is None else min(until_epoch, config.epochs)
    log_every = state.log_every
    target, higher = task.budget.target, task.higher_is_better
    model = task.model
    model.train()
    bar = None
    if progress and sys.stderr.isatty():  # a bar's \r frames only make sense in a terminal
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=state.step, desc=config.label(), leave=False,
                   unit="step", file=sys.stderr, position=1)  # fmt: skip
    start = time.perf_counter() - state.wall_s
    if state.epoch == 0 and not state.epochs:
        _record_eval(task, state, 0, 0.0)
    # The window mean of the training loss between log points; it spans epoch ends, so it
    # is part of the checkpoint (a resumed run logs exactly what an uninterrupted one does).
    window = torch.tensor(state.window_sum, device=dev)
    window_n = state.window_n
    bad = torch.zeros((), dtype=torch.bool, device=dev)
    diverged = False
    for epoch in range(state.epoch, stop):
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
                if _diverged(bad):
                    break
                _log_point(state, stepper, window, window_n)
                window_n = 0
                if bar is not None:
                    bar.update(state.step - bar.n)
        _sync(dev)
        state.train_s += time.perf_counter() - t0
        if _diverged(bad):
            diverged = True
            break
        vals = _record_eval(task, state, epoch + 1, time.perf_counter() - start)
        if state.steps_to_target is None and _reached(vals["val"], target, higher):
            state.steps_to_target = state.step
        state.epoch = epoch + 1
        state.wall_s = time.perf_counter() - start
        if _diverged(bad, vals["train_loss"]):
            diverged = True
            break
        state.window_sum, state.window_n = float(window), window_n
        if state.epoch < config.epochs:
            save_atomic(make_checkpoint(state, config.run_id, code_id, model, stepper, dev),
                        ckpt_path)  # fmt: skip
    if bar is not None:
        bar.close()
    state.wall_s = time.perf_counter() - start
    if diverged:
        state.done = "diverged"
    elif state.epoch == config.epochs:
        if window_n:  # the task gave fewer batches than steps_per_epoch says
            _log_point(state, stepper, window, window_n)
        state.done = "finished"


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


def summary(task: TaskInstance, state: RunState, resumed_from: int) -> dict[str, Any]:
    """The run's row in the store: counts, timings, last-epoch losses and metrics.

    A diverged run has no final losses or metrics (``None``); a paused one has those of
    its last completed epoch (``epochs_done``). ``initial_*_metric`` are the untrained
    model's (epoch 0).
    """
    last: dict[str, dict[str, Any]] = {}
    for rec in state.epochs:
        last[rec["split"]] = rec
    diverged = state.done == "diverged"
    out: dict[str, Any] = {
        "steps": state.step,
        "epochs_done": state.epoch,
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
        out[f"{split}_loss"] = rec["loss"] if ok else None
        if split != "train":
            out[f"{split}_metric"] = rec["metric"] if ok else None
    for rec in state.epochs:  # the untrained model's: what a diverged run is scored with
        if rec["epoch"] == 0 and rec["split"] in ("val", "test"):
            out[f"initial_{rec['split']}_metric"] = rec["metric"]
    return out
