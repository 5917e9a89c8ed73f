"""The task ladder: one registry from a noisy quadratic to a character Transformer.

``build_task(name, seed=..., device=..., budget="quick"|"full", data_dir=..., **options)``
returns a :class:`~superlevel.bench.task.TaskInstance`. Conventions shared by all tasks:

- **Fixed splits.** Validation is carved from the training data by a fixed permutation
  (the same for every seed); the test split is never used for choices. Label noise and
  class imbalance change the *training* split only, also independently of the seed.
- **Seeds** choose the model initialisation and the order of training batches.
- **Metric sums.** ``metric_fn(output, y)`` returns the metric summed over the batch's
  examples (its rows, ``y.shape[0]``), so ``sum / number of rows`` is the exact mean.
  For the character tasks an example is one sequence and its metric is the mean
  per-character accuracy, so the mean over rows is the per-character accuracy.
- **Synthetic tasks** (``quadratic``, ``rosenbrock``, ``multiwell``): the model holds the
  parameter vector ``theta``; a training "example" is a noise vector ``xi`` and the
  per-example loss is ``f(theta) - f* + <xi, theta>``, so a mini-batch gradient is
  ``grad f(theta)`` plus the batch-mean noise (unbiased, shrinking like ``1/sqrt(B)``).
  The noise set is centred, so the full training set gives the exact gradient. The
  metric is the suboptimality ``f(theta) - f*`` (``higher_is_better=False``), evaluated
  without noise on every split.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from superlevel.bench import models
from superlevel.bench.task import Batch, Budget, TaskInstance
from superlevel.data.tensors import (
    Splits,
    apply_imbalance,
    apply_label_noise,
    batch_iterator,
    carve_validation,
    eval_iterator,
    take_subset,
)

__all__ = [
    "TASKS",
    "TaskSpec",
    "UnknownNameError",
    "build_task",
    "get_task",
    "task_names",
]

_SPLIT_SEED = 0  # fixed: splits and data variants never depend on the run seed


class UnknownNameError(KeyError):
    """An unknown registry name; the message names it, lists valid names and a close match."""

    def __init__(self, kind: str, name: str, valid: list[str]) -> None:
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(valid)}.{hint}")
        self.name = name
        self.valid = valid

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: what it is, its budgets, its options and the data it needs.

    Attributes:
        name: registry name.
        description: one line for ``bench list``.
        budgets: ``{"quick": Budget, "full": Budget}``.
        options: allowed option names with their defaults.
        needs_data: data set folder the task reads (``None``: generated or bundled).
        builder: ``builder(spec, seed, device, budget, data_dir, options) -> TaskInstance``.
    """

    name: str
    description: str
    budgets: dict[str, Budget]
    options: Mapping[str, Any]
    needs_data: str | None
    builder: Callable[..., TaskInstance] = field(repr=False, compare=False)


# --------------------------------------------------------------------------- options


def _check_subset(v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"option subset must be None or a positive int, got {v!r}")


def _check_label_noise(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise ValueError(f"option label_noise must be a rate in [0, 1), got {v!r}")


def _check_imbalance(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 1.0 <= v < math.inf:
        raise ValueError(f"option imbalance must be a finite ratio >= 1, got {v!r}")


def _check_activation(v: Any) -> None:
    if v not in models.ACTIVATIONS:
        raise ValueError(
            f"option activation must be one of {sorted(models.ACTIVATIONS)}, got {v!r}"
        )


def _positive(name: str, kind: type = float) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        ok_type = isinstance(v, int) if kind is int else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or not 0 < v < math.inf:
            raise ValueError(f"option {name} must be a positive {kind.__name__}, got {v!r}")

    return check


def _non_negative(name: str) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise ValueError(f"option {name} must be a finite number >= 0, got {v!r}")

    return check


def _check_path(name: str) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if v is not None and not isinstance(v, str):
            raise ValueError(f"option {name} must be a path string or None, got {v!r}")

    return check


_VALIDATORS: dict[str, Callable[[Any], None]] = {
    "subset": _check_subset,
    "label_noise": _check_label_noise,
    "imbalance": _check_imbalance,
    "activation": _check_activation,
    "noise": _non_negative("noise"),
    "dim": _positive("dim", int),
    "condition": _positive("condition"),
    "n_wells": _positive("n_wells", int),
    "seq_len": _positive("seq_len", int),
    "corpus": _check_path("corpus"),
}

_CLASSIFICATION_OPTIONS = {"subset": None, "label_noise": 0.0, "imbalance": 1.0}


# ------------------------------------------------------------------------ registry

TASKS: dict[str, TaskSpec] = {}


def _register(spec: TaskSpec) -> None:
    unknown = set(spec.options) - set(_VALIDATORS)
    assert not unknown, f"{spec.name}: options without a validator: {unknown}"
    TASKS[spec.name] = spec


def task_names() -> list[str]:
    """Registered task names, in ladder order."""
    return list(TASKS)


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` registered as ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered.
    """
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise UnknownNameError("task", name, task_names()) from None


def build_task(
    name: str,
    *,
    seed: int,
    device: str | torch.device = "cpu",
    budget: str | Budget = "quick",
    data_dir: str | None = None,
    **options: Any,
) -> TaskInstance:
    """Build task ``name`` for one seed: data on ``device``, a fresh model, loss and metric.

    Args:
        name: a registered task name.
        seed: chooses the model initialisation and the training batch order.
        device: where the data and the model live.
        budget: ``"quick"``, ``"full"`` or an explicit :class:`Budget`.
        data_dir: data directory; ``None`` means ``$SUPERLEVEL_DATA`` (else ``./data``).
        **options: task options (see ``get_task(name).options``).

    Raises:
        UnknownNameError: unknown task.
        ValueError: unknown option, bad option value or unknown budget name.
        superlevel.data.MissingDataError: the task's data files are absent.
    """
    spec = get_task(name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if isinstance(budget, str):
        if budget not in spec.budgets:
            raise ValueError(
                f"unknown budget {budget!r} for task {name}; valid: {', '.join(spec.budgets)}"
            )
        chosen = spec.budgets[budget]
    elif isinstance(budget, Budget):
        chosen = budget
    else:
        raise ValueError(f"budget must be a budget name or a Budget, got {budget!r}")
    if chosen.batch_size < 1 or chosen.epochs < 0:
        raise ValueError(f"budget needs batch_size >= 1 and epochs >= 0, got {chosen}")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ValueError(f"unknown option(s) {unknown} for task {name}; allowed: {allowed}")
    opts = {**spec.options, **options}
    for key, value in opts.items():
        _VALIDATORS[key](value)
    dev = torch.device(device)
    return spec.builder(spec, int(seed), dev, chosen, data_dir, opts)


def _init_model(seed: int, device: torch.device, make: Callable[[], nn.Module]) -> nn.Module:
    """Build a model on the CPU under ``seed`` (same weights on every device), then move it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
    return model.to(device)


# --------------------------------------------------------------- synthetic tasks


def _synthetic_instance(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    fn: Callable[[torch.Tensor], torch.Tensor],
    fstar: float,
    theta0: torch.Tensor,
    noise: float,
    info: dict[str, Any],
) -> TaskInstance:
    dim = theta0.numel()
    n_train = budget.max_train_examples or 1024
    g = torch.Generator().manual_seed(_SPLIT_SEED + 17)
    xi = torch.randn(n_train, dim, generator=g)
    xi = noise * (xi - xi.mean(0))  # centred: the full training set gives the exact gradient
    xi = xi.to(device)
    ystar = torch.full((n_train,), float(fstar), device=device)
    exact = (torch.zeros(1, dim, device=device), torch.full((1,), float(fstar), device=device))
    model = _init_model(seed, device, lambda: models.LandscapeModel(fn, theta0))

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (out - target).mean()

    def metric_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (out - target).detach().sum()

    def train_batches(epoch: int) -> Iterator[Batch]:
        return batch_iterator(xi, ystar, budget.batch_size, seed=seed, epoch=epoch)

    def eval_batches(split: str) -> Iterator[Batch]:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        return iter([exact])

    info = {**info, "n_train": n_train, "noise": noise, "f_star": float(fstar), "dim": dim}
    return TaskInstance(
        name=spec.name,
        model=model,
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        metric_name="suboptimality",
        higher_is_better=False,
        train_batches=train_batches,
        eval_batches=eval_batches,
        budget=budget,
        steps_per_epoch=max(1, n_train // budget.batch_size),
        device=device,
        info=info,
    )


def _seeded_normal(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 12_345))


def _build_quadratic(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    from superlevel.landscape.synthetic import Quadratic

    dim, cond = opts["dim"], float(opts["condition"])
    # Eigenvalues log-spaced from 1 down to 1/condition: lambda_max / lambda_min = condition.
    eig = torch.logspace(0.0, -math.log10(cond), dim, dtype=torch.float64)
    fn = Quadratic(eig)
    theta0 = _seeded_normal(seed, (dim,))
    info = {"condition": cond, "eigenvalues": "logspace(1, 1/condition)"}
    return _synthetic_instance(spec, seed, device, budget, fn, 0.0, theta0, opts["noise"], info)


def _build_rosenbrock(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    from superlevel.landscape.synthetic import Rosenbrock

    fn = Rosenbrock()
    # The classical start (-1.2, 1) jittered by the seed.
    theta0 = torch.tensor([-1.2, 1.0]) + 0.1 * _seeded_normal(seed, (2,))
    info = {"a": 1.0, "b": 100.0}
    return _synthetic_instance(spec, seed, device, budget, fn, 0.0, theta0, opts["noise"], info)


def _build_multiwell(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    from superlevel.landscape.synthetic import MultiWell

    fn = MultiWell.default(n_wells=opts["n_wells"], seed=0)
    # Start inside the basin of a seeded well, 1.5 widths from its centre in a seeded
    # direction: the gradient there is sizeable (far from all wells f is flat), and a
    # large step can still jump to another well.
    g = torch.Generator().manual_seed(seed + 54_321)
    k = int(torch.randint(fn.centers.shape[0], (1,), generator=g))
    angle = float(torch.rand(1, generator=g)) * 2 * math.pi
    offset = 1.5 * float(fn.widths[k]) * torch.tensor([math.cos(angle), math.sin(angle)])
    theta0 = fn.centers[k].float() + offset
    info = {"n_wells": opts["n_wells"], "minima": fn.minima.tolist(), "start_well": k}
    return _synthetic_instance(
        spec, seed, device, budget, fn, fn.min_value, theta0, opts["noise"], info
    )


# ---------------------------------------------------------- classification tasks


def _classification_instance(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    opts: dict[str, Any],
    splits: Splits,
    num_classes: int,
    make_model: Callable[[], nn.Module],
    info: dict[str, Any],
    eval_batch_size: int = 1000,
) -> TaskInstance:
    """Apply the data variants to the training split, move data to ``device``, wrap up."""
    tx, ty = splits.train_x, splits.train_y
    tx, ty = apply_imbalance(tx, ty, float(opts["imbalance"]), num_classes, _SPLIT_SEED)
    cap = min(c for c in (opts["subset"], budget.max_train_examples, len(ty)) if c is not None)
    tx, ty = take_subset(tx, ty, cap)
    ty = apply_label_noise(ty, float(opts["label_noise"]), num_classes, _SPLIT_SEED)
    data = Splits(tx, ty, splits.val_x, splits.val_y, splits.test_x, splits.test_y).to(device)
    model = _init_model(seed, device, make_model)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, target)

    def metric_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (out.argmax(-1) == target).sum()

    def train_batches(epoch: int) -> Iterator[Batch]:
        return batch_iterator(data.train_x, data.train_y, budget.batch_size, seed=seed, epoch=epoch)

    def eval_batches(split: str) -> Iterator[Batch]:
        x, y = data.get(split)
        return eval_iterator(x, y, eval_batch_size)

    info = {
        **info,
        "sizes": data.sizes(),
        "num_classes": num_classes,
        "parameters": sum(p.numel() for p in model.parameters()),
        **{k: opts[k] for k in opts},
    }
    return TaskInstance(
        name=spec.name,
        model=model,
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        metric_name="accuracy",
        higher_is_better=True,
        train_batches=train_batches,
        eval_batches=eval_batches,
        budget=budget,
        steps_per_epoch=max(1, len(data.train_y) // budget.batch_size),
        device=device,
        info=info,
    )


def _splits_from_train_test(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, n_val: int
) -> Splits:
    tx, ty, vx, vy = carve_validation(x, y, n_val, _SPLIT_SEED)
    return Splits(tx, ty, vx, vy, x_test, y_test)


def _build_digits_mlp(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    from superlevel.data.generated import load_digits

    x_np, y_np = load_digits()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    # sklearn's digits have no test split: a fixed 20% test, then 10% validation.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_test = len(y) // 5
    test, rest = perm[:n_test], perm[n_test:]
    splits = _splits_from_train_test(x[rest], y[rest], x[test], y[test], n_val=len(y) // 10)
    act = opts["activation"]
    info = {"data": "sklearn 8x8 digits", "model": f"MLP 64-64-10 ({act})"}
    return _classification_instance(
        spec, seed, device, budget, opts, splits, 10, lambda: models.mlp([64, 64, 10], act), info
    )


def _mnist1d_splits() -> Splits:
    from superlevel.data.generated import load_mnist1d

    d = load_mnist1d()
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    xt, yt = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    return _splits_from_train_test(x, y, xt, yt, n_val=500)


def _build_mnist1d_mlp(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    act = opts["activation"]
    info = {"data": "MNIST-1D (generated, 4000/1000)", "model": f"MLP 40-100-100-10 ({act})"}
    return _classification_instance(
        spec,
        seed,
        device,
        budget,
        opts,
        _mnist1d_splits(),
        10,
        lambda: models.mlp([40, 100, 100, 10], act),
        info,
    )


def _build_mnist1d_cnn(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    act = opts["activation"]
    info = {"data": "MNIST-1D (generated, 4000/1000)", "model": f"CNN 3x conv1d 25ch ({act})"}
    return _classification_instance(
        spec,
        seed,
        device,
        budget,
        opts,
        _mnist1d_splits(),
        10,
        lambda: models.mnist1d_cnn(act),
        info,
    )


def _standardize(x: torch.Tensor, train: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``(x - mean) / std`` with statistics of the training split over ``dims``."""
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True)
    return (x - mean) / std


def _image_splits(kind: str, data_dir: str | None) -> Splits:
    """MNIST / Fashion-MNIST as ``(N, 1, 28, 28)`` float32 standardised by training stats."""
    from superlevel.data.idx import load_mnist

    d = load_mnist(data_dir, kind=kind)
    x = torch.from_numpy(d["train_images"].copy()).float().div_(255.0).unsqueeze(1)
    xt = torch.from_numpy(d["test_images"].copy()).float().div_(255.0).unsqueeze(1)
    y = torch.from_numpy(d["train_labels"].copy()).long()
    yt = torch.from_numpy(d["test_labels"].copy()).long()
    splits = _splits_from_train_test(x, y, xt, yt, n_val=5000)
    norm = splits.train_x
    dims = (0, 1, 2, 3)
    return Splits(
        _standardize(splits.train_x, norm, dims),
        splits.train_y,
        _standardize(splits.val_x, norm, dims),
        splits.val_y,
        _standardize(splits.test_x, norm, dims),
        splits.test_y,
    )


def _image_builder(
    kind: str, model_name: str, make: Callable[[str], nn.Module]
) -> Callable[..., TaskInstance]:
    def build(
        spec: TaskSpec,
        seed: int,
        device: torch.device,
        budget: Budget,
        data_dir: str | None,
        opts: dict[str, Any],
    ) -> TaskInstance:
        act = opts.get("activation", "relu")
        desc = f"{model_name} ({act})" if "activation" in opts else model_name
        info = {"data": f"{kind} (55k/5k/10k)", "model": desc}
        return _classification_instance(
            spec,
            seed,
            device,
            budget,
            opts,
            _image_splits(kind, data_dir),
            10,
            lambda: make(act),
            info,
        )

    return build


def _build_cifar10_3c3d(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    from superlevel.data.cifar import load_cifar10

    d = load_cifar10(data_dir)
    x = torch.from_numpy(d["train_images"].copy()).float().div_(255.0)
    xt = torch.from_numpy(d["test_images"].copy()).float().div_(255.0)
    y = torch.from_numpy(d["train_labels"].copy()).long()
    yt = torch.from_numpy(d["test_labels"].copy()).long()
    s = _splits_from_train_test(x, y, xt, yt, n_val=5000)
    dims = (0, 2, 3)  # per-channel statistics
    splits = Splits(
        _standardize(s.train_x, s.train_x, dims),
        s.train_y,
        _standardize(s.val_x, s.train_x, dims),
        s.val_y,
        _standardize(s.test_x, s.train_x, dims),
        s.test_y,
    )
    act = opts["activation"]
    info = {"data": "CIFAR-10 (45k/5k/10k), no augmentation", "model": f"3c3d ({act})"}
    return _classification_instance(
        spec, seed, device, budget, opts, splits, 10, lambda: models.cifar_3c3d(act), info, 500
    )


# ----------------------------------------------------------------- text tasks


def _text_instance(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
    make_model: Callable[[int], nn.Module],
    model_desc: str,
) -> TaskInstance:
    from superlevel.data.text import load_char_corpus

    corpus = load_char_corpus(opts["corpus"], data_dir=data_dir)
    seq_len = opts["seq_len"]
    windows = {s: corpus.windows(s, seq_len) for s in ("train", "val", "test")}
    tx, ty = windows["train"]
    cap = min(c for c in (opts["subset"], budget.max_train_examples, len(ty)) if c is not None)
    # The training windows are taken in a fixed shuffled order so a cap samples the whole text.
    perm = torch.randperm(len(ty), generator=torch.Generator().manual_seed(_SPLIT_SEED))[:cap]
    data = Splits(tx[perm], ty[perm], *windows["val"], *windows["test"]).to(device)
    vocab = corpus.vocab_size
    model = _init_model(seed, device, lambda: make_model(vocab))

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))

    def metric_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Per-sequence mean accuracy, summed over sequences (see the module docstring).
        return (out.argmax(-1) == target).float().mean(-1).sum()

    def train_batches(epoch: int) -> Iterator[Batch]:
        return batch_iterator(data.train_x, data.train_y, budget.batch_size, seed=seed, epoch=epoch)

    def eval_batches(split: str) -> Iterator[Batch]:
        x, y = data.get(split)
        return eval_iterator(x, y, 256)

    info = {
        "data": f"{corpus.source} ({corpus.sizes()} chars)",
        "model": model_desc,
        "vocab_size": vocab,
        "sizes": data.sizes(),
        "parameters": sum(p.numel() for p in model.parameters()),
        **opts,
    }
    return TaskInstance(
        name=spec.name,
        model=model,
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        metric_name="accuracy",
        higher_is_better=True,
        train_batches=train_batches,
        eval_batches=eval_batches,
        budget=budget,
        steps_per_epoch=max(1, len(data.train_y) // budget.batch_size),
        device=device,
        info=info,
    )


def _build_char_lstm(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    return _text_instance(
        spec, seed, device, budget, data_dir, opts, models.CharLSTM, "LSTM 2x128, embedding 128"
    )


def _build_char_transformer(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data_dir: str | None,
    opts: dict[str, Any],
) -> TaskInstance:
    def make(vocab: int) -> nn.Module:
        return models.CharTransformer(vocab, context=opts["seq_len"])

    desc = "decoder-only Transformer, 2 layers, d=128, 4 heads"
    return _text_instance(spec, seed, device, budget, data_dir, opts, make, desc)


# ---------------------------------------------------------------- registration

_ACT = {"activation": "relu"}
_TEXT_OPTIONS = {"subset": None, "corpus": None}

for _spec in [
    TaskSpec(
        "quadratic",
        "ill-conditioned quadratic (condition 1e3, dim 50) with additive gradient noise",
        {"quick": Budget(32, 20, target=5e-2), "full": Budget(32, 200, target=1e-3)},
        {"dim": 50, "condition": 1000.0, "noise": 1.0},
        None,
        _build_quadratic,
    ),
    TaskSpec(
        "rosenbrock",
        "2-D Rosenbrock valley from (-1.2, 1) with additive gradient noise",
        {"quick": Budget(16, 30, target=1e-2), "full": Budget(16, 300, target=1e-4)},
        {"noise": 1.0},
        None,
        _build_rosenbrock,
    ),
    TaskSpec(
        "multiwell",
        "2-D sum of Gaussian wells with disconnected sub-level sets, noisy gradients",
        {"quick": Budget(16, 20, target=1e-2), "full": Budget(16, 200, target=1e-4)},
        {"n_wells": 3, "noise": 0.1},
        None,
        _build_multiwell,
    ),
    TaskSpec(
        "digits_mlp",
        "sklearn 8x8 digits, MLP 64-64-10",
        {"quick": Budget(64, 10, target=0.9), "full": Budget(64, 100, target=0.95)},
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        None,
        _build_digits_mlp,
    ),
    TaskSpec(
        "mnist1d_mlp",
        "MNIST-1D (generated), MLP 40-100-100-10 (paper: ~68%)",
        {"quick": Budget(100, 20, target=0.5), "full": Budget(100, 150, target=0.6)},
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        None,
        _build_mnist1d_mlp,
    ),
    TaskSpec(
        "mnist1d_cnn",
        "MNIST-1D (generated), 3-layer 1-D CNN (paper: ~94%)",
        {"quick": Budget(100, 20, target=0.7), "full": Budget(100, 150, target=0.9)},
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        None,
        _build_mnist1d_cnn,
    ),
    TaskSpec(
        "mnist_logreg",
        "MNIST, multinomial logistic regression",
        {
            "quick": Budget(128, 1, target=0.85, max_train_examples=20_000),
            "full": Budget(128, 20, target=0.92),
        },
        dict(_CLASSIFICATION_OPTIONS),
        "mnist",
        _image_builder("mnist", "logistic regression", lambda act: models.mlp([784, 10])),
    ),
    TaskSpec(
        "mnist_mlp",
        "MNIST, MLP 784-256-256-10 (AlgoPerf-style target 97%)",
        {
            "quick": Budget(128, 2, target=0.93, max_train_examples=20_000),
            "full": Budget(128, 10, target=0.97),
        },
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        "mnist",
        _image_builder("mnist", "MLP 784-256-256-10", lambda a: models.mlp([784, 256, 256, 10], a)),
    ),
    TaskSpec(
        "mnist_cnn",
        "MNIST, small LeNet-style CNN (conv16-conv32-fc)",
        {
            "quick": Budget(128, 1, target=0.93, max_train_examples=10_000),
            "full": Budget(128, 10, target=0.99),
        },
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        "mnist",
        _image_builder("mnist", "CNN conv16-conv32-fc", models.mnist_cnn),
    ),
    TaskSpec(
        "fmnist_2c2d",
        "Fashion-MNIST, DeepOBS 2c2d CNN (DeepOBS: ~92% after 100 epochs)",
        {
            "quick": Budget(128, 1, target=0.7, max_train_examples=5_000),
            "full": Budget(128, 100, target=0.92),
        },
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        "fashion-mnist",
        _image_builder("fashion-mnist", "DeepOBS 2c2d", models.fmnist_2c2d),
    ),
    TaskSpec(
        "cifar10_3c3d",
        "CIFAR-10, DeepOBS 3c3d CNN (no augmentation)",
        {
            "quick": Budget(128, 1, target=0.3, max_train_examples=5_000),
            "full": Budget(128, 100, target=0.8),
        },
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        "cifar10",
        _build_cifar10_3c3d,
    ),
    TaskSpec(
        "char_lstm",
        "character language model on the KJV Bible, DeepOBS tolstoi-style 2x128 LSTM",
        {
            "quick": Budget(50, 1, target=0.3, max_train_examples=2_000),
            "full": Budget(50, 200, target=0.6),
        },
        {**_TEXT_OPTIONS, "seq_len": 50},
        "kjv",
        _build_char_lstm,
    ),
    TaskSpec(
        "char_transformer",
        "character language model on the KJV Bible, small decoder-only Transformer",
        {
            "quick": Budget(32, 1, target=0.25, max_train_examples=2_000),
            "full": Budget(64, 50, target=0.6),
        },
        {**_TEXT_OPTIONS, "seq_len": 64},
        "kjv",
        _build_char_transformer,
    ),
]:
    _register(_spec)
del _spec
