"""SuperLevelSGD in Lightning on MNIST: what LearningRateMonitor logs against the real rate.

Trains an MLP with ``SuperLevelCallback`` (and a probe batch: the stability monitor's CSV
and PNG land in the logger's folder) next to Lightning's ``LearningRateMonitor``, then
prints the last logged values of both. ``--guard`` returns a ``LyapunovGuard`` from
``configure_optimizers`` and prints its counters against ``global_step``.

Usage::

    SUPERLEVEL_DATA=data python examples/lightning_mnist.py --epochs 2 --out runs
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lightning.pytorch as pl  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch.callbacks import LearningRateMonitor  # noqa: E402
from lightning.pytorch.loggers import CSVLogger  # noqa: E402
from torch import nn  # noqa: E402

from superlevel.data import load_mnist  # noqa: E402
from superlevel.integrations import find_guard  # noqa: E402
from superlevel.integrations.lightning import SuperLevelCallback  # noqa: E402
from superlevel.optim import SuperLevelSGD  # noqa: E402
from superlevel.stability import LyapunovGuard  # noqa: E402


class MLP(pl.LightningModule):
    def __init__(self, lr: float, decay: float, guard: bool) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        self.lr, self.decay, self.guard = lr, decay, guard

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        opt = SuperLevelSGD(self.parameters(), lr=self.lr, decay=self.decay)
        return LyapunovGuard(opt, max_retries=10, model=self) if self.guard else opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--decay", type=float, default=5e-4)
    ap.add_argument("--guard", action="store_true")
    ap.add_argument("--out", default="runs")
    args = ap.parse_args()
    torch.manual_seed(0)
    data = load_mnist()
    x = torch.from_numpy(data["train_images"].copy()).float().div(255).flatten(1)
    y = torch.from_numpy(data["train_labels"].copy()).long()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=128, shuffle=True
    )
    callback = SuperLevelCallback(
        probe_batch=(x[:512], y[:512]), loss_fn=nn.functional.cross_entropy, every=200
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=CSVLogger(args.out, name="lightning_mnist"),
        callbacks=[callback, LearningRateMonitor(logging_interval="step")],
        enable_progress_bar=False,
        log_every_n_steps=50,
    )
    model = MLP(args.lr, args.decay, args.guard)
    trainer.fit(model, loader)
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    last = {k: v for r in rows for k, v in r.items() if v != ""}  # last value of each column
    print(f"global_step {trainer.global_step}")
    print(f"LearningRateMonitor: lr-SuperLevelSGD = {last.get('lr-SuperLevelSGD')}")
    for key in ("step", "lr", "effective_lr", "grad_norm", "scale"):
        print(f"SuperLevelCallback: superlevel/{key} = {last.get('superlevel/' + key)}")
    guard = find_guard(trainer.optimizers[0])
    if guard is not None:
        print(f"guard counters {guard.counters}")
    print(f"monitor files: {trainer.log_dir}/stability.csv, stability.png")


if __name__ == "__main__":
    main()
