"""Lightning: a callback that shows SuperLevelSGD's real rate and runs the stability monitor.

Lightning's ``LearningRateMonitor`` logs ``group["lr"]``, which for ``SuperLevelSGD`` is
``a0`` for the whole run. :class:`SuperLevelCallback` logs ``stats()`` instead (the decayed
``a_t``, the effective lr ``a_t * eta_t``, the gradient norm the rule saw, ``eta_t`` and
the skip count), plus a :class:`~superlevel.stability.LyapunovGuard`'s counters when
one is in use, and, given a probe batch, runs a
:class:`~superlevel.stability.StabilityMonitor` whose CSV and PNG go into the logger's
folder (``trainer.log_dir``).

The guard itself goes into ``configure_optimizers`` like any optimizer (it is one);
Lightning's automatic optimization passes it the closure it needs. The callback checks
at fit start the two setups where that cannot work (see :meth:`SuperLevelCallback.setup`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

try:
    import lightning.pytorch as pl
except ImportError as exc:  # the optional extra
    raise ImportError(
        "superlevel.integrations.lightning needs Lightning: pip install 'superlevel[lightning]'"
    ) from exc

from superlevel.integrations._common import (
    find_guard,
    find_superlevel,
    optimizer_chain,
    superlevel_stats,
)
from superlevel.stability import StabilityMonitor

__all__ = ["SuperLevelCallback"]


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

    Args:
        prefix: the name prefix of the logged values.
        optimizer_index: which of ``trainer.optimizers`` to watch.
        probe_batch: a fixed ``(x, y)`` batch for the monitor's probes (moved to the
            module's device); ``None``: no monitor.
        loss_fn: ``loss_fn(pl_module(x), y) -> scalar``, required with ``probe_batch``.
        csv_name: the monitor's CSV file name in the log folder.
        png_name: its figure's file name in the log folder.
        **monitor_kwargs: passed to :class:`StabilityMonitor` (``every``,
            ``sharpness_iters``, ``barrier_points``, ``norm_every``, ...).

    Example:
        >>> trainer = lightning.Trainer(callbacks=[SuperLevelCallback()])  # doctest: +SKIP
    """

    def __init__(
        self,
        prefix: str = "superlevel",
        *,
        optimizer_index: int = 0,
        probe_batch: tuple[Tensor, Tensor] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        csv_name: str = "stability.csv",
        png_name: str = "stability.png",
        **monitor_kwargs: Any,
    ) -> None:
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        if isinstance(optimizer_index, bool) or not isinstance(optimizer_index, int):
            raise ValueError(f"optimizer_index must be an int, got {optimizer_index!r}")
        if probe_batch is not None and (loss_fn is None or not callable(loss_fn)):
            raise ValueError(f"loss_fn must be callable when probe_batch is given: {loss_fn!r}")
        self.prefix = prefix
        self.optimizer_index = optimizer_index
        self.probe_batch = probe_batch
        self.loss_fn = loss_fn
        self.csv_name = csv_name
        self.png_name = png_name
        self.monitor_kwargs = monitor_kwargs
        self.monitor: StabilityMonitor | None = None
        self._optimizer: Any = None
        self._recorded_step = -1

    # -- checks -------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Find the optimizer; refuse what cannot work with a guard.

        A :class:`~superlevel.stability.LyapunovGuard` needs a closure on every
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
        self._optimizer = opt

    # -- monitor ------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Build the monitor (after a checkpoint restore: it starts at the restored params)."""
        self._recorded_step = trainer.global_step
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
            pl_module.log_dict(values, on_step=True, on_epoch=False, batch_size=1)
        loss = _loss_of(outputs)
        if self.monitor is not None and stepped and loss is not None:
            self.monitor.record(loss)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Flush the monitor's CSV and draw its PNG into the log folder."""
        if self.monitor is None:
            return
        self.monitor.flush()
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        self.monitor.plot(log_dir / self.png_name, title=f"{type(pl_module).__name__}")


def _loss_of(outputs: Any) -> Tensor | None:
    """The loss of a ``training_step`` output (a tensor or a mapping with ``"loss"``)."""
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"]
    return None
