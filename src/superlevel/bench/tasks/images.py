"""Ten-class classification tasks: sklearn digits, MNIST-1D, MNIST, Fashion-MNIST, CIFAR-10.

Validation is carved from the training data by a fixed permutation (the same for every
seed); label noise and class imbalance change the *training* split only, also
independently of the seed. The metric is accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from superlevel.bench import models
from superlevel.bench.registry import ConfigError
from superlevel.bench.task import Budget, TaskInstance
from superlevel.bench.tasks.assembly import (
    SPLIT_SEED,
    Builder,
    accuracy_instance,
    init_model,
    parameter_count,
    sharpness_probe,
    train_cap,
)
from superlevel.bench.tasks.registry import TaskSpec, register
from superlevel.data.tensors import (
    Splits,
    apply_imbalance,
    apply_label_noise,
    carve_validation,
    take_subset,
)

# sharpness_examples > 0: a finished run also measures the sharpness of its final model.
_CLASSIFICATION_OPTIONS = {
    "subset": None,
    "label_noise": 0.0,
    "imbalance": 1.0,
    "sharpness_examples": 0,
}
_ACT = {"activation": "relu"}
_MNIST1D_OPTIONS = {**_CLASSIFICATION_OPTIONS, **_ACT, "protocol": "ladder"}
_MNIST1D = "MNIST-1D (generated, 4000/1000)"
_MNIST1D_PAPER = "MNIST-1D (generated, 4000/1000), paper protocol: 4000 train, val = test"
_CIFAR10 = "CIFAR-10 (45k/5k/10k), no augmentation"


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
) -> Builder:
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
        tx, ty = apply_imbalance(tx, ty, float(opts["imbalance"]), num_classes, SPLIT_SEED)
        tx, ty = take_subset(tx, ty, train_cap(opts, budget, len(ty)))
        ty = apply_label_noise(ty, float(opts["label_noise"]), num_classes, SPLIT_SEED)
        data = Splits(tx, ty, splits.val_x, splits.val_y, splits.test_x, splits.test_y)
        data = data.to(device)
        model = init_model(seed, device, lambda: make(act))
        info = {
            "data": data_desc,
            "model": f"{model_desc} ({act})" if "activation" in opts else model_desc,
            "sizes": data.sizes(),
            "num_classes": num_classes,
            "parameters": parameter_count(model),
            **opts,
        }
        task = accuracy_instance(
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
        n = int(opts["sharpness_examples"])
        if n:
            task.probe = sharpness_probe(model, _cross_entropy, data.train_x[:n], data.train_y[:n])
        return task

    return build


def _splits_from_train_test(
    x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, n_val: int
) -> Splits:
    tx, ty, vx, vy = carve_validation(x, y, n_val, SPLIT_SEED)
    return Splits(tx, ty, vx, vy, x_test, y_test)


def _digits_splits(data_dir: str | None) -> Splits:
    """sklearn's digits (bundled, ``data_dir`` unused): a fixed 20% test, then 10% validation."""
    from superlevel.data.generated import load_digits

    x_np, y_np = load_digits()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = len(y) // 5
    test, rest = perm[:n_test], perm[n_test:]
    return _splits_from_train_test(x[rest], y[rest], x[test], y[test], n_val=len(y) // 10)


def _mnist1d_splits(data_dir: str | None) -> Splits:
    """MNIST-1D (generated, ``data_dir`` unused) with 500 validation examples."""
    from superlevel.data.base import cache_dir
    from superlevel.data.generated import load_mnist1d

    d = load_mnist1d(cache_dir=cache_dir())
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    xt, yt = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    return _splits_from_train_test(x, y, xt, yt, n_val=500)


def _mnist1d_paper_splits(data_dir: str | None) -> Splits:
    """MNIST-1D as the paper trains it: all 4000 training examples, no validation carve-out.

    The paper evaluates on the test split only, so the ``val`` split *is* the test split
    here: fine for reproducing its table, never for choosing hyperparameters.
    """
    from superlevel.data.base import cache_dir
    from superlevel.data.generated import load_mnist1d

    d = load_mnist1d(cache_dir=cache_dir())
    x, y = torch.from_numpy(d["x"]), torch.from_numpy(d["y"])
    xt, yt = torch.from_numpy(d["x_test"]), torch.from_numpy(d["y_test"])
    return Splits(x, y, xt, yt, xt, yt)


MNIST1D_PROTOCOLS = ("ladder", "paper")


def _check_protocol(v: Any) -> None:
    if v not in MNIST1D_PROTOCOLS:
        raise ConfigError(f"option protocol must be one of {list(MNIST1D_PROTOCOLS)}, got {v!r}")


def _mnist1d(
    ladder: tuple[str, Callable[[str], nn.Module]], paper: tuple[str, Callable[[str], nn.Module]]
) -> Builder:
    """An MNIST-1D builder with the ``protocol`` option: ``(model_desc, make)`` for each.

    ``ladder`` (default): 3500 train / 500 validation carved from the training set.
    ``paper``: the MNIST-1D paper's protocol (its model, all 4000 training examples, the
    test split as validation); with the ``full`` budget (batch 100, 150 epochs) that is
    its 6000 steps.
    """
    builders = {
        "ladder": _classifier(_mnist1d_splits, _MNIST1D, *ladder),
        "paper": _classifier(_mnist1d_paper_splits, _MNIST1D_PAPER, *paper),
    }

    def build(
        spec: TaskSpec,
        seed: int,
        device: torch.device,
        budget: Budget,
        data_dir: str | None,
        opts: dict[str, Any],
    ) -> TaskInstance:
        return builders[opts["protocol"]](spec, seed, device, budget, data_dir, opts)

    return build


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


def _mnist_classifier(kind: str, model_desc: str, make: Callable[[str], nn.Module]) -> Builder:
    """A :func:`_classifier` on MNIST-format data ``kind`` (55k/5k/10k)."""
    return _classifier(lambda d: _mnist_splits(kind, d), f"{kind} (55k/5k/10k)", model_desc, make)


def _cifar10_splits(data_dir: str | None) -> Splits:
    """CIFAR-10 as ``(N, 3, 32, 32)``, standardised per channel."""
    from superlevel.data.cifar import load_cifar10

    return _image_splits(load_cifar10(data_dir), (0, 2, 3), add_channel=False)


def _mlp(*sizes: int) -> Callable[[str], nn.Module]:
    """``make(activation)`` for an MLP with layer ``sizes``."""
    return lambda activation: models.mlp(list(sizes), activation)


for _spec in [
    TaskSpec(
        "digits_mlp",
        "sklearn 8x8 digits, MLP 64-64-10",
        {"quick": Budget(64, 10, target=0.9), "full": Budget(64, 100, target=0.95)},
        {**_CLASSIFICATION_OPTIONS, **_ACT},
        None,
        _classifier(_digits_splits, "sklearn 8x8 digits", "MLP 64-64-10", _mlp(64, 64, 10)),
        metric_name="accuracy",
        higher_is_better=True,
    ),
    TaskSpec(
        "mnist1d_mlp",
        "MNIST-1D (generated), MLP 40-100-100-10 (paper: ~68%)",
        {"quick": Budget(100, 20, target=0.5), "full": Budget(100, 150, target=0.6)},
        _MNIST1D_OPTIONS,
        None,
        _mnist1d(
            ("MLP 40-100-100-10", _mlp(40, 100, 100, 10)),
            ("MLP 40-100-100-10, skip connection", lambda act: models.SkipMLP(40, 100, 10, act)),
        ),
        metric_name="accuracy",
        higher_is_better=True,
    ),
    TaskSpec(
        "mnist1d_cnn",
        "MNIST-1D (generated), 3-layer 1-D CNN (paper: ~94%)",
        {"quick": Budget(100, 20, target=0.7), "full": Budget(100, 150, target=0.9)},
        _MNIST1D_OPTIONS,
        None,
        _mnist1d(
            ("CNN 3x conv1d 25ch", models.mnist1d_cnn),
            ("CNN 3x conv1d 25ch", models.mnist1d_cnn),
        ),
        metric_name="accuracy",
        higher_is_better=True,
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
        metric_name="accuracy",
        higher_is_better=True,
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
        metric_name="accuracy",
        higher_is_better=True,
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
        metric_name="accuracy",
        higher_is_better=True,
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
        metric_name="accuracy",
        higher_is_better=True,
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
        metric_name="accuracy",
        higher_is_better=True,
    ),
]:
    register(_spec, {"protocol": _check_protocol})
del _spec
