"""Character language models on a text corpus (by default the KJV Bible).

An example is one window of ``seq_len`` characters; ``metric_fn`` sums the per-sequence
mean accuracy over the batch, so the mean over rows is the per-character accuracy.

Option ``eval_subset`` (``None``: everything) evaluates on at most that many windows of
each split: the first ones of the validation and test text (a contiguous passage) and the
first of the training windows in their fixed shuffled order (a sample of the whole
training text). Training still uses every training window. A run evaluates after every
epoch, so on a CPU budget of many short epochs the evaluation, not the training, is most
of the cost; the cap is what makes 1500-step text runs affordable there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from superlevel.bench import models
from superlevel.bench.task import Batch, Budget, TaskInstance
from superlevel.bench.tasks.assembly import (
    SPLIT_SEED,
    Builder,
    accuracy_instance,
    init_model,
    parameter_count,
    train_cap,
)
from superlevel.bench.tasks.registry import TaskSpec, positive, register
from superlevel.data.tensors import Splits, eval_iterator

_TEXT_OPTIONS = {"subset": None, "corpus": None, "eval_subset": None}
_EVAL_BATCH_SIZE = 256
_check_positive_windows = positive("eval_subset", int)


def _check_eval_subset(v: Any) -> None:
    if v is not None:
        _check_positive_windows(v)


def _sequence_cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))


def _sequence_accuracy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Per-sequence mean accuracy, summed over sequences (see the module docstring).
    return (out.argmax(-1) == target).float().mean(-1).sum()


def _char_model(make: Callable[[int, int], nn.Module], model_desc: str) -> Builder:
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
        cap = train_cap(opts, budget, len(ty))
        # Training windows are taken in a fixed shuffled order so a cap samples the whole text.
        perm = torch.randperm(len(ty), generator=torch.Generator().manual_seed(SPLIT_SEED))[:cap]
        data = Splits(tx[perm], ty[perm], *windows["val"], *windows["test"]).to(device)
        vocab = corpus.vocab_size
        model = init_model(seed, device, lambda: make(vocab, seq_len))
        eval_cap = opts["eval_subset"]
        fields = (getattr(data, f.name) for f in dataclasses.fields(data))
        evaluated = data if eval_cap is None else Splits(*(t[:eval_cap] for t in fields))
        info = {
            "data": f"{corpus.source} ({corpus.sizes()} chars)",
            "model": model_desc,
            "vocab_size": vocab,
            "sizes": data.sizes(),
            "evaluated_sizes": evaluated.sizes(),
            "parameters": parameter_count(model),
            **opts,
        }
        instance = accuracy_instance(
            spec,
            seed,
            device,
            budget,
            data,
            model,
            info,
            loss_fn=_sequence_cross_entropy,
            metric_fn=_sequence_accuracy,
            eval_batch_size=_EVAL_BATCH_SIZE,
        )

        def eval_batches(split: str) -> Iterator[Batch]:
            return eval_iterator(*evaluated.get(split), _EVAL_BATCH_SIZE)

        return dataclasses.replace(instance, eval_batches=eval_batches)

    return build


for _spec in [
    TaskSpec(
        "char_lstm",
        "character language model on the KJV Bible, DeepOBS tolstoi-style 2x128 LSTM",
        {
            "quick": Budget(50, 1, target=0.3, max_train_examples=2_000),
            "full": Budget(50, 200, target=0.6),
        },
        {**_TEXT_OPTIONS, "seq_len": 50},
        "text",
        _char_model(lambda vocab, _seq_len: models.CharLSTM(vocab), "LSTM 2x128, embedding 128"),
        metric_name="accuracy",
        higher_is_better=True,
    ),
    TaskSpec(
        "char_transformer",
        "character language model on the KJV Bible, small decoder-only Transformer",
        {
            "quick": Budget(32, 1, target=0.25, max_train_examples=2_000),
            "full": Budget(64, 50, target=0.6),
        },
        {**_TEXT_OPTIONS, "seq_len": 64},
        "text",
        _char_model(
            lambda vocab, seq_len: models.CharTransformer(vocab, context=seq_len),
            "decoder-only Transformer, 2 layers, d=128, 4 heads",
        ),
        metric_name="accuracy",
        higher_is_better=True,
    ),
]:
    register(_spec, {"eval_subset": _check_eval_subset})
del _spec
