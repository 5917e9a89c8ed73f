"""Lightning: a callback that shows SuperLevelSGD's real rate and runs the stability monitor.

Lightning's ``LearningRateMonitor`` logs ``group["lr"]``, which for ``SuperLevelSGD`` is
``a0`` for the whole run. :class:`SuperLevelCallback` logs ``stats()`` instead (the decayed
``a_t``, the effective lr ``a_t * eta_t``, the gradient norm the rule saw, ``eta_t`` and
the skip count), plus a :class:`~superlevel.stability.LyapunovGuard`'s counters when
one is in use, and, given a probe batch, runs a
:class:`~superlevel.stability.StabilityMonitor` whose CSV and PNG go into the logger's
folder (``trainer.log_dir``).

At fit start it refuses, as the Hugging Face callback does, the two Trainer settings
that change the rule (``gradient_clip_val``: a hard clip before the smooth one; an lr
scheduler from ``configure_optimizers`` that lowers the lr while ``decay > 0``: a double
decay), with the fix (``strict=False``: a warning).

The guard itself goes into ``configure_optimizers`` like any optimizer (it is one);
Lightning's automatic optimization passes it the closure it needs. The callback checks
at fit start the two setups where that cannot work (see
:meth:`SuperLevelCallback.on_fit_start`), and says when the guard skips steps, which
Lightning counts as global steps all the same.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

try:
    import lightning.pytorch as pl
except ImportError as exc:  # the optional extra
    raise ImportError(
        "superlevel.integrations.lightning needs Lightning: pip install 'superlevel[lightning]'"
    ) from exc

from superlevel.integrations._common import (
    check_callback_args,
    clip_problem,
    decay_problem,
    find_guard,
    find_superlevel,
    optimizer_chain,
    refuse_or_warn,
    schedule_change,
    superlevel_stats,
)
from superlevel.stability import StabilityMonitor

__all__ = ["SuperLevelCallback", "check_lightning_setup"]

log = logging.getLogger(__name__)
# Options the callback passes to the monitor itself.
_SET_BY_CALLBACK = ("guard", "stream_to")
# An endless run's schedule is evaluated over this many of its steps (or epochs).
_OPEN_HORIZON = 10**6


def _horizon(trainer: pl.Trainer, interval: str) -> int:
    """The run's length in scheduler steps: optimizer steps, or epochs."""
    n = trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs
    n = float(n) if n is not None else math.inf
    return int(n) if math.isfinite(n) and n > 0 else _OPEN_HORIZON


def check_lightning_setup(trainer: pl.Trainer, optimizer: Any) -> list[str]:
    """What in a Lightning setup changes SuperLevelSGD's rule, each with its fix.

    Args:
        trainer: the ``Trainer`` at fit start (its optimizers and schedulers are set up).
        optimizer: one of ``trainer.optimizers`` (wrappers such as the guard are seen
            through).

    Returns:
        One message per problem: ``gradient_clip_val > 0`` (by norm: the modulation
        never sees a norm above it; by value: it sees the clamped gradient's), and each
        scheduler on this optimizer that lowers the lr while ``decay > 0`` (checked as
        the Hugging Face callback checks the Trainer's, over the run's length). Empty
        when the rule is intact or there is no ``SuperLevelSGD``.
    """
    opt = find_superlevel(optimizer)
    if opt is None:
        return []
    problems = []
    clip = trainer.gradient_clip_val
    if clip is not None and float(clip) > 0:
        algorithm = str(getattr(trainer.gradient_clip_algorithm, "value", "norm") or "norm")
        by_value = algorithm == "value"
        setting = f"Trainer(gradient_clip_val={clip:g}" + (
            ", gradient_clip_algorithm='value')" if by_value else ")"
        )
        fix = "Trainer(gradient_clip_val=None) (the default: no clip)"
        problems.append(clip_problem(setting, float(clip), fix, by_value=by_value))
    for config in trainer.lr_scheduler_configs:
        sched = config.scheduler
        if find_superlevel(getattr(sched, "optimizer", None)) is not opt:
            continue
        change = schedule_change(sched, _horizon(trainer, config.interval))
        who = (
            f"the lr scheduler returned by configure_optimizers ({type(sched).__name__}, "
            f"interval={config.interval!r})"
        )
        fix = (
            "return only the optimizer from configure_optimizers (or a warmup that only "
            "rises), or SuperLevelSGD(decay=0.0) to let the scheduler decay alone"
        )
        problem = decay_problem(opt, change, who, fix)
        if problem is not None:
            problems.append(problem)
    return problems


def _wide(t: Tensor) -> Tensor:
    """A logged value as float64 (float32 on MPS): Lightning casts integers to float32,
    with a warning, and a float32 count is exact only to 2**24."""
    return t.to(torch.float32 if t.device.type == "mps" else torch.float64)


class SuperLevelCallback(pl.Callback):
    """Log ``SuperLevelSGD.stats()`` every step; optionally monitor stability.

    Logged with ``pl_module.log_dict`` on every step that Lightning writes (every
    ``log_every_n_steps``; so every logger and ``ModelCheckpoint(monitor=...)`` see
    them), under
    ``<prefix>/``: ``step``, ``lr`` (``a_t``), ``effective_lr``, ``grad_norm``, ``scale``
    (``eta_t``), ``skipped``; with a guard also ``guard_steps``, ``guard_retries``,
    ``guard_skips``, ``guard_violations``, ``guard_forced``. They are handed over as
    0-dim tensor copies, which Lightning reads back only on the steps it writes (every
    ``trainer.log_every_n_steps``): no host sync on the other steps.

    With ``probe_batch`` and ``loss_fn`` a :class:`StabilityMonitor` is built at train
    start (on the global-zero process only), records every optimizer step, streams its
    records to ``<log_dir>/<csv_name>`` and draws ``<log_dir>/<png_name>`` at train end.

    The values are logged as float64: ``step`` and ``skipped`` are int64 counts, which
    Lightning would cast to float32 (with a warning on every run; exact only to 2**24).

    At fit start :func:`check_lightning_setup` lists what changes the rule
    (``Trainer(gradient_clip_val=...)``, a decaying scheduler while ``decay > 0``):
    ``strict=True`` raises a ``ValueError`` with each problem and its fix before any
    step, ``strict=False`` warns and trains on.

    With a :class:`~superlevel.stability.LyapunovGuard`, a call that the guard skips
    (no trial accepted, params unchanged) is still one ``global_step``: the first skip
    of a fit is a ``UserWarning`` saying so, ``<prefix>/guard_skips`` counts them, and a
    fit in which no call changed the params ends with a second warning.

    Args:
        prefix: the name prefix of the logged values (a non-empty string).
        strict: raise (``True``) or warn (``False``) on a setup that changes the rule.
        optimizer_index: which of ``trainer.optimizers`` to watch (an int >= 0).
        probe_batch: a fixed ``(x, y)`` batch for the monitor's probes (moved to the
            module's device); ``None``: no monitor.
        loss_fn: ``loss_fn(pl_module(x), y) -> scalar``, required with ``probe_batch``.
        csv_name: the monitor's CSV file name in the log folder (a plain file name).
        png_name: its figure's file name in the log folder (a plain file name).
        **monitor_kwargs: passed to :class:`StabilityMonitor` (``every``,
            ``sharpness_iters``, ``barrier_points``, ``norm_every``, ...); need
            ``probe_batch``.

    Raises:
        TypeError: an argument of the wrong kind, or a monitor option that
            :class:`StabilityMonitor` does not take (or that the callback sets itself).
        ValueError: a bad value, including monitor options without ``probe_batch``;
            every argument is checked here, not at fit start.

    Example:
        >>> trainer = lightning.Trainer(callbacks=[SuperLevelCallback()])  # doctest: +SKIP
    """

    def __init__(
        self,
        prefix: str = "superlevel",
        *,
        strict: bool = True,
        optimizer_index: int = 0,
        probe_batch: tuple[Tensor, Tensor] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        csv_name: str = "stability.csv",
        png_name: str = "stability.png",
        **monitor_kwargs: Any,
    ) -> None:
        check_callback_args(prefix, strict)
        if isinstance(optimizer_index, bool) or not isinstance(optimizer_index, int):
            raise TypeError(
                f"optimizer_index must be an int, got {optimizer_index!r} "
                f"({type(optimizer_index).__name__})"
            )
        if optimizer_index < 0:
            raise ValueError(f"optimizer_index must be >= 0, got {optimizer_index}")
        _check_file_names(csv_name, png_name)
        _check_monitor(probe_batch, loss_fn, monitor_kwargs)
        self.prefix = prefix
        self.strict = strict
        self.optimizer_index = optimizer_index
        self.probe_batch = probe_batch
        self.loss_fn = loss_fn
        self.csv_name = csv_name
        self.png_name = png_name
        self.monitor_kwargs = monitor_kwargs
        self.monitor: StabilityMonitor | None = None
        self.problems: list[str] = []
        self._optimizer: Any = None
        self._recorded_step = -1
        self._guard_start: dict[str, int] | None = None  # the guard's counters at train start
        self._skip_warned = False

    # -- checks -------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Find the optimizer; refuse what changes the rule and what cannot work with a guard.

        :func:`check_lightning_setup`'s problems raise (``strict``) or warn. A
        :class:`~superlevel.stability.LyapunovGuard` needs a closure on every
        ``step``: refused with gradient accumulation (the closure would only recompute
        the last micro-batch) and with a ``GradScaler`` (16-bit mixed precision calls
        ``step()`` without one); ``32-true``, ``bf16-mixed`` and ``64-true`` work.
        """
        optimizers = trainer.optimizers
        if not 0 <= self.optimizer_index < len(optimizers):
            raise ValueError(
                f"optimizer_index={self.optimizer_index} but the trainer has "
                f"{len(optimizers)} optimizer(s)"
            )
        opt = optimizers[self.optimizer_index]
        if find_superlevel(opt) is None and self.probe_batch is None:
            names = " -> ".join(type(o).__name__ for o in optimizer_chain(opt))
            raise ValueError(
                f"SuperLevelCallback logs SuperLevelSGD.stats(), but the optimizer is {names}; "
                f"use SuperLevelSGD, or pass probe_batch= to monitor any optimizer"
            )
        if find_guard(opt) is not None:
            if trainer.accumulate_grad_batches != 1:
                raise ValueError(
                    f"LyapunovGuard with accumulate_grad_batches={trainer.accumulate_grad_batches}:"
                    f" its closure recomputes only the last micro-batch, so L1 and L0 would be "
                    f"different losses. Use accumulate_grad_batches=1 (a larger batch instead)."
                )
            if getattr(trainer.precision_plugin, "scaler", None) is not None:
                raise ValueError(
                    f"LyapunovGuard with precision={trainer.precision!r}: the GradScaler calls "
                    f"optimizer.step() without a closure. Use precision='32-true' or "
                    f"'bf16-mixed'."
                )
        self.problems = check_lightning_setup(trainer, opt)
        refuse_or_warn(self.problems, self.strict, type(self).__name__)
        self._optimizer = opt

    # -- monitor ------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the monitor (after a checkpoint restore: it starts at the restored params)."""
        self._recorded_step = trainer.global_step
        guard = find_guard(self._optimizer)
        self._guard_start = dict(guard.counters) if guard is not None else None
        self._skip_warned = False
        if self.probe_batch is None or not trainer.is_global_zero:
            return
        x, y = (t.to(pl_module.device) for t in self.probe_batch)
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        opt = self._optimizer
        inner = find_superlevel(opt) or optimizer_chain(opt)[-1]
        self.monitor = StabilityMonitor(
            pl_module,
            inner,
            probe_batch=(x, y),
            loss_fn=self.loss_fn,
            guard=find_guard(opt),
            stream_to=log_dir / self.csv_name,
            **self.monitor_kwargs,
        )

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Log ``stats()``; record the step in the monitor when the optimizer stepped."""
        stepped = trainer.global_step != self._recorded_step
        self._recorded_step = trainer.global_step
        # Lightning's own "is this a step it writes?" (every log_every_n_steps); values
        # logged on other steps would be dropped anyway, at a cost per step
        connector = getattr(trainer, "_logger_connector", None)
        writes = getattr(connector, "should_update_logs", True)
        if writes and find_superlevel(self._optimizer) is not None:
            # tensor copies: Lightning reads them (one sync) only when it writes
            values = superlevel_stats(self._optimizer, self.prefix, tensors=True)
            values = {k: _wide(v) if isinstance(v, Tensor) else float(v) for k, v in values.items()}
            pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=1)
        if stepped:
            self._say_first_skip(trainer)
        loss = _loss_of(outputs)
        if self.monitor is not None and stepped and loss is not None:
            self.monitor.record(loss)

    # -- guard skips --------------------------------------------------------------------
    def _fit_counts(self) -> dict[str, int] | None:
        """The guard's counters since train start (``None`` without a guard)."""
        guard = find_guard(self._optimizer)
        if guard is None or self._guard_start is None:
            return None
        return {k: v - self._guard_start.get(k, 0) for k, v in guard.counters.items()}

    def _say_first_skip(self, trainer: pl.Trainer) -> None:
        """Warn once per fit when the guard first skips a call (host ints: no sync)."""
        counts = self._fit_counts()
        if self._skip_warned or counts is None or counts["skips"] == 0:
            return
        self._skip_warned = True
        guard = find_guard(self._optimizer)
        warnings.warn(
            f"LyapunovGuard skipped a step at global_step {trainer.global_step}: no trial met "
            f"L1 <= L0 + tol (tol={guard.tol:g}) within max_retries={guard.max_retries}, so "
            f"the params were left unchanged. Lightning counts the call as a global step all "
            f"the same (max_steps counts guarded calls, skipped ones included); "
            f"{self.prefix}/guard_skips logs how many.",
            UserWarning,
            stacklevel=2,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Say what the guard skipped; flush the monitor's CSV and draw its PNG."""
        counts = self._fit_counts()
        if counts is not None and counts["steps"] > 0:
            applied = counts["steps"] - counts["skips"]
            summary = (
                f"LyapunovGuard in this fit: {counts['steps']} global steps, {counts['skips']} "
                f"skipped (params unchanged), {applied} changed the params"
            )
            if applied == 0:
                warnings.warn(
                    summary + ": no step of this fit trained the model (lower the lr, or "
                    "raise max_retries)",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                log.info(summary)
        if self.monitor is None:
            return
        self.monitor.flush()
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        self.monitor.plot(log_dir / self.png_name, title=f"{type(pl_module).__name__}")


def _check_file_names(csv_name: Any, png_name: Any) -> None:
    """The monitor's two file names: distinct plain file names (they go into the log dir)."""
    for name, value in (("csv_name", csv_name), ("png_name", png_name)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {value!r} ({type(value).__name__})")
        if not value or Path(value).name != value or value in (".", ".."):
            raise ValueError(
                f"{name} must be a plain file name (it is written into the log folder), "
                f"got {value!r}"
            )
    if csv_name == png_name:
        raise ValueError(f"csv_name and png_name must differ, both are {csv_name!r}")


def _check_monitor(probe_batch: Any, loss_fn: Any, options: dict[str, Any]) -> None:
    """The monitor's arguments, checked as :class:`StabilityMonitor` will check them."""
    own = sorted(set(options) & set(_SET_BY_CALLBACK))
    if own:
        raise TypeError(
            f"SuperLevelCallback sets {own} of the StabilityMonitor itself (the guard it "
            f"finds, the log folder's CSV); do not pass them"
        )
    if probe_batch is None:
        given = sorted(options) + (["loss_fn"] if loss_fn is not None else [])
        if given:
            raise ValueError(
                f"{given} configure the StabilityMonitor, which runs only with probe_batch=: "
                f"pass probe_batch=(x, y), or drop them"
            )
        return
    StabilityMonitor.check_options(probe_batch=probe_batch, loss_fn=loss_fn, **options)


def _loss_of(outputs: Any) -> Tensor | None:
    """The loss of a ``training_step`` output (a tensor or a mapping with ``"loss"``)."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"]
    return None
