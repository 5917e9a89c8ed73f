"""Model architectures of the task ladder.

Where a task copies a published benchmark the architecture follows it:

- ``mnist1d_mlp`` / ``mnist1d_cnn``: the MNIST-1D paper's MLP (40-100-100-10) and CNN
  (three stride-2 1-D convolutions with 25 channels, then a linear layer). The paper's
  own MLP adds a skip connection around its second layer (:class:`SkipMLP`, used by the
  tasks' ``protocol="paper"`` option).
- ``fmnist_2c2d``: DeepOBS ``2c2d``: conv 5x5x32 (same) - max-pool 2 - conv 5x5x64 (same)
  - max-pool 2 - fc 1024 - fc 10, ReLU.
- ``cifar10_3c3d``: DeepOBS ``3c3d``: conv 5x5x64 (valid) - max-pool 3/2 - conv 3x3x96
  (valid) - max-pool 3/2 - conv 3x3x128 (same) - max-pool 3/2 - fc 512 - fc 256 - fc 10.
  TensorFlow's "same" pooling pads bottom/right only; we pad 1 on every side, which
  gives the same feature-map sizes (14, 6, 3).
- ``char_lstm``: DeepOBS ``tolstoi_char_rnn``: embedding 128, 2-layer LSTM with 128
  units, linear read-out over the vocabulary.
- ``char_transformer``: a small pre-norm decoder-only Transformer with learned
  positions and a causal mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "CharLSTM",
    "CharTransformer",
    "LandscapeModel",
    "SkipMLP",
    "cifar_3c3d",
    "fmnist_2c2d",
    "make_activation",
    "mlp",
    "mnist1d_cnn",
    "mnist_cnn",
]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by name (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Fully connected net ``sizes[0] -> ... -> sizes[-1]``; inputs are flattened first."""
    if len(sizes) < 2:
        raise ValueError(f"mlp needs at least input and output sizes, got {list(sizes)}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(make_activation(activation))
    return nn.Sequential(*layers)


class SkipMLP(nn.Module):
    """The MNIST-1D paper's MLP: ``h = act(W1 x)``, ``h = h + act(W2 h)``, ``out = W3 h``."""

    def __init__(self, n_in: int, hidden: int, n_out: int, activation: str = "relu") -> None:
        super().__init__()
        self.linear1 = nn.Linear(n_in, hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, n_out)
        self.act1 = make_activation(activation)
        self.act2 = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act1(self.linear1(x.flatten(1)))
        h = h + self.act2(self.linear2(h))
        return self.linear3(h)


def mnist1d_cnn(activation: str = "relu", channels: int = 25) -> nn.Sequential:
    """The MNIST-1D paper's CNN on ``(B, 40)`` signals: lengths 40 -> 19 -> 10 -> 5."""
    act = activation
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        make_activation(act),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        make_activation(act),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        make_activation(act),
        nn.Flatten(),
        nn.Linear(channels * 5, 10),
    )


def _conv5_pool2(channels: Sequence[int], activation: str) -> list[nn.Module]:
    """``conv 5x5 (same) - activation - max-pool 2`` for each step of ``channels``."""
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [
            nn.Conv2d(c_in, c_out, 5, padding=2),
            make_activation(activation),
            nn.MaxPool2d(2),
        ]
    return layers


def mnist_cnn(activation: str = "relu") -> nn.Sequential:
    """A small LeNet-style CNN for 28x28 images: conv5x16 - pool - conv5x32 - pool - fc 10."""
    return nn.Sequential(
        *_conv5_pool2([1, 16, 32], activation),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


def fmnist_2c2d(activation: str = "relu") -> nn.Sequential:
    """DeepOBS 2c2d for ``(B, 1, 28, 28)`` images (3.27 M parameters)."""
    return nn.Sequential(
        *_conv5_pool2([1, 32, 64], activation),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 1024),
        make_activation(activation),
        nn.Linear(1024, 10),
    )


def cifar_3c3d(activation: str = "relu") -> nn.Sequential:
    """DeepOBS 3c3d for ``(B, 3, 32, 32)`` images (0.9 M parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 5),
        make_activation(activation),
        nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(64, 96, 3),
        make_activation(activation),
        nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(96, 128, 3, padding=1),
        make_activation(activation),
        nn.MaxPool2d(3, 2, padding=1),
        nn.Flatten(),
        nn.Linear(128 * 3 * 3, 512),
        make_activation(activation),
        nn.Linear(512, 256),
        make_activation(activation),
        nn.Linear(256, 10),
    )


class CharLSTM(nn.Module):
    """Embedding - multi-layer LSTM - linear; ``(B, T)`` ids -> ``(B, T, vocab)`` logits."""

    def __init__(
        self, vocab_size: int, embed: int = 128, hidden: int = 128, layers: int = 2
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(ids))
        return self.head(out)


class CharTransformer(nn.Module):
    """Decoder-only Transformer: ``(B, T)`` ids -> ``(B, T, vocab)`` next-character logits.

    Pre-norm blocks (``norm_first``), GELU, learned absolute positions, causal mask, and
    the output layer tied to the input embedding. The embedding starts at N(0, 0.02^2)
    (GPT-2's init): tied to the output, ``nn.Embedding``'s default N(0, 1) would make the
    first logits of order ``sqrt(d_model)`` and the initial cross-entropy ~25x ``ln(vocab)``.
    """

    def __init__(
        self,
        vocab_size: int,
        context: int,
        d_model: int = 128,
        heads: int = 4,
        layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.pos = nn.Parameter(torch.zeros(context, d_model))
        nn.init.normal_(self.pos, std=0.02)
        block = nn.TransformerEncoderLayer(
            d_model,
            heads,
            dim_feedforward=4 * d_model,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embed.weight  # weight tying

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"sequence length {t} exceeds the context {self.context}")
        h = self.embed(ids) + self.pos[:t]
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=ids.device)
        h = self.blocks(h, mask=mask, is_causal=True)
        return self.head(self.norm(h))


class LandscapeModel(nn.Module):
    """A parameter vector on a synthetic landscape, with additive gradient noise.

    ``forward(noise)`` with ``noise`` of shape ``(B, dim)`` returns the per-sample values
    ``f(theta) + <noise_b, theta>``; their mean has gradient
    ``grad f(theta) + mean_b noise_b``, an unbiased noisy gradient whose noise shrinks
    like ``1 / sqrt(B)``. With ``noise = 0`` the output is the exact ``f(theta)``.
    """

    def __init__(self, fn: nn.Module | object, theta0: torch.Tensor) -> None:
        super().__init__()
        self.fn = fn
        self.theta = nn.Parameter(theta0.clone())

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.fn(self.theta) + noise @ self.theta
