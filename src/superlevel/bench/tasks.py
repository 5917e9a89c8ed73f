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
from typing import Any, NamedTuple

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


# ----------------------------------------------------------- shared assembly

_Builder = Callable[..., TaskInstance]
_TensorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _assemble(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    *,
    model: nn.Module,
    train: Batch,
    eval_batches: Callable[[str], Iterator[Batch]],
    loss_fn: _TensorFn,
    metric_fn: _TensorFn,
    metric_name: str,
    higher_is_better: bool,
    info: dict[str, Any],
) -> TaskInstance:
    """The :class:`TaskInstance` every builder returns; an epoch is one pass over ``train``.

    ``train`` is the training ``(x, y)`` on ``device``, batched in an order chosen by
    ``seed``; the keyword arguments are the :class:`TaskInstance` fields of that name.
    """
    train_x, train_y = train

    def train_batches(epoch: int) -> Iterator[Batch]:
        return batch_iterator(train_x, train_y, budget.batch_size, seed=seed, epoch=epoch)

    return TaskInstance(
        name=spec.name,
        model=model,
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        metric_name=metric_name,
        higher_is_better=higher_is_better,
        train_batches=train_batches,
        eval_batches=eval_batches,
        budget=budget,
        steps_per_epoch=max(1, len(train_y) // budget.batch_size),
        device=device,
        info=info,
    )


def _accuracy_instance(
    spec: TaskSpec,
    seed: int,
    device: torch.device,
    budget: Budget,
    data: Splits,
    model: nn.Module,
    info: dict[str, Any],
    *,
    loss_fn: _TensorFn,
    metric_fn: _TensorFn,
    eval_batch_size: int,
) -> TaskInstance:
    """A task on in-memory :class:`Splits` (on ``device``) measured by accuracy."""

    def eval_batches(split: str) -> Iterator[Batch]:
        x, y = data.get(split)
        return eval_iterator(x, y, eval_batch_size)

    return _assemble(
        spec,
        seed,
        device,
        budget,
        model=model,
        train=(data.train_x, data.train_y),
        eval_batches=eval_batches,
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        metric_name="accuracy",
        higher_is_better=True,
        info=info,
    )


def _train_cap(opts: dict[str, Any], budget: Budget, n: int) -> int:
    """Training examples kept: the smallest of the ``subset`` option, the budget cap and ``n``."""
    return min(c for c in (opts["subset"], budget.max_train_examples, n) if c is not None)


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------- synthetic tasks


class _Landscape(NamedTuple):
    """What a synthetic task differs in: the function, its minimum, the start, extra info."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    f_star: float
    theta0: torch.Tensor
    info: dict[str, Any]


def _gap_mean(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).mean()


def _gap_sum(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out - target).detach().sum()


def _synthetic(landscape: Callable[[int, dict[str, Any]], _Landscape]) -> _Builder:
    """A builder for a noisy synthetic task on ``landscape(seed, opts)`` (module docstring)."""

    def build(
        spec: TaskSpec,
        seed: int,
        device: torch.device,
        budget: Budget,
        data_dir: str | None,
        opts: dict[str, Any],
    ) -> TaskInstance:
        fn, fstar, theta0, info = landscape(seed, opts)
        noise = opts["noise"]
        dim = theta0.numel()
        n_train = budget.max_train_examples or 1024
        g = torch.Generator().manual_seed(_SPLIT_SEED + 17)
        xi = torch.randn(n_train, dim, generator=g)
        xi = noise * (xi - xi.mean(0))  # centred: the full training set gives the exact gradient
        xi = xi.to(device)
        ystar = torch.full((n_train,), float(fstar), device=device)
        exact = (torch.zeros(1, dim, device=device), torch.full((1,), float(fstar), device=device))
        model = _init_model(seed, device, lambda: models.LandscapeModel(fn, theta0))

        def eval_batches(split: str) -> Iterator[Batch]:
            if split not in ("train", "val", "test"):
                raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
            return iter([exact])

        info = {**info, "n_train": n_train, "noise": noise, "f_star": float(fstar), "dim": dim}
        return _assemble(
            spec,
            seed,
            device,
            budget,
            model=model,
            train=(xi, ystar),
            eval_batches=eval_batches,
            loss_fn=_gap_mean,
            metric_fn=_gap_sum,
            metric_name="suboptimality",
            higher_is_better=False,
            info=info,
        )

    return build


def _seeded_normal(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed + 12_345))


def _quadratic(seed: int, opts: dict[str, Any]) -> _Landscape:
    from superlevel.landscape.synthetic import Quadratic

    dim, cond = opts["dim"], float(opts["condition"])
    # Eigenvalues log-spaced from 1 down to 1/condition: lambda_max / lambda_min = condition.
    eig = torch.logspace(0.0, -math.log10(cond), dim, dtype=torch.float64)
    theta0 = _seeded_normal(seed, (dim,))
    info = {"condition": cond, "eigenvalues": "logspace(1, 1/condition)"}
    return _Landscape(Quadratic(eig), 0.0, theta0, info)


def _rosenbrock(seed: int, opts: dict[str, Any]) -> _Landscape:
    from superlevel.landscape.synthetic import Rosenbrock

    # The classical start (-1.2, 1) jittered by the seed.
    theta0 = torch.tensor([-1.2, 1.0]) + 0.1 * _seeded_normal(seed, (2,))
    return _Landscape(Rosenbrock(), 0.0, theta0, {"a": 1.0, "b": 100.0})


def _multiwell(seed: int, opts: dict[str, Any]) -> _Landscape:
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
    return _Landscape(fn, fn.min_value, theta0, info)


# ---------------------------------------------------------- classification tasks


def _cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, target)


def _correct(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (out.argmax(-1) == target).sum()


def _classifier(
    load_splits: Callable[[str | None], Splits],
    data_desc: str,
    model_desc: str,
    make: Callable[[str], nn.Module],
    eval_batch_size: int = 1000,
) -> _Builder:
    """A builder for a 10-class task: ``load_splits(data_dir)``, a model ``make(activation)``.

    The data variants (imbalance, cap, label noise) change the training split only; the
    model description names the activation when the task has that option.
    """

    def build(
        spec: TaskSpec,
        seed: int,
        device: torch.device,
        budget: Budget,
        data_dir: str | None,
        opts: dict[str, Any],
    ) -> TaskInstance:
        splits = load_splits(data_dir)
        act = opts.get("activation", "relu")
        num_classes = 10  # every classification task of the ladder has ten classes
        tx, ty = splits.train_x, splits.train_y
        tx, ty = apply_imbalance(tx, ty, float(opts["imbalance"]), num_classes, _SPLIT_SEED)
        tx, ty = take_subset(tx, ty, _train_cap(opts, budget, len(ty)))
        ty = apply_label_noise(ty, float(opts["label_noise"]), num_classes, _SPLIT_SEED)
        data = Splits(tx, ty, splits.val_x, splits.val_y, splits.test_x, splits.test_y)
        data = data.to(device)
        model = _init_model(seed, device, lambda: make(act))
        info = {
            "data": data_desc,
            "model": f"{model_desc} ({act})" if "activation" in opts else model_desc,
            "sizes": data.sizes(),
            "num_classes": num_classes,
            "parameters": _parameter_count(model),
            **opts,
        }
        return _accuracy_instance(
            spec,
            seed,
            device,
            budget,
            data,
            model,
            info,
            loss_fn=_cross_entropy,
            metric_fn=_correct,
            eval_batch_size=eval_batch_size,
        )

    return build


def _splits_from_train_test(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, n_val: int
) -> Splits:
    tx, ty, vx, vy = carve_validation(x, y, n_val, _SPLIT_SEED)
    return Splits(tx, ty, vx, vy, x_test, y_test)


def _digits_splits(data_dir: str | None) -> Splits:
    """sklearn's digits (bundled, ``data_dir`` unused): a fixed 20% test, then 10% validation."""
    from superlevel.data.generated import load_digits

    x_np, y_np = load_digits()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    n_test = len(y) // 5
    test, rest = perm[:n_test], perm[n_test:]
    return _splits_from_train_test(x[rest], y[rest], x[test], y[test], n_val=len(y) // 10)


def _mnist1d_splits(data_dir: str | None) -> Splits:
    """MNIST-1D (generated, ``data_dir`` unused) with 500 validation examples."""
    from superlevel.data.generated import load_mnist1d

    d = load_mnist1d()
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    xt, yt = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    return _splits_from_train_test(x, y, xt, yt, n_val=500)


def _standardize(x: torch.Tensor, train: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``(x - mean) / std`` with statistics of the training split over ``dims``."""
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True)
    return (x - mean) / std


def _image_splits(d: Mapping[str, np.ndarray], dims: tuple[int, ...], add_channel: bool) -> Splits:
    """uint8 images to float32 in ``[0, 1]``, 5000 validation, standardised by training stats.

    Args:
        d: a loader's ``train_images``, ``train_labels``, ``test_images``, ``test_labels``.
        dims: dimensions the mean and std are taken over.
        add_channel: insert a channel axis (images stored as ``(N, H, W)``).
    """

    def images(key: str) -> torch.Tensor:
        x = torch.from_numpy(d[key].copy()).float().div_(255.0)
        return x.unsqueeze(1) if add_channel else x

    def labels(key: str) -> torch.Tensor:
        return torch.from_numpy(d[key].copy()).long()

    s = _splits_from_train_test(
        images("train_images"),
        labels("train_labels"),
        images("test_images"),
        labels("test_labels"),
        n_val=5000,
    )
    return Splits(
        _standardize(s.train_x, s.train_x, dims),
        s.train_y,
        _standardize(s.val_x, s.train_x, dims),
        s.val_y,
        _standardize(s.test_x, s.train_x, dims),
        s.test_y,
    )


def _mnist_splits(kind: str, data_dir: str | None) -> Splits:
    """MNIST / Fashion-MNIST as ``(N, 1, 28, 28)``, standardised over all pixels."""
    from superlevel.data.idx import load_mnist

    return _image_splits(load_mnist(data_dir, kind=kind), (0, 1, 2, 3), add_channel=True)


def _mnist_classifier(kind: str, model_desc: str, make: Callable[[str], nn.Module]) -> _Builder:
    """A :func:`_classifier` on MNIST-format data ``kind`` (55k/5k/10k)."""
    return _classifier(lambda d: _mnist_splits(kind, d), f"{kind} (55k/5k/10k)", model_desc, make)


def _cifar10_splits(data_dir: str | None) -> Splits:
    """CIFAR-10 as ``(N, 3, 32, 32)``, standardised per channel."""
    from superlevel.data.cifar import load_cifar10

    return _image_splits(load_cifar10(data_dir), (0, 2, 3), add_channel=False)


# ----------------------------------------------------------------- text tasks


def _sequence_cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))


def _sequence_accuracy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Per-sequence mean accuracy, summed over sequences (see the module docstring).
    return (out.argmax(-1) == target).float().mean(-1).sum()


def _char_model(make: Callable[[int, int], nn.Module], model_desc: str) -> _Builder:
    """A builder for a character language model ``make(vocab_size, seq_len)``."""

    def build(
        spec: TaskSpec,
        seed: int,
        device: torch.device,
        budget: Budget,
        data_dir: str | None,
        opts: dict[str, Any],
    ) -> TaskInstance:
        from superlevel.data.text import load_char_corpus

        corpus = load_char_corpus(opts["corpus"], data_dir=data_dir)
        seq_len = opts["seq_len"]
        windows = {s: corpus.windows(s, seq_len) for s in ("train", "val", "test")}
        tx, ty = windows["train"]
        cap = _train_cap(opts, budget, len(ty))
        # Training windows are taken in a fixed shuffled order so a cap samples the whole text.
        perm = torch.randperm(len(ty), generator=torch.Generator().manual_seed(_SPLIT_SEED))[:cap]
        data = Splits(tx[perm], ty[perm], *windows["val"], *windows["test"]).to(device)
        vocab = corpus.vocab_size
        model = _init_model(seed, device, lambda: make(vocab, seq_len))
        info = {
            "data": f"{corpus.source} ({corpus.sizes()} chars)",
            "model": model_desc,
            "vocab_size": vocab,
            "sizes": data.sizes(),
            "parameters": _parameter_count(model),
            **opts,
        }
        return _accuracy_instance(
            spec,
            seed,
            device,
            budget,
            data,
            model,
            info,
            loss_fn=_sequence_cross_entropy,
            metric_fn=_sequence_accuracy,
            eval_batch_size=256,
        )

    return build


# ---------------------------------------------------------------- registration

_ACT = {"activation": "relu"}
_TEXT_OPTIONS = {"subset": None, "corpus": None}
_MNIST1D = "MNIST-1D (generated, 4000/1000)"
_CIFAR10 = "CIFAR-10 (45k/5k/10k), no augmentation"


def _mlp(*sizes: int) -> Callable[[str], nn.Module]:
    """``make(activation)`` for an MLP with layer ``sizes``."""
    return lambda activation: models.mlp(list(sizes), activation)


for _spec in [
    TaskSpec(
        "quadratic",
        "ill-conditioned quadratic (condition 1e3, dim 50) with additive gradient noise",
        {"quick": Budget(32, 20, target=5e-2), "full": Budget(32, 200, target=1e-3)},
        {"dim": 50, "condition": 1000.0, "noise": 1.0},
        None,
        _synthetic(_quadratic),
    ),
    TaskSpec(
        "rosenbrock",
        "2-D Rosenbrock valley from (-1.2, 1) with additive gradient noise",
        {"quick": Budget(16, 30, target=1e-2), "full": Budget(16, 300, target=1e-4)},
        {"noise": 1.0},
        None,
        _synthetic(_rosenbrock),
    ),
    TaskSpec(
        "multiwell",
        "2-D sum of Gaussian wells with disconnected sub-level sets, noisy gradients",
        {"quick": Budget(16, 20, target=1e-2), "full": Budget(16, 200, target=1e-4)},
        {"n_wells": 3, "noise": 0.1},
        None,
        _synthetic(_multiwell),
    ),
    TaskSpec(
        "digits_mlp",
        "sklearn 8x8 digits, MLP 64-64-10",
        {"quick": Budget(64, 10, target=0.9), "full": Budget(64, 100, target=0.95)},
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        None,
        _classifier(_digits_splits, "sklearn 8x8 digits", "MLP 64-64-10", _mlp(64, 64, 10)),
    ),
    TaskSpec(
        "mnist1d_mlp",
        "MNIST-1D (generated), MLP 40-100-100-10 (paper: ~68%)",
        {"quick": Budget(100, 20, target=0.5), "full": Budget(100, 150, target=0.6)},
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        None,
        _classifier(_mnist1d_splits, _MNIST1D, "MLP 40-100-100-10", _mlp(40, 100, 100, 10)),
    ),
    TaskSpec(
        "mnist1d_cnn",
        "MNIST-1D (generated), 3-layer 1-D CNN (paper: ~94%)",
        {"quick": Budget(100, 20, target=0.7), "full": Budget(100, 150, target=0.9)},
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        None,
        _classifier(_mnist1d_splits, _MNIST1D, "CNN 3x conv1d 25ch", models.mnist1d_cnn),
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
        _mnist_classifier("mnist", "logistic regression", lambda act: models.mlp([784, 10])),
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
        _mnist_classifier("mnist", "MLP 784-256-256-10", _mlp(784, 256, 256, 10)),
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
        _mnist_classifier("mnist", "CNN conv16-conv32-fc", models.mnist_cnn),
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
        _mnist_classifier("fashion-mnist", "DeepOBS 2c2d", models.fmnist_2c2d),
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
        _classifier(_cifar10_splits, _CIFAR10, "3c3d", models.cifar_3c3d, eval_batch_size=500),
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
        _char_model(lambda vocab, _seq_len: models.CharLSTM(vocab), "LSTM 2x128, embedding 128"),
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
        _char_model(
            lambda vocab, seq_len: models.CharTransformer(vocab, context=seq_len),
            "decoder-only Transformer, 2 layers, d=128, 4 heads",
        ),
    ),
]:
    _register(_spec)
del _spec
