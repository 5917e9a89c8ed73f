"""A real lightning.Trainer on real MNIST: stats logged, exact resume, the guard as optimizer."""

from __future__ import annotations

import csv
import math
import os

import pytest
import torch
from torch import nn

pytest.importorskip("lightning", reason="the lightning extra is not installed")
import lightning.pytorch as pl  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402

from superlevel.data import MissingDataError, load_mnist  # noqa: E402
from superlevel.data.tensors import epoch_permutation  # noqa: E402
from superlevel.integrations import find_guard, find_superlevel  # noqa: E402
from superlevel.integrations.lightning import SuperLevelCallback  # noqa: E402
from superlevel.optim import SuperLevelSGD  # noqa: E402
from superlevel.stability import LyapunovGuard  # noqa: E402

N_TRAIN, BATCH = 2048, 64  # 32 steps per epoch
STEPS_PER_EPOCH = N_TRAIN // BATCH
LR, DECAY = 0.5, 2e-3


@pytest.fixture(scope="module")
def mnist():
    try:
        data = load_mnist(os.environ.get("SUPERLEVEL_DATA"))
    except MissingDataError as exc:
        pytest.skip(f"real MNIST is not in the data directory ($SUPERLEVEL_DATA): {exc}")
    x = torch.from_numpy(data["train_images"][:N_TRAIN].copy()).float().div(255).flatten(1)
    y = torch.from_numpy(data["train_labels"][:N_TRAIN].copy()).long()
    return x, y


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch (Lightning calls set_epoch): resumable data order."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(epoch_permutation(self.n, self.seed, self.epoch).tolist())

    def __len__(self) -> int:
        return self.n


class MLP(pl.LightningModule):
    def __init__(self, guarded: bool = False, lr: float = LR) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
        self.guarded, self.lr = guarded, lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        opt = SuperLevelSGD(self.parameters(), lr=self.lr, decay=DECAY)
        return LyapunovGuard(opt, max_retries=30, model=self) if self.guarded else opt


def _loader(mnist):
    ds = torch.utils.data.TensorDataset(*mnist)
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=EpochSampler(len(ds)))


def _trainer(tmp_path, epochs, callbacks=(), name="run", **kw):
    """A quiet CPU trainer; a CSVLogger under ``tmp_path`` (none when it is ``None``)."""
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        logger=CSVLogger(tmp_path, name=name) if tmp_path is not None else False,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        **kw,
    )


def _metrics(trainer) -> list[dict[str, str]]:
    with open(os.path.join(trainer.logger.log_dir, "metrics.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def test_callback_logs_the_real_rate_and_writes_the_monitor_files(tmp_path, mnist):
    x, y = mnist
    cb = SuperLevelCallback(
        probe_batch=(x[:128], y[:128]),
        loss_fn=nn.functional.cross_entropy,
        every=64,
        sharpness_iters=5,
        barrier_points=3,
    )
    model = MLP()
    trainer = _trainer(tmp_path, 6, [cb])
    trainer.fit(model, _loader(mnist))
    steps = 6 * STEPS_PER_EPOCH
    assert trainer.global_step == steps
    rows = [r for r in _metrics(trainer) if r.get("superlevel/lr")]
    assert len(rows) == steps  # every step logged (log_every_n_steps=1)
    for r in rows:
        t = float(r["superlevel/step"])  # t after the step; a_t was computed at t - 1
        assert float(r["superlevel/lr"]) == pytest.approx(LR * math.exp(-DECAY * (t - 1)), rel=1e-6)
        eff = float(r["superlevel/lr"]) * float(r["superlevel/scale"])
        assert float(r["superlevel/effective_lr"]) == pytest.approx(eff, rel=1e-6)
        assert float(r["superlevel/grad_norm"]) > 0
    last = rows[-1]
    assert float(last["superlevel/step"]) == steps
    # what LearningRateMonitor would show: group["lr"] is still a0
    assert find_superlevel(trainer.optimizers[0]).param_groups[0]["lr"] == LR
    assert float(last["superlevel/lr"]) < 0.7 * LR
    # the monitor's CSV (every step, 3 probes) and PNG are in the logger's folder
    with open(os.path.join(trainer.log_dir, "stability.csv"), newline="") as fh:
        recs = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in recs] == list(range(1, steps + 1))
    assert sum(r["sharpness"] != "" for r in recs) == steps // 64
    assert os.path.getsize(os.path.join(trainer.log_dir, "stability.png")) > 0
    assert cb.monitor.summary()["steps"] == steps


def _state(model, trainer):
    opt = trainer.optimizers[0]
    stats = {k: float(v) for k, v in find_superlevel(opt).stats().items()}
    guard = find_guard(opt)
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        stats,
        dict(guard.counters) if guard is not None else None,
    )


@pytest.mark.parametrize("guarded", [False, True], ids=["superlevel", "guarded"])
def test_checkpoint_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, mnist, guarded):
    lr = 3.0 if guarded else LR  # large enough that the guard backtracks
    whole = MLP(guarded, lr)
    t_whole = _trainer(tmp_path, 4, [SuperLevelCallback()], "whole")
    t_whole.fit(whole, _loader(mnist))

    first = MLP(guarded, lr)
    t_first = _trainer(tmp_path, 2, [SuperLevelCallback()], "first")
    t_first.fit(first, _loader(mnist))
    ckpt = tmp_path / "half.ckpt"
    t_first.save_checkpoint(ckpt)

    resumed = MLP(guarded, lr)
    t_resumed = _trainer(tmp_path, 4, [SuperLevelCallback()], "resumed")
    t_resumed.fit(resumed, _loader(mnist), ckpt_path=ckpt)

    params, stats, counters = _state(whole, t_whole)
    params2, stats2, counters2 = _state(resumed, t_resumed)
    assert t_resumed.global_step == t_whole.global_step == 4 * STEPS_PER_EPOCH
    assert params.keys() == params2.keys()
    for k in params:
        assert torch.equal(params[k], params2[k]), k  # bitwise
    assert stats == stats2  # t, a_t, eta_t, the norm: identical floats
    assert counters == counters2
    if guarded:
        # one global_step per guarded step, whatever the retries: none was skipped here,
        # so every global step is an accepted step and the optimizer's t counts them
        assert counters["retries"] > 0 and counters["skips"] == counters["forced"] == 0
        accepted = counters["steps"] - counters["skips"] - counters["forced"]
        assert t_whole.global_step == accepted == stats["step"]


def test_guard_refuses_gradient_accumulation(tmp_path, mnist):
    trainer = _trainer(None, None, [SuperLevelCallback()], max_steps=2, accumulate_grad_batches=2)
    with pytest.raises(ValueError, match="accumulate_grad_batches=2"):
        trainer.fit(MLP(guarded=True), _loader(mnist))


class ManualMLP(MLP):
    """Manual optimization: the user calls the guard's step with a closure."""

    def __init__(self) -> None:
        super().__init__(guarded=True, lr=3.0)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt = self.optimizers()

        def closure():
            opt.zero_grad()
            loss = nn.functional.cross_entropy(self(x), y)
            self.manual_backward(loss)
            return loss

        return opt.step(closure=closure)


def test_manual_optimization_counts_one_global_step_per_guarded_step(tmp_path, mnist):
    trainer = _trainer(None, None, [SuperLevelCallback()], max_steps=20)
    trainer.fit(ManualMLP(), _loader(mnist))
    guard = find_guard(trainer.optimizers[0])
    assert guard.counters["retries"] > 0  # trials beyond the first happened...
    assert trainer.global_step == guard.counters["steps"] == 20  # ...and did not count


# ---------------------------------------------------------------- what changes the rule
class ScheduledMLP(MLP):
    """configure_optimizers returns a scheduler (``factor(step)``), per optimizer step."""

    def __init__(self, factor, decay: float = DECAY) -> None:
        super().__init__()
        self.factor, self.decay = factor, decay

    def configure_optimizers(self):
        opt = SuperLevelSGD(self.parameters(), lr=self.lr, decay=self.decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _decaying(step: int) -> float:
    return 0.9**step


def _warmup(step: int) -> float:
    return min(1.0, (step + 1) / 10)


class NormSeen(pl.Callback):
    """The norm SuperLevelSGD used, and the gradient norm before Lightning's clipping."""

    def __init__(self) -> None:
        self.seen: list[float] = []
        self.true: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # Lightning calls this before it clips: the true norm
        grads = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
        self.true.append(float(torch.stack(grads).norm()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(float(find_superlevel(trainer.optimizers[0]).stats()["grad_norm"]))


def test_gradient_clip_val_is_refused_before_any_step_and_warned_with_strict_false(mnist):
    model = MLP()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(None, None, [SuperLevelCallback()], max_steps=4, gradient_clip_val=1.0)
    with pytest.raises(ValueError, match=r"gradient_clip_val=1\).*gradient_clip_val=None"):
        trainer.fit(model, _loader(mnist))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    # by value as well: the clamped gradient's norm is not the true one
    trainer = _trainer(
        None, None, [SuperLevelCallback()], max_steps=4, gradient_clip_val=0.01,
        gradient_clip_algorithm="value",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"clamps every gradient element to \[-0.01, 0.01\]"):
        trainer.fit(MLP(), _loader(mnist))
    # strict=False: a warning, and the clip happens (the rule never sees the true norm)
    probe = NormSeen()
    cb = SuperLevelCallback(strict=False)
    trainer = _trainer(None, None, [cb, probe], max_steps=8, gradient_clip_val=0.5)
    with pytest.warns(UserWarning, match="changes SuperLevelSGD's rule"):
        trainer.fit(MLP(lr=3.0), _loader(mnist))
    assert max(probe.seen) <= 0.5 + 1e-6 < max(probe.true)
    assert len(cb.problems) == 1


def test_a_decaying_scheduler_is_refused_a_warmup_is_not(mnist):
    trainer = _trainer(None, None, [SuperLevelCallback()], max_steps=4)
    with pytest.raises(ValueError, match=r"LambdaLR takes the lr factor from 1 down to .* step 4"):
        trainer.fit(ScheduledMLP(_decaying), _loader(mnist))
    for model in (ScheduledMLP(_warmup), ScheduledMLP(_decaying, decay=0.0)):
        trainer = _trainer(None, None, [SuperLevelCallback()], max_steps=4)
        trainer.fit(model, _loader(mnist))  # a rise only, or the scheduler's decay alone
        assert trainer.global_step == 4


def test_counts_are_logged_as_float64_without_lightnings_cast_warning(mnist):
    import warnings

    from lightning.pytorch.trainer.connectors.logger_connector import result

    result.warning_cache.clear()  # it says each message once per process
    trainer = _trainer(None, None, [SuperLevelCallback()], max_steps=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(MLP(), _loader(mnist))
    casts = [str(w.message) for w in caught if "superlevel/" in str(w.message)]
    assert casts == []
    logged = trainer.logged_metrics
    assert logged["superlevel/step"].dtype == torch.float64
    assert logged["superlevel/step"].item() == 3.0
    assert logged["superlevel/skipped"].dtype == torch.float64


def test_guard_skips_count_as_global_steps_and_are_said(mnist):
    class Hopeless(MLP):  # far too large an lr, no retry: every call is skipped
        def configure_optimizers(self):
            opt = SuperLevelSGD(self.parameters(), lr=1e4)
            return LyapunovGuard(opt, max_retries=0, model=self)

    model = Hopeless()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = _trainer(None, None, [SuperLevelCallback()], max_steps=6)
    with pytest.warns(UserWarning) as record:
        trainer.fit(model, _loader(mnist))
    messages = [str(w.message) for w in record]
    assert sum("skipped a step at global_step 1" in m for m in messages) == 1  # once
    assert any("6 global steps, 6 skipped" in m and "no step" in m for m in messages)
    assert trainer.global_step == 6 and find_guard(trainer.optimizers[0]).counters["skips"] == 6
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"prefix": None}, TypeError, "prefix"),
        ({"prefix": ""}, ValueError, "prefix"),
        ({"strict": "no"}, TypeError, "strict"),
        ({"optimizer_index": -1}, ValueError, "optimizer_index"),
        ({"optimizer_index": 1.0}, TypeError, "optimizer_index"),
        ({"csv_name": "sub/x.csv"}, ValueError, "csv_name"),
        ({"png_name": "stability.csv"}, ValueError, "differ"),
        ({"every": 5}, ValueError, "probe_batch"),
        ({"loss_fn": nn.functional.mse_loss}, ValueError, "probe_batch"),
        ({"probe": True, "evry": 5}, TypeError, "evry"),
        ({"probe": True, "every": -1}, ValueError, "every"),
        ({"probe": True, "sharpness_method": "newton"}, ValueError, "sharpness_method"),
        ({"probe": True, "guard": None}, TypeError, "guard"),
    ],
)
def test_bad_callback_arguments_fail_at_construction(kwargs, error, named):
    kwargs = dict(kwargs)
    if kwargs.pop("probe", False):
        kwargs.update(probe_batch=(torch.zeros(4, 784), torch.zeros(4).long()),
                      loss_fn=nn.functional.cross_entropy)  # fmt: skip
    with pytest.raises(error, match=named):
        SuperLevelCallback(**kwargs)
