"""StabilityMonitor: watch the Lyapunov decrease, curvature and level sets while training.

Three lines in any training loop::

    monitor = StabilityMonitor(model, optimizer, probe_batch=(x_probe, y_probe),
                               loss_fn=F.cross_entropy)
    ...
    loss.backward(); optimizer.step(); monitor.record(loss)
    ...
    monitor.to_csv("stability.csv"); monitor.plot("stability.png")

Per step (``record``), with no host sync: the loss ``L_t`` and the effective learning
rate (``SuperLevelSGD.stats()["effective_lr"]``, else the first group's ``lr``); every
``norm_every`` steps (default 10, as it needs a copy of the params) also the grad norm
``||g_t||`` and the update norm ``||theta_t - theta_{t-1}||``. These are written to a
preallocated device buffer and read back in one batch every ``flush_every`` steps (one
``tolist()``), where ``dV_t = L_t - L_{t-1}`` and the violations ``dV_t > tol`` are
derived on the host.

Every ``every`` steps (the *probe*), on the fixed ``probe_batch``, with the model in
``eval()`` mode: the sharpness ``lambda_max`` (:func:`~superlevel.stability.sharpness`),
the stability threshold of the optimizer at the current effective lr
(:mod:`~superlevel.stability.thresholds`) and the largest stable lr ``c / lambda_max``,
and the level-set probe: the barrier of the straight segment between the parameters at
the previous probe (``every`` steps ago) and now, for ``kind="sub"`` and ``"super"``
(:func:`superlevel.landscape.segment_barrier`). A positive sub-level barrier means the
two points are *not* in one connected sub-level set of the segment.
"""

from __future__ import annotations

import csv
import inspect
import math
import os
import shutil
import warnings
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from superlevel.stability.sharpness import check_solver_args, top_eigenvalue
from superlevel.stability.thresholds import adam_preconditioner, stability_rule

__all__ = ["StabilityMonitor"]

STEP_FIELDS = ("step", "loss", "dV", "violation", "grad_norm", "update_norm", "lr")
PROBE_FIELDS = (
    "sharpness",
    "preconditioned",
    "threshold",
    "stable_lr",
    "barrier_sub",
    "barrier_super",
)
GUARD_FIELDS = ("guard_accepted", "guard_applied", "guard_retries", "guard_dV")


class StabilityMonitor:
    """Record stability diagnostics of a training run; works with any optimizer.

    ``record(loss)`` takes the loss the step was computed from (batch ``t`` at the
    params before the update), so ``dV_t = L_t - L_{t-1}`` compares consecutive
    mini-batches and mixes the Lyapunov change with batch-to-batch noise; with a guard,
    ``guard_dV`` is the same-batch change.

    Args:
        model: the model being trained.
        optimizer: its optimizer (any ``torch.optim.Optimizer``).
        probe_batch: a fixed ``(x, y)`` batch for the probes; ``None`` disables them.
        loss_fn: ``loss_fn(output, target) -> scalar``; required with ``probe_batch``.
        every: probe period in steps (``0`` disables the probes). The default keeps
            the overhead small on an MNIST MLP (measured in ``benchmarks/``).
        sharpness_iters: Hessian-vector products per probe, at most.
        sharpness_tol: relative-change tolerance of the sharpness solver.
        sharpness_method: ``"power"`` or ``"lanczos"``.
        barrier_points: points on the segment per barrier (``0`` disables barriers).
        tol: a step is a violation when ``dV > tol``.
        flush_every: steps between host reads of the per-step values.
        guard: an optional :class:`~superlevel.stability.LyapunovGuard` whose last
            record is logged per step (accepted, applied, retries and ``guard_dV``, the
            same-batch change ``L1 - L0`` of the kept step, ``0`` when skipped). Unlike
            ``dV``, which compares consecutive mini-batches, ``guard_dV`` is the
            Lyapunov decrease the guard enforces.
        norm_every: record ``||g_t||`` and ``||theta_t - theta_{t-1}||`` every this many
            steps (``1``: every step, ``0``: never; steps not measured have ``None``).
            A measurement costs about five passes over the parameters' memory (a copy
            of the params at the step before, a read of the grads, a difference and a
            norm), which on a small CPU model is a few percent of a step: hence the
            default of 10.
        seed: seed of the sharpness start vector.
        keep: records held in memory, at most (the oldest are dropped beyond it; a record
            is ~0.5 kB, so the default bounds the monitor to ~50 MB); ``None``: all.
            :meth:`summary` and :attr:`violations` count every step regardless.
        stream_to: a CSV file that receives every record as it is flushed (created, or
            truncated, here). With it nothing is lost when records are dropped from
            memory: :meth:`to_csv` and :meth:`plot` then read the whole run from it.
            Without it a warning says when the first record is dropped.

    The optimizer may be a :class:`~superlevel.stability.LyapunovGuard`: the monitor
    then reads the inner optimizer (effective lr, stability rule) and logs the guard.

    Attributes:
        DEFAULT_EVERY: the default probe period (class attribute).
        violations: number of steps with ``dV > tol`` so far (after a flush).
    """

    DEFAULT_EVERY = 2000

    @classmethod
    def check_options(cls, **options: Any) -> None:
        """Check keyword options as the constructor would, before there is a model.

        For code that builds the monitor later (a framework callback at train start):
        a bad option fails where it is written. The constructor's defaults fill in what
        ``options`` leaves out.

        Raises:
            TypeError: a keyword the constructor does not take (named, with the list).
            ValueError: a bad value, named (as the constructor raises it).
        """
        params = inspect.signature(cls.__init__).parameters
        names = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(
                f"StabilityMonitor got unexpected keyword argument(s) {unknown}; "
                f"its options are {names}"
            )
        values = {n: params[n].default for n in names} | options
        checked = inspect.signature(_check_options).parameters
        _check_options(**{n: values[n] for n in checked})

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        probe_batch: tuple[Tensor, Tensor] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        every: int = DEFAULT_EVERY,
        sharpness_iters: int = 20,
        sharpness_tol: float = 1e-3,
        sharpness_method: str = "lanczos",
        barrier_points: int = 9,
        tol: float = 0.0,
        flush_every: int = 100,
        guard: Any = None,
        norm_every: int = 10,
        seed: int = 0,
        keep: int | None = 100_000,
        stream_to: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {model!r}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {optimizer!r}")
        _check_options(
            probe_batch=probe_batch, loss_fn=loss_fn, every=every,
            sharpness_iters=sharpness_iters, sharpness_tol=sharpness_tol,
            sharpness_method=sharpness_method, barrier_points=barrier_points, tol=tol,
            flush_every=flush_every, guard=guard, norm_every=norm_every, keep=keep,
        )  # fmt: skip
        from superlevel.stability.guard import LyapunovGuard

        if isinstance(optimizer, LyapunovGuard):
            guard = optimizer if guard is None else guard
            optimizer = optimizer.optimizer
        self.model = model
        self.optimizer = optimizer
        self.probe_batch = tuple(probe_batch) if probe_batch is not None else None
        self.loss_fn = loss_fn
        self.every = every if probe_batch is not None else 0
        self.sharpness_iters = sharpness_iters
        self.sharpness_tol = sharpness_tol
        self.sharpness_method = sharpness_method
        self.barrier_points = barrier_points
        self.tol = float(tol)
        self.flush_every = flush_every
        self.guard = guard
        self.seed = seed
        self.norm_every = norm_every
        self.violations = 0
        self.fields = STEP_FIELDS + PROBE_FIELDS + (GUARD_FIELDS if guard is not None else ())

        self._params = [p for p in model.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("model has no parameter with requires_grad=True")
        self._device = self._params[0].device
        self._data = [p.detach() for p in self._params]  # aliases of the param storage
        self._prev = [d.clone() for d in self._data]
        self._zero = torch.zeros((), device=self._device, dtype=self._params[0].dtype)
        # float64 records for float64 models, float32 otherwise
        self._dtype = torch.float64 if self._params[0].dtype == torch.float64 else torch.float32
        self._step = 0
        self._last_loss = math.nan
        self._records: deque[dict[str, Any]] = deque(maxlen=keep)
        self.keep = keep
        self.dropped = 0  # records that fell out of memory
        self._stored = 0  # records flushed so far
        self._probes = 0
        self._max: dict[str, float] = {}  # running maxima of the probe fields
        self.stream_to = Path(stream_to) if stream_to is not None else None
        if self.stream_to is not None:
            self.stream_to.parent.mkdir(parents=True, exist_ok=True)
            with self.stream_to.open("w", newline="") as fh:
                csv.DictWriter(fh, fieldnames=list(self.fields)).writeheader()
        # per pending step: (loss, lr, [||g||, ||dtheta||] or None, guard extras or None);
        # tensors stay on the device until the flush reads them all back at once
        self._pending: list[tuple[Any, Any, Tensor | None, dict[str, Any] | None]] = []
        self._anchor: Tensor | None = None
        if self.every and self.barrier_points:
            self._anchor = self._flat_params()

    # -- per step -----------------------------------------------------------------------
    def _effective_lr(self, key: str = "effective_lr") -> Tensor | float:
        """``stats()[key]`` of an optimizer that has one, else the first group's lr."""
        stats = getattr(self.optimizer, "stats", None)
        if callable(stats):
            return stats()[key]
        return self.optimizer.param_groups[0]["lr"]

    @staticmethod
    def _norm(tensors: list[Tensor]) -> Tensor:
        """``sqrt(sum_i ||t_i||^2)`` on the device: one ``_foreach_norm``, no host sync."""
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))

    def record(self, loss: Tensor | float) -> None:
        """Record one step; call it right after ``optimizer.step()`` with that step's loss.

        No host sync unless this step is a flush or a probe step. Per step the monitor
        only keeps a detached reference to the loss (and a copy of a tensor lr); every
        ``norm_every`` steps it also copies the params at the step before, then reads
        the grads and the difference of the params (``_foreach_*`` ops, whatever the
        number of tensors). It keeps aliases of the parameters' storage: create it
        after moving the model to its device.
        """
        value = _loss_value(loss)  # refused here, before it can break later flushes
        lr = self._effective_lr()
        # a tensor lr may be updated in place later (schedulers, the guard): snapshot it
        lr_value: Tensor | float = lr.detach().clone() if isinstance(lr, Tensor) else float(lr)
        norms: Tensor | None = None
        t = self._step + 1
        k = self.norm_every
        if k and t % k == 0:
            grads = [p.grad for p in self._params if p.grad is not None]
            torch._foreach_sub_(self._prev, self._data)  # prev <- theta_{t-1} - theta_t
            gnorm = self._norm(grads) if grads else self._zero  # no grads: ||g|| = 0
            norms = torch.stack([gnorm, self._norm(self._prev)])
        if k and (t + 1) % k == 0:  # the next step is measured: keep theta_t
            torch._foreach_copy_(self._prev, self._data)
        extras: dict[str, Any] | None = None
        if self.guard is not None and self.guard.last is not None:
            last = self.guard.last
            extras = {
                "guard_accepted": last.accepted,
                "guard_applied": last.applied,
                "guard_retries": last.retries,
                # same-batch Lyapunov change of the kept step (0 when skipped)
                "guard_dV": last.loss_after - last.loss_before if last.applied else 0.0,
            }
        self._pending.append((value, lr_value, norms, extras))
        self._step = t
        probe = self.every and t % self.every == 0
        # the probe goes into this step's record before it is stored (and streamed)
        found = self.probe() if probe else None
        if probe or len(self._pending) >= self.flush_every:
            self._flush(found)

    def _read_back(self) -> list[tuple[float, float, float | None, float | None]]:
        """``(loss, lr, ||g||, ||dtheta||)`` per pending step: every tensor in one sync."""
        tensors: list[Tensor] = []
        for value, lr, norms, _ in self._pending:
            tensors.extend(x.reshape(1) for x in (value, lr) if isinstance(x, Tensor))
            if norms is not None:
                tensors.append(norms)
        flat = iter(
            torch.cat([x.to(self._device, self._dtype) for x in tensors]).tolist()
            if tensors
            else []
        )
        out = []
        for value, lr, norms, _ in self._pending:
            loss_f = next(flat) if isinstance(value, Tensor) else value
            lr_f = next(flat) if isinstance(lr, Tensor) else lr
            g, u = (next(flat), next(flat)) if norms is not None else (None, None)
            out.append((loss_f, lr_f, g, u))
        return out

    def flush(self) -> None:
        """Read the pending per-step values back to the host (one sync) and store them."""
        self._flush(None)

    def _flush(self, probe: dict[str, Any] | None) -> None:
        """:meth:`flush`, with ``probe``'s fields added to the last pending step."""
        if not self._pending:
            return
        first = self._step - len(self._pending) + 1
        rows = self._read_back()
        out: list[dict[str, Any]] = []
        for i, ((loss, lr, gnorm, unorm), pending) in enumerate(
            zip(rows, self._pending, strict=True)
        ):
            dv = loss - self._last_loss if math.isfinite(self._last_loss) else None
            violation = dv is not None and dv > self.tol
            self.violations += int(violation)
            rec: dict[str, Any] = dict.fromkeys(self.fields)
            rec.update(
                step=first + i,
                loss=loss,
                dV=dv,
                violation=violation,
                grad_norm=gnorm,
                update_norm=unorm,
                lr=lr,
            )
            if pending[3]:
                rec.update(pending[3])
            out.append(rec)
            self._last_loss = loss
        if probe is not None:
            out[-1].update(probe)
        self._pending.clear()
        self._store(out)

    def _store(self, rows: list[dict[str, Any]]) -> None:
        """Keep ``rows`` in memory (dropping the oldest beyond ``keep``), stream them."""
        if self.stream_to is not None:
            with self.stream_to.open("a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(self.fields))
                writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
        for rec in rows:
            if rec["sharpness"] is not None:
                self._probes += 1
                for key in ("sharpness", "barrier_sub", "barrier_super"):
                    if rec[key] is not None:
                        self._max[key] = max(self._max.get(key, -math.inf), rec[key])
        full = self.keep is not None and len(self._records) + len(rows) > self.keep
        if full and self.dropped == 0 and self.stream_to is None:
            warnings.warn(
                f"StabilityMonitor keeps the last {self.keep} records in memory; older ones "
                f"are dropped from now on. Pass stream_to='run.csv' to keep every record on "
                f"disk, or keep=None to hold all of them in memory.",
                stacklevel=3,
            )
        if full:
            self.dropped += len(self._records) + len(rows) - self.keep
        self._records.extend(rows)
        self._stored += len(rows)

    # -- probes -------------------------------------------------------------------------
    def _flat_params(self) -> Tensor:
        from superlevel.landscape import flat_params

        return flat_params(self.model)

    def probe(self) -> dict[str, Any]:
        """Sharpness, threshold, stable lr and the sub/super barriers at the current params.

        Called automatically every ``every`` steps; callable by hand. The barrier compares
        against the parameters of the previous probe (the start for the first one).
        """
        if self.probe_batch is None or self.loss_fn is None:
            raise ValueError("probe() needs probe_batch and loss_fn")
        x, y = self.probe_batch
        loss_fn = self.loss_fn
        rule = stability_rule(self.optimizer)
        precond = None
        if rule is not None and rule.preconditioned:
            # Adam: the threshold is for the sharpness of P^-1 H; no state yet: no rule
            precond = adam_preconditioner(self.optimizer, self._params)
            rule = rule if precond is not None else None
        res = top_eigenvalue(
            lambda: loss_fn(self.model(x), y),
            self._params,
            self.sharpness_iters,
            self.sharpness_tol,
            seed=self.seed,
            method=self.sharpness_method,
            model=self.model,
            precondition=precond,
        )
        out: dict[str, Any] = dict.fromkeys(PROBE_FIELDS)
        out["sharpness"] = res.value
        out["preconditioned"] = precond is not None
        if rule is not None:
            eff = float(self._effective_lr())
            a_t = float(self._effective_lr("lr"))  # the rate of a decoupled decay
            out["threshold"] = rule.threshold(eff, lr=a_t)
            out["stable_lr"] = rule.max_lr(res.value, lr=a_t)
        if self.barrier_points:
            out.update(self._barriers())
        return out

    def _barriers(self) -> dict[str, float]:
        from superlevel.landscape import model_loss_fn, path_barrier, segment_barrier

        now = self._flat_params()
        anchor = self._anchor if self._anchor is not None else now
        f = model_loss_fn(self.model, self.probe_batch, self.loss_fn, bn="eval")
        # one pass over the segment serves both kinds
        res = segment_barrier(f, anchor, now, points=self.barrier_points, kind="sub")
        self._anchor = now
        return {
            "barrier_sub": float(res.barrier),
            "barrier_super": path_barrier(res.losses, "super"),
        }

    # -- export -------------------------------------------------------------------------
    @property
    def records(self) -> list[dict[str, Any]]:
        """The records in memory (flushes first), one dict per step with :attr:`fields` keys.

        The last ``keep`` steps (all of them with ``keep=None``); :meth:`all_records`
        also reads the dropped ones back from ``stream_to``. Values not measured at a
        step (probe fields between probes, ``dV`` at the first step) are ``None``.
        """
        self.flush()
        return [dict(r) for r in self._records]

    def all_records(self) -> list[dict[str, Any]]:
        """Every record of the run: from ``stream_to`` when records were dropped."""
        recs = self.records
        if self.dropped and self.stream_to is not None:
            with self.stream_to.open(newline="") as fh:
                return [_parse_row(row) for row in csv.DictReader(fh)]
        return recs

    def summary(self) -> dict[str, Any]:
        """Totals over every step (dropped ones too): steps, violations, probes, maxima."""
        self.flush()
        return {
            "steps": self._stored,
            "violations": self.violations,
            "violation_rate": self.violations / max(self._stored - 1, 1),
            "probes": self._probes,
            "max_sharpness": self._max.get("sharpness"),
            "max_barrier_sub": self._max.get("barrier_sub"),
            "max_barrier_super": self._max.get("barrier_super"),
        }

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the records as CSV (header = :attr:`fields`; ``None`` -> empty cell).

        With ``stream_to`` the streamed file (the whole run) is copied; otherwise the
        records in memory are written.
        """
        path = Path(path)
        self.flush()
        if self.stream_to is not None:
            if path.resolve() != self.stream_to.resolve():
                shutil.copyfile(self.stream_to, path)
            return path
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(self.fields))
            writer.writeheader()
            for rec in self.records:
                writer.writerow({k: ("" if v is None else v) for k, v in rec.items()})
        return path

    def to_tensorboard(self, writer_or_logdir: Any, prefix: str = "stability") -> None:
        """Write every numeric record as a TensorBoard scalar ``<prefix>/<field>``.

        Args:
            writer_or_logdir: a ``SummaryWriter`` (anything with ``add_scalar``) or a
                directory for a new one (needs the optional ``tensorboard`` package).
        """
        writer = writer_or_logdir
        own = False
        if not hasattr(writer, "add_scalar"):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # optional dependency
                raise ImportError(
                    "to_tensorboard needs the 'tensorboard' package: "
                    "pip install 'superlevel[tensorboard]'"
                ) from exc
            writer, own = SummaryWriter(log_dir=str(writer_or_logdir)), True
        for rec in self.all_records():
            for key in self.fields[1:]:
                val = rec[key]
                if val is not None:
                    writer.add_scalar(f"{prefix}/{key}", float(val), rec["step"])
        if own:
            writer.close()

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> Path:
        """Draw one PNG: loss and dV; effective lr vs the stable lr; the barriers.

        Needs matplotlib (imported here, with the non-interactive Agg backend).
        """
        from superlevel.stability._plot import plot_records

        return plot_records(self.all_records(), Path(path), title=title)


def _loss_value(loss: Any) -> Tensor | float:
    """A detached one-element loss tensor or a float; ``ValueError`` for anything else."""
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(
                f"record() needs a scalar loss, got a tensor of shape {tuple(loss.shape)}"
            )
        return loss.detach()
    if isinstance(loss, bool) or not isinstance(loss, (int, float)):
        raise ValueError(f"record() needs a scalar loss, got {type(loss).__name__}")
    return float(loss)


def _check_options(
    *,
    probe_batch: Any,
    loss_fn: Any,
    every: Any,
    sharpness_iters: Any,
    sharpness_tol: Any,
    sharpness_method: Any,
    barrier_points: Any,
    tol: Any,
    flush_every: Any,
    guard: Any,
    norm_every: Any,
    keep: Any,
) -> None:
    """The constructor's checks of its options (everything but the model and optimizer)."""
    for name, val in (
        ("every", every),
        ("barrier_points", barrier_points),
        ("norm_every", norm_every),
    ):
        if isinstance(val, bool) or not isinstance(val, int) or val < 0:
            raise ValueError(f"{name} must be an int >= 0, got {val!r}")
    if barrier_points == 1 or barrier_points == 2:
        raise ValueError(f"barrier_points must be 0 or >= 3, got {barrier_points!r}")
    if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
        raise ValueError(f"flush_every must be an int >= 1, got {flush_every!r}")
    if not isinstance(tol, (int, float)) or not math.isfinite(tol):
        raise ValueError(f"tol must be a finite number, got {tol!r}")
    if probe_batch is not None:
        if not (isinstance(probe_batch, (tuple, list)) and len(probe_batch) == 2):
            raise ValueError(f"probe_batch must be an (x, y) pair, got {type(probe_batch)}")
        if loss_fn is None or not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable when probe_batch is given: {loss_fn!r}")
        _check_probe_batch(*probe_batch)
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be an int >= 1 or None, got {keep!r}")
    try:
        check_solver_args(sharpness_iters, sharpness_tol, sharpness_method)
    except ValueError as exc:
        raise ValueError(f"sharpness_{exc}") from None
    if guard is not None and not hasattr(guard, "last"):
        raise ValueError(f"guard must be a LyapunovGuard, got {guard!r}")


def _check_probe_batch(x: Any, y: Any) -> None:
    """Refuse an empty probe batch (its loss is NaN) or inputs and targets of unequal size."""
    n = len(x) if isinstance(x, Tensor) and x.ndim else None
    if n == 0:
        raise ValueError(f"probe_batch is empty: x has shape {tuple(x.shape)}")
    if n is not None and isinstance(y, Tensor) and y.ndim and len(y) != n:
        raise ValueError(f"probe_batch has {n} inputs but {len(y)} targets")


def _parse_row(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row of :meth:`StabilityMonitor.to_csv` back as a record."""
    out: dict[str, Any] = {}
    for key, text in row.items():
        if text == "":
            out[key] = None
        elif text in ("True", "False"):
            out[key] = text == "True"
        elif key in ("step", "guard_retries"):
            out[key] = int(text)
        else:
            out[key] = float(text)
    return out
