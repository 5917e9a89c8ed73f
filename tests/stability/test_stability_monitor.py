"""StabilityMonitor: per-step records, probes at the right steps, exports and the plot."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from superlevel.landscape import flat_params, model_loss_fn, path_barrier, segment_barrier
from superlevel.stability import (
    LyapunovGuard,
    StabilityMonitor,
    adam_preconditioner,
    sharpness,
    top_eigenvalue,
)
from superlevel.stability.monitor import PROBE_FIELDS, STEP_FIELDS

F = nn.functional


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    return model, x, y


def _train(model, opt, monitor, x, y, steps, batch=16, on_step=None):
    losses = []
    for t in range(steps):
        i = (t * batch) % len(x)
        xb, yb = x[i : i + batch], y[i : i + batch]
        opt.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        monitor.record(loss)
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(t + 1)
    return losses


def test_per_step_records_match_a_hand_computation():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    mon = StabilityMonitor(model, opt, every=0, flush_every=7, norm_every=1)
    thetas = [flat_params(model)]
    grad_norms = []

    def on_step(_t):
        thetas.append(flat_params(model))
        grad_norms.append(float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm()))

    losses = _train(model, opt, mon, x, y, 20, on_step=on_step)
    recs = mon.records
    assert [r["step"] for r in recs] == list(range(1, 21))
    assert set(recs[0]) == set(STEP_FIELDS + PROBE_FIELDS)
    assert recs[0]["dV"] is None and not recs[0]["violation"]
    for t, r in enumerate(recs):
        assert r["loss"] == pytest.approx(losses[t], rel=1e-6)
        assert r["grad_norm"] == pytest.approx(grad_norms[t], rel=1e-5)
        assert r["update_norm"] == pytest.approx(
            float((thetas[t + 1] - thetas[t]).norm()), rel=1e-5
        )
        assert r["lr"] == 0.5
        if t:
            assert r["dV"] == pytest.approx(losses[t] - losses[t - 1], rel=1e-5, abs=1e-6)
            assert r["violation"] == (r["dV"] > 0)
        assert all(r[k] is None for k in PROBE_FIELDS)
    assert mon.violations == sum(r["violation"] for r in recs) > 0


def test_probes_run_every_k_steps_and_match_direct_calls():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    probe = (x[:32], y[:32])
    mon = StabilityMonitor(
        model, opt, probe_batch=probe, loss_fn=F.cross_entropy, every=4, barrier_points=5
    )
    anchors = {0: flat_params(model)}
    direct = {}

    def on_step(t):
        if t % 4 == 0:
            anchors[t] = flat_params(model)
            direct[t] = sharpness(
                lambda: F.cross_entropy(model(probe[0]), probe[1]),
                model,
                model=model,
                method="lanczos",
            )

    _train(model, opt, mon, x, y, 12, on_step=on_step)
    recs = mon.records
    probed = [r["step"] for r in recs if r["sharpness"] is not None]
    assert probed == [4, 8, 12]
    f = model_loss_fn(model, probe, F.cross_entropy)
    for t in probed:
        r = recs[t - 1]
        assert r["sharpness"] == direct[t]  # same seed, same point: identical
        assert r["threshold"] == pytest.approx(2.0 / 0.3)
        assert r["stable_lr"] == pytest.approx(2.0 / r["sharpness"])
        seg = segment_barrier(f, anchors[t - 4], anchors[t], points=5, kind="sub")
        assert r["barrier_sub"] == pytest.approx(seg.barrier, abs=1e-6)
        assert r["barrier_super"] == pytest.approx(path_barrier(seg.losses, "super"), abs=1e-6)
    summary = mon.summary()
    assert summary["probes"] == 3 and summary["steps"] == 12
    assert summary["max_sharpness"] == max(direct.values())


def test_adam_gets_preconditioned_sharpness_and_its_threshold():
    model, x, y = _setup()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.999))
    mon = StabilityMonitor(
        model, opt, probe_batch=(x, y), loss_fn=F.cross_entropy, every=3, barrier_points=0
    )
    _train(model, opt, mon, x, y, 3)
    r = mon.records[-1]
    precond = adam_preconditioner(opt, list(model.parameters()))
    direct = top_eigenvalue(
        lambda: F.cross_entropy(model(x), y),
        model,
        20,
        1e-3,
        method="lanczos",
        model=model,
        precondition=precond,
    )
    assert r["preconditioned"] is True
    assert r["sharpness"] == direct.value
    assert r["threshold"] == pytest.approx(38.0 / 1e-2)  # (2 + 2*0.9) / (0.1 * lr)
    assert r["stable_lr"] == pytest.approx(38.0 / r["sharpness"])
    assert r["barrier_sub"] is None


def test_unknown_optimizer_gets_raw_sharpness_without_a_threshold():
    model, x, y = _setup()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    mon = StabilityMonitor(
        model, opt, probe_batch=(x, y), loss_fn=F.cross_entropy, every=2, barrier_points=0
    )
    _train(model, opt, mon, x, y, 2)
    r = mon.records[-1]
    assert r["sharpness"] > 0 and r["preconditioned"] is False
    assert r["threshold"] is None and r["stable_lr"] is None


def test_tensor_lr_and_guard_fields_are_recorded():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=torch.tensor(20.0))
    guard = LyapunovGuard(opt, max_retries=3)
    mon = StabilityMonitor(model, opt, every=0, guard=guard)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    seen = []
    for _ in range(6):
        mon.record(guard.step(closure))
        last = guard.last
        dv = last.loss_after - last.loss_before if last.applied else 0.0
        seen.append((last.accepted, last.applied, last.retries, dv))
    recs = mon.records
    assert all(r["lr"] == 20.0 for r in recs)
    got = [
        (r["guard_accepted"], r["guard_applied"], r["guard_retries"], r["guard_dV"]) for r in recs
    ]
    assert got == seen
    assert all(r["guard_dV"] <= 0.0 for r in recs)  # the guard's tol is 0
    assert sum(r["guard_retries"] for r in recs) == guard.counters["retries"] > 0


def test_superlevel_effective_lr_comes_from_stats():
    from superlevel.optim import SuperLevelSGD

    model, x, y = _setup()
    opt = SuperLevelSGD(model.parameters(), lr=0.5, decay=0.01)
    mon = StabilityMonitor(
        model, opt, probe_batch=(x, y), loss_fn=F.cross_entropy, every=5, barrier_points=0
    )
    eff = []
    _train(
        model, opt, mon, x, y, 5, on_step=lambda t: eff.append(float(opt.stats()["effective_lr"]))
    )
    recs = mon.records
    assert [r["lr"] for r in recs] == pytest.approx(eff, rel=1e-6)
    assert recs[-1]["threshold"] == pytest.approx(2.0 / eff[-1], rel=1e-6)


def test_csv_export_and_plot(tmp_path):
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    mon = StabilityMonitor(
        model, opt, probe_batch=(x, y), loss_fn=F.cross_entropy, every=5, barrier_points=3
    )
    _train(model, opt, mon, x, y, 10)
    path = mon.to_csv(tmp_path / "s.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(mon.fields)
    recs = mon.records
    assert len(rows) == len(recs) == 10
    for row, rec in zip(rows, recs, strict=True):
        for key in ("loss", "grad_norm", "sharpness"):
            if rec[key] is None:
                assert row[key] == ""
            else:
                assert float(row[key]) == rec[key]
    png = mon.plot(tmp_path / "fig" / "s.png")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_tensorboard_export_to_a_writer():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = StabilityMonitor(model, opt, every=0)
    _train(model, opt, mon, x, y, 3)

    class Writer:
        def __init__(self):
            self.calls = []

        def add_scalar(self, tag, value, step):
            self.calls.append((tag, value, step))

    w = Writer()
    mon.to_tensorboard(w)
    assert ("stability/loss", mon.records[2]["loss"], 3) in w.calls
    assert not any(tag == "stability/dV" and step == 1 for tag, _, step in w.calls)


def test_tensorboard_missing_gives_a_clear_import_error(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorboard is installed")
    model, _, _ = _setup()
    mon = StabilityMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1), every=0)
    with pytest.raises(ImportError, match="tensorboard"):
        mon.to_tensorboard(tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"every": -1}, "every"),
        ({"barrier_points": 2}, "barrier_points"),
        ({"flush_every": 0}, "flush_every"),
        ({"norm_every": -2}, "norm_every"),
        ({"tol": math.nan}, "tol"),
        ({"probe_batch": (1, 2)}, "loss_fn"),
        ({"probe_batch": (1, 2, 3), "loss_fn": F.mse_loss}, "probe_batch"),
        ({"sharpness_method": "qr"}, "sharpness_method"),
        ({"sharpness_iters": 0}, "sharpness_iters"),
        ({"sharpness_tol": -1.0}, "sharpness_tol"),
        ({"guard": object()}, "guard"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, name):
    model, _, _ = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=name):
        StabilityMonitor(model, opt, **kwargs)
    with pytest.raises(ValueError, match="optimizer"):
        StabilityMonitor(model, "sgd")


def test_norms_every_k_steps_measure_the_step_before():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    mon = StabilityMonitor(model, opt, every=0, norm_every=3)
    thetas = [flat_params(model)]
    _train(model, opt, mon, x, y, 10, on_step=lambda t: thetas.append(flat_params(model)))
    recs = mon.records
    measured = [r["step"] for r in recs if r["update_norm"] is not None]
    assert measured == [3, 6, 9]
    assert [r["step"] for r in recs if r["grad_norm"] is not None] == measured
    for t in measured:
        expected = float((thetas[t] - thetas[t - 1]).norm())
        assert recs[t - 1]["update_norm"] == pytest.approx(expected, rel=1e-5)


def test_norms_can_be_switched_off():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = StabilityMonitor(model, opt, every=0, norm_every=0)
    losses = _train(model, opt, mon, x, y, 4)
    recs = mon.records
    assert all(r["grad_norm"] is None and r["update_norm"] is None for r in recs)
    assert [r["loss"] for r in recs] == pytest.approx(losses, rel=1e-6)


# -- defects of the first version: each test failed before the fix ------------------------


def test_a_bad_record_raises_and_the_monitor_stays_usable():
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = StabilityMonitor(model, opt, flush_every=2)
    _train(model, opt, monitor, x, y, 1)
    with pytest.raises(ValueError, match=r"scalar loss.*\(4,\)"):
        monitor.record(torch.ones(4))
    with pytest.raises(ValueError, match="scalar loss"):
        monitor.record("0.5")
    _train(model, opt, monitor, x, y, 3)
    recs = monitor.records
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) for r in recs)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ((torch.empty(0, 6), torch.empty(0, dtype=torch.long)), "empty"),
        ((torch.ones(4, 6), torch.zeros(3, dtype=torch.long)), "4 inputs but 3"),
    ],
    ids=["empty", "mismatch"],
)
def test_a_bad_probe_batch_is_refused_at_construction(batch, match):
    model, _, _ = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=match):
        StabilityMonitor(model, opt, probe_batch=batch, loss_fn=F.cross_entropy)


def _monitored_run(tmp_path, **kw):
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    monitor = StabilityMonitor(
        model,
        opt,
        probe_batch=(x[:16], y[:16]),
        loss_fn=F.cross_entropy,
        every=4,
        sharpness_iters=5,
        barrier_points=3,
        flush_every=3,
        norm_every=2,
        **kw,
    )
    _train(model, opt, monitor, x, y, 13)
    return monitor


def test_memory_keeps_a_window_and_the_stream_keeps_everything(tmp_path):
    full = _monitored_run(tmp_path, keep=None)
    with pytest.warns(UserWarning, match="keeps the last 5 records"):
        capped = _monitored_run(tmp_path, keep=5)
    assert [r["step"] for r in capped.records] == list(range(9, 14))
    assert capped.dropped == 8
    assert capped.summary() == full.summary()  # totals count the dropped steps too
    assert full.summary()["steps"] == 13 and full.summary()["probes"] == 3

    stream = tmp_path / "run" / "stream.csv"
    streamed = _monitored_run(tmp_path, keep=5, stream_to=stream)  # no warning: nothing lost
    assert len(streamed.records) == 5
    assert streamed.all_records() == full.records
    full.to_csv(tmp_path / "full.csv")
    streamed.to_csv(tmp_path / "copy.csv")
    assert (tmp_path / "copy.csv").read_text() == (tmp_path / "full.csv").read_text()
    assert stream.read_text() == (tmp_path / "full.csv").read_text()
    streamed.plot(tmp_path / "all.png")
    assert (tmp_path / "all.png").stat().st_size > 0
    with pytest.raises(ValueError, match="keep"):
        _monitored_run(tmp_path, keep=0)


def test_a_guard_passed_as_the_optimizer_is_unwrapped():
    from superlevel.optim import SuperLevelSGD

    model, x, y = _setup()
    opt = SuperLevelSGD(model.parameters(), lr=0.5, decay=0.01)
    guard = LyapunovGuard(opt)
    monitor = StabilityMonitor(
        model,
        guard,
        probe_batch=(x, y),
        loss_fn=F.cross_entropy,
        every=2,
        sharpness_iters=3,
        barrier_points=0,
    )
    assert monitor.optimizer is opt and monitor.guard is guard
    for t in range(2):
        xb, yb = x[t * 16 : (t + 1) * 16], y[t * 16 : (t + 1) * 16]

        def closure(xb=xb, yb=yb):
            guard.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            return loss

        monitor.record(guard.step(closure))
    rec = monitor.records[-1]
    assert rec["lr"] == pytest.approx(float(opt.stats()["effective_lr"]))
    assert rec["guard_accepted"] is not None and rec["threshold"] is not None
