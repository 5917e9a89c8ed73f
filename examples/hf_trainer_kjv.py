"""SuperLevelSGD under the Hugging Face Trainer: its defaults against the fixed setup.

A GPT-2 built from a config (no download) learns KJV characters. The same run twice:

* ``defaults``: ``optimizers=(SuperLevelSGD(...), None)`` and the Trainer's defaults
  (a linear decay to 0 on top of the optimizer's own decay, ``max_grad_norm=1.0``);
  the callback only warns (``strict=False``) so that the run shows what happens;
* ``fixed``: ``superlevel_optimizers(...)`` (a constant schedule) and ``max_grad_norm=0``.

Printed per run: ``a_t`` at the last step against ``lr * exp(-decay * (t - 1))``, and the
largest gradient norm the optimizer saw against the largest true norm (measured from the
gradients before the Trainer's clip).

Usage::

    SUPERLEVEL_DATA=data python examples/hf_trainer_kjv.py --steps 100
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402
import transformers  # noqa: E402

from superlevel.data import load_char_corpus  # noqa: E402
from superlevel.integrations import find_superlevel  # noqa: E402
from superlevel.integrations.hf import (  # noqa: E402
    SuperLevelTrainerCallback,
    superlevel_optimizers,
)
from superlevel.optim import SuperLevelSGD  # noqa: E402

SEQ = 32


class Windows(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.x[i]}


class Norms(transformers.TrainerCallback):
    """The gradient norm the optimizer used, step by step."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
        self.seen.append(float(find_superlevel(optimizer).stats()["grad_norm"]))


def run(name: str, x: torch.Tensor, vocab: int, steps: int, lr: float, decay: float) -> None:
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=SEQ, n_embd=64, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    fixed = name == "fixed"
    norms = Norms()
    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(
            output_dir=out, per_device_train_batch_size=16, max_steps=steps, logging_steps=1,
            save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
            **({"max_grad_norm": 0.0} if fixed else {}),
        )  # fmt: skip
        optimizers = (
            superlevel_optimizers(model, lr=lr, decay=decay)
            if fixed
            else (SuperLevelSGD(model.parameters(), lr=lr, decay=decay), None)
        )
        trainer = transformers.Trainer(
            model=model, args=args, train_dataset=Windows(x), optimizers=optimizers,
            callbacks=[SuperLevelTrainerCallback(strict=False), norms],
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "superlevel/lr" in h]
    last = logs[-1]
    t = last["superlevel/step"]
    # the Trainer logs the pre-clip norm as grad_norm: the true norm
    true = max(h["grad_norm"] for h in logs)
    print(
        f"{name:>8}: step {int(t)}: a_t = {last['superlevel/lr']:.6g} (rule: "
        f"{lr * math.exp(-decay * (t - 1)):.6g}), group lr = "
        f"{find_superlevel(trainer.optimizer).param_groups[0]['lr']:.4g}; largest norm "
        f"seen by the optimizer {max(norms.seen):.4f}, largest true norm {true:.4f}; "
        f"final loss {last['loss']:.4f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--decay", type=float, default=0.001)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_char_corpus()
    x, _ = corpus.windows("train", SEQ)
    x = x[: 16 * args.steps].clone()
    print(f"GPT-2 (2 layers, width 64) on KJV characters, {args.steps} steps, batch 16")
    for name in ("defaults", "fixed"):
        run(name, x, corpus.vocab_size, args.steps, args.lr, args.decay)


if __name__ == "__main__":
    main()
