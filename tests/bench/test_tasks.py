"""The task registry: every task builds and learns; options, seeds, splits and errors."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from superlevel.bench.task import Budget, TaskInstance
from superlevel.bench.tasks import (
    TASKS,
    TaskSpec,
    UnknownNameError,
    build_task,
    get_task,
    task_names,
)
from superlevel.data import cifar
from superlevel.data.tensors import imbalance_counts

ALL_TASKS = {
    "quadratic",
    "rosenbrock",
    "multiwell",
    "digits_mlp",
    "mnist1d_mlp",
    "mnist1d_cnn",
    "mnist_logreg",
    "mnist_mlp",
    "mnist_cnn",
    "fmnist_2c2d",
    "cifar10_3c3d",
    "char_lstm",
    "char_transformer",
}
# Batch-trained tasks above; the RL tasks (episodes, PPO minibatches) are tested in tests/rl.
RL_TASKS = {"cartpole_novel", "cartpole_noisy", "repeat_previous"}
TINY = Budget(batch_size=16, epochs=1, max_train_examples=64)
REAL_FOLDER = {"mnist": "mnist", "fashion-mnist": "fashion-mnist", "text": "text"}


def real_data_dir(folder: str) -> str:
    env = os.environ.get("SUPERLEVEL_DATA")
    if not env or not (Path(env) / folder).is_dir():
        pytest.skip(f"real data absent: {folder}/ not in $SUPERLEVEL_DATA")
    return env


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """CIFAR-10 batches in the official pickle format, learnable (class = mean brightness)."""
    root = tmp_path_factory.mktemp("cifar")
    folder = root / cifar.CIFAR10_DIR
    folder.mkdir()
    rng = np.random.default_rng(0)
    sums = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        labels = rng.integers(0, 10, 1100 if name != "test_batch" else 100)
        data = (labels[:, None] * 25 + rng.integers(0, 20, (len(labels), 3072))).astype(np.uint8)
        raw = pickle.dumps({b"data": data, b"labels": labels.tolist()}, protocol=2)
        (folder / name).write_bytes(raw)
        sums[name] = hashlib.md5(raw).hexdigest()
    return str(root), sums


def data_dir_for(name: str, fake_cifar, monkeypatch) -> str | None:
    need = get_task(name).needs_data
    if need is None:
        return None
    if need == "cifar10":
        root, sums = fake_cifar
        monkeypatch.setattr(cifar, "CIFAR10_FILES", sums)  # our files, our checksums
        return root
    return real_data_dir(REAL_FOLDER[need])


def mean_train_loss(ti: TaskInstance) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in ti.eval_batches("train"):
            total += float(ti.loss_fn(ti.model(x), y)) * y.shape[0]
            count += y.shape[0]
    return total / count


def train_steps(ti: TaskInstance, steps: int, lr: float) -> None:
    opt = torch.optim.Adam(ti.model.parameters(), lr=lr)
    done, epoch = 0, 0
    while done < steps:
        for x, y in ti.train_batches(epoch):
            opt.zero_grad()
            ti.loss_fn(ti.model(x), y).backward()
            opt.step()
            done += 1
            if done == steps:
                break
        epoch += 1


def test_registry_holds_every_task_with_budgets():
    assert set(TASKS) == ALL_TASKS | RL_TASKS and task_names() == list(TASKS)
    for name, spec in TASKS.items():
        assert spec.name == name and spec.description
        assert set(spec.budgets) == {"quick", "full"}
        q, f = spec.budgets["quick"], spec.budgets["full"]
        # The full budget trains at least as long as the quick one.
        assert f.epochs * (f.max_train_examples or 10**9) >= q.epochs * (
            q.max_train_examples or 10**9
        )
    assert get_task("mnist_mlp").needs_data == "mnist"
    assert get_task("quadratic").needs_data is None
    assert "activation" in get_task("mnist1d_cnn").options
    assert {"subset", "label_noise", "imbalance"} <= set(get_task("fmnist_2c2d").options)


@pytest.mark.parametrize("name", sorted(ALL_TASKS))
def test_every_task_builds_and_its_loss_falls_under_adam(name, fake_cifar, monkeypatch):
    data_dir = data_dir_for(name, fake_cifar, monkeypatch)
    ti = build_task(name, seed=0, budget=TINY, data_dir=data_dir)
    assert ti.name == name and ti.budget == TINY and ti.device == torch.device("cpu")
    spec = get_task(name)  # the static metadata is the built task's
    assert (ti.metric_name, ti.higher_is_better) == (spec.metric_name, spec.higher_is_better)
    x, y = next(iter(ti.train_batches(0)))
    assert x.shape[0] == y.shape[0] == 16
    for split in ("train", "val", "test"):
        n = sum(b[1].shape[0] for b in ti.eval_batches(split))
        assert n >= 1
    lr = {"rosenbrock": 0.05, "multiwell": 0.05, "quadratic": 0.05}.get(name, 3e-3)
    before = mean_train_loss(ti)
    train_steps(ti, 12, lr)
    after = mean_train_loss(ti)
    assert after < 0.9 * before or after < before - 0.1, (before, after)


def test_a_new_family_registers_with_its_option_validators(monkeypatch):
    from superlevel.bench.tasks import registry

    monkeypatch.setattr(registry, "TASKS", dict(registry.TASKS))
    monkeypatch.setattr(registry, "OPTION_VALIDATORS", dict(registry.OPTION_VALIDATORS))
    quad = get_task("quadratic")

    def check_episodes(v):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"option episodes must be a positive int, got {v!r}")

    def make(name, options, validators=None):
        spec = TaskSpec(
            name,
            "a toy family",
            quad.budgets,
            options,
            None,
            quad.builder,
            metric_name="suboptimality",
            higher_is_better=False,
        )
        registry.register(spec, validators)
        return spec

    with pytest.raises(ValueError, match=r"options without a validator: \['episodes'\]"):
        make("toy", {"episodes": 3})
    make("toy", {**quad.options, "episodes": 3}, {"episodes": check_episodes})
    make("toy2", {"episodes": 3}, {"episodes": check_episodes})  # the same check: fine
    assert registry.task_names()[-2:] == ["toy", "toy2"] and get_task("toy").options["episodes"]
    with pytest.raises(ValueError, match="'toy' is already registered"):
        make("toy", {})
    with pytest.raises(ValueError, match=r"\['noise'\] already have a validator"):
        make("toy3", {}, {"noise": check_episodes})
    with pytest.raises(ValueError, match="option episodes must be a positive int, got 0"):
        registry.build_task("toy", seed=0, episodes=0)
    assert registry.build_task("toy", seed=0, episodes=2).metric_name == "suboptimality"


def test_unknown_names_options_and_values():
    with pytest.raises(UnknownNameError) as err:
        get_task("mnist_mpl")
    assert isinstance(err.value, KeyError)
    msg = str(err.value)
    assert msg.startswith("unknown task 'mnist_mpl'") and "Did you mean 'mnist_mlp'" in msg
    assert "quadratic" in msg and "char_transformer" in msg
    with pytest.raises(UnknownNameError):
        build_task("nope", seed=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['dropout'\] for task digits_mlp"):
        build_task("digits_mlp", seed=0, dropout=0.1)
    bad = [
        ({"label_noise": 1.5}, "label_noise"),
        ({"imbalance": 0.5}, "imbalance"),
        ({"activation": "gelu"}, "activation"),
        ({"subset": 0}, "subset"),
    ]
    for opts, word in bad:
        with pytest.raises(ValueError, match=f"option {word} must"):
            build_task("digits_mlp", seed=0, **opts)
    with pytest.raises(ValueError, match="option noise must"):
        build_task("quadratic", seed=0, noise=-1.0)
    with pytest.raises(ValueError, match="unknown budget 'slow'"):
        build_task("digits_mlp", seed=0, budget="slow")
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        build_task("digits_mlp", seed=-1)


def _params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_seed_fixes_init_and_order_but_never_the_splits():
    a = build_task("mnist1d_mlp", seed=3)
    b = build_task("mnist1d_mlp", seed=3)
    c = build_task("mnist1d_mlp", seed=4)
    assert torch.equal(_params(a.model), _params(b.model))
    assert not torch.equal(_params(a.model), _params(c.model))
    ya = torch.cat([y for _, y in a.train_batches(0)])
    assert torch.equal(ya, torch.cat([y for _, y in b.train_batches(0)]))
    assert not torch.equal(ya, torch.cat([y for _, y in a.train_batches(1)]))
    assert not torch.equal(ya, torch.cat([y for _, y in c.train_batches(0)]))
    for split in ("val", "test"):  # the same examples for every seed
        xa = torch.cat([x for x, _ in a.eval_batches(split)])
        assert torch.equal(xa, torch.cat([x for x, _ in c.eval_batches(split)]))
    assert a.info["sizes"] == {"train": 3500, "val": 500, "test": 1000}
    assert a.steps_per_epoch == 35
    # Validation is carved from training data: no validation example is a test example.
    val = torch.cat([x for x, _ in a.eval_batches("val")])
    test = torch.cat([x for x, _ in a.eval_batches("test")])
    assert torch.cdist(val, test).min() > 0


def test_label_noise_imbalance_subset_and_activation_options():
    clean = build_task("digits_mlp", seed=0)
    noisy = build_task("digits_mlp", seed=0, label_noise=0.4)
    yc = torch.cat([y for _, y in clean.eval_batches("train")])
    yn = torch.cat([y for _, y in noisy.eval_batches("train")])
    assert abs((yc != yn).float().mean().item() - 0.4) < 0.05
    # Only the training split is corrupted.
    for split in ("val", "test"):
        assert torch.equal(
            torch.cat([y for _, y in clean.eval_batches(split)]),
            torch.cat([y for _, y in noisy.eval_batches(split)]),
        )
    imb = build_task("digits_mlp", seed=0, imbalance=10.0)
    counts = torch.bincount(torch.cat([y for _, y in imb.eval_batches("train")]), minlength=10)
    smallest = int(torch.bincount(yc, minlength=10).min())
    assert counts.tolist() == imbalance_counts(smallest, 10, 10.0)
    sub = build_task("digits_mlp", seed=0, subset=100)
    assert sub.info["sizes"]["train"] == 100 and sub.steps_per_epoch == 100 // 64
    capped = build_task("digits_mlp", seed=0, budget=Budget(32, 1, max_train_examples=50))
    assert capped.info["sizes"]["train"] == 50
    tanh = build_task("mnist1d_cnn", seed=0, activation="tanh")
    kinds = {type(m) for m in tanh.model.modules()}
    assert nn.Tanh in kinds and nn.ReLU not in kinds


def test_synthetic_tasks_give_unbiased_noisy_gradients_and_exact_metric():
    from superlevel.landscape.synthetic import MultiWell

    ti = build_task("multiwell", seed=1, budget=Budget(8, 1), noise=0.5)
    theta = ti.model.theta
    fn = MultiWell.default(3, seed=0)
    (x, y) = next(ti.eval_batches("test"))
    exact = float(ti.metric_fn(ti.model(x), y)) / y.shape[0]
    assert exact == pytest.approx(float(fn(theta.detach().double()) - fn.min_value), abs=1e-5)
    assert ti.metric_name == "suboptimality" and not ti.higher_is_better
    # The full noise set is centred: the mean training loss has the exact gradient.
    xs, ys = zip(*ti.train_batches(0), strict=True)
    noise = torch.cat(xs)
    assert noise.mean(0).abs().max() < 1e-5 and noise.std() == pytest.approx(0.5, rel=0.1)
    loss = ti.loss_fn(ti.model(noise), torch.cat(ys))
    (g_all,) = torch.autograd.grad(loss, theta)
    (g_exact,) = torch.autograd.grad(fn(theta), theta)
    torch.testing.assert_close(g_all, g_exact, atol=1e-5, rtol=1e-4)
    # A mini-batch gradient is the exact gradient plus the batch-mean noise.
    (g_b,) = torch.autograd.grad(ti.loss_fn(ti.model(xs[0]), ys[0]), theta)
    torch.testing.assert_close(g_b - g_exact, xs[0].mean(0), atol=1e-5, rtol=1e-4)


def test_multiwell_starts_in_a_seeded_basin_with_a_usable_gradient():
    from superlevel.landscape.synthetic import MultiWell

    fn = MultiWell.default(3, seed=0)
    wells = set()
    for seed in range(8):
        ti = build_task("multiwell", seed=seed, budget=Budget(8, 1))
        theta = ti.model.theta.detach().double()
        k = ti.info["start_well"]
        wells.add(k)
        dist = float((theta - fn.centers[k]).norm())
        assert dist == pytest.approx(1.5 * float(fn.widths[k]), rel=1e-5)
        t = theta.clone().requires_grad_()
        (grad,) = torch.autograd.grad(fn(t), t)
        assert float(grad.norm()) > 0.5  # not on the flat plateau between wells
    assert len(wells) >= 2


def test_quadratic_is_ill_conditioned_as_documented():
    ti = build_task("quadratic", seed=0, dim=10, condition=100.0)
    theta = ti.model.theta
    (g,) = torch.autograd.grad(ti.model.fn(theta), theta, create_graph=True)
    hess = torch.stack([torch.autograd.grad(g[i], theta, retain_graph=True)[0] for i in range(10)])
    eig = torch.linalg.eigvalsh(hess)
    assert eig.max() / eig.min() == pytest.approx(100.0, rel=1e-4)


def test_char_metric_is_per_character_accuracy():
    ti = build_task("char_lstm", seed=0, budget=TINY, data_dir=real_data_dir("text"))
    x, y = next(ti.eval_batches("val"))
    logits = torch.full((*y.shape, ti.info["vocab_size"]), -5.0)
    logits.scatter_(-1, y.unsqueeze(-1), 5.0)
    logits[0, :10] = 0.0  # ten wrong characters in the first sequence (argmax 0 != y)
    logits[0, :10, 0] = 1.0
    wrong = int((y[0, :10] != 0).sum())
    total = float(ti.metric_fn(logits, y))
    assert total / y.shape[0] == pytest.approx(1 - wrong / y.numel(), abs=1e-6)


def test_missing_data_message_names_the_task_data_and_command(tmp_path):
    from superlevel.data import MissingDataError

    with pytest.raises(MissingDataError, match="superlevel data download fashion-mnist"):
        build_task("fmnist_2c2d", seed=0, data_dir=str(tmp_path))
    with pytest.raises(MissingDataError, match=r"kjv\.txt\.gz"):
        build_task("char_transformer", seed=0, data_dir=str(tmp_path))


def test_mnist1d_paper_protocol_trains_on_all_4000_with_the_papers_models():
    mlp = build_task("mnist1d_mlp", seed=1, budget="full", protocol="paper")
    assert mlp.info["sizes"] == {"train": 4000, "val": 1000, "test": 1000}
    assert mlp.steps_per_epoch * mlp.budget.epochs == 6000  # batch 100, the paper's steps
    assert mlp.info["parameters"] == 15_210 and "skip connection" in mlp.info["model"]
    # No validation carve-out: the val split is the test split, as the paper evaluates.
    val = torch.cat([x for x, _ in mlp.eval_batches("val")])
    assert torch.equal(val, torch.cat([x for x, _ in mlp.eval_batches("test")]))
    cnn = build_task("mnist1d_cnn", seed=1, budget="full", protocol="paper")
    assert cnn.info["parameters"] == 5_210 and cnn.info["sizes"]["train"] == 4000
    ladder = build_task("mnist1d_mlp", seed=1)
    assert ladder.info["sizes"]["train"] == 3500 and ladder.info["parameters"] == 15_210
    with pytest.raises(ValueError, match=r"option protocol must be one of \['ladder', 'paper'\]"):
        build_task("mnist1d_cnn", seed=1, protocol="greydanus")


@pytest.mark.parametrize("name", ["char_lstm", "char_transformer"])
def test_a_text_model_starts_near_the_uniform_prediction(name):
    """An untrained language model predicts about uniformly: its loss is ln(vocab) +- 10%
    (the Transformer's tied embedding at N(0, 1) gave 112.6 nats against ln(vocab) ~ 4.3)."""
    import math

    ti = build_task(name, seed=1, budget=TINY, data_dir=real_data_dir("text"))
    x, y = next(ti.eval_batches("val"))
    with torch.no_grad():
        loss = float(ti.loss_fn(ti.model(x), y))
    uniform = math.log(ti.info["vocab_size"])
    assert abs(loss - uniform) < 0.1 * uniform, (loss, uniform)


def _rows(ti: TaskInstance, split: str) -> torch.Tensor:
    return torch.cat([x for x, _ in ti.eval_batches(split)])


def test_eval_subset_evaluates_the_first_windows_and_trains_on_all():
    data = real_data_dir("text")
    full = build_task("char_lstm", seed=1, budget=TINY, data_dir=data, seq_len=20)
    capped = build_task("char_lstm", seed=1, budget=TINY, data_dir=data, seq_len=20, eval_subset=7)
    for split in ("train", "val", "test"):
        assert torch.equal(_rows(capped, split), _rows(full, split)[:7])
    assert capped.info["evaluated_sizes"] == {"train": 7, "val": 7, "test": 7}
    assert capped.info["sizes"] == full.info["sizes"]  # training keeps every window
    assert capped.info["sizes"]["train"] == 64
    order = torch.cat([x for x, _ in capped.train_batches(0)])
    assert torch.equal(order, torch.cat([x for x, _ in full.train_batches(0)]))
    assert len(order) == 64
    for bad in (0, -3, 2.5, True):
        with pytest.raises(
            ValueError, match=f"option eval_subset must be a positive int, got {bad!r}"
        ):
            build_task("char_transformer", seed=1, budget=TINY, data_dir=data, eval_subset=bad)
