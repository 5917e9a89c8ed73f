"""A real transformers.Trainer, tiny GPT-2 from a config, KJV characters: the rule stays intact."""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
transformers = pytest.importorskip("transformers", reason="the hf extra is not installed")

from superlevel.data import MissingDataError, load_char_corpus  # noqa: E402
from superlevel.integrations import find_superlevel, superlevel_stats  # noqa: E402
from superlevel.integrations.hf import (  # noqa: E402
    SuperLevelTrainerCallback,
    check_trainer_setup,
    superlevel_optimizers,
)
from superlevel.optim import SuperLevelSGD  # noqa: E402

SEQ, WINDOWS, BATCH = 32, 256, 16  # 16 steps per epoch
STEPS = 32
LR, DECAY = 0.5, 0.02


@pytest.fixture(scope="module")
def corpus():
    try:
        corpus = load_char_corpus(data_dir=os.environ.get("SUPERLEVEL_DATA"))
    except MissingDataError as exc:
        pytest.skip(f"the KJV text is not in the data directory ($SUPERLEVEL_DATA): {exc}")
    x, _ = corpus.windows("train", SEQ)
    return corpus.vocab_size, x[:WINDOWS].clone()


class Windows(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.x[i]}  # GPT-2 shifts the labels


def _model(vocab: int):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=vocab,
        n_positions=SEQ,
        n_embd=32,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return transformers.GPT2LMHeadModel(config)


def _args(out, **kw):
    base = dict(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    base.update(kw)
    return transformers.TrainingArguments(**base)


class NormProbe(transformers.TrainerCallback):
    """The gradient norm right before optimizer.step() (after any Trainer clipping), and
    the norm SuperLevelSGD reports having used, step by step."""

    def __init__(self) -> None:
        self.before: list[float] = []
        self.seen: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.before.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    def on_optimizer_step(self, args, state, control, optimizer=None, **kw):
        self.seen.append(float(find_superlevel(optimizer).stats()["grad_norm"]))


def _run(tmp_path, corpus, name, resume=None, **kw):
    vocab, x = corpus
    model = _model(vocab)
    probe = NormProbe()
    trainer = transformers.Trainer(
        model=model,
        args=_args(tmp_path / name, max_grad_norm=0.0, **kw),
        train_dataset=Windows(x),
        optimizers=superlevel_optimizers(model, lr=LR, decay=DECAY),
        callbacks=[SuperLevelTrainerCallback(), probe],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, probe


def test_with_the_helper_the_rule_is_intact_and_resume_is_exact(tmp_path, corpus):
    whole, probe = _run(tmp_path, corpus, "whole", save_strategy="steps", save_steps=8)
    # accelerate wraps the optimizer; the helpers see through it
    opt = find_superlevel(whole.optimizer)
    assert type(whole.optimizer).__name__ == "AcceleratedOptimizer" and opt is not None
    logged = [h for h in whole.state.log_history if "superlevel/lr" in h and "loss" in h]
    assert [h["step"] for h in logged] == list(range(1, STEPS + 1))
    for h in logged:  # a_t at every step, no second decay on top
        t = h["superlevel/step"]  # completed steps; a_t was computed at t - 1
        assert t == h["step"]
        assert h["superlevel/lr"] == pytest.approx(LR * math.exp(-DECAY * (t - 1)), rel=1e-6)
    assert opt.param_groups[0]["lr"] == LR  # the constant schedule left a0 alone
    # the optimizer saw the unclipped norm, which is above the Trainer's default clip of 1
    assert probe.seen == pytest.approx(probe.before, rel=1e-5)
    assert max(probe.seen) > 1.0

    resumed, _ = _run(tmp_path, corpus, "resumed", resume=str(tmp_path / "whole" / "checkpoint-8"))
    assert resumed.state.global_step == whole.state.global_step == STEPS
    a = dict(whole.model.named_parameters())
    b = dict(resumed.model.named_parameters())
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bitwise
    assert superlevel_stats(resumed.optimizer) == superlevel_stats(whole.optimizer)


def test_the_callback_catches_the_trainer_defaults(tmp_path, corpus):
    vocab, x = corpus
    model = _model(vocab)
    opt = SuperLevelSGD(model.parameters(), lr=LR, decay=DECAY)
    # the defaults: a linear decay to 0 and max_grad_norm=1.0
    args = _args(tmp_path / "defaults", max_steps=8)
    assert args.lr_scheduler_type == "linear" and args.max_grad_norm == 1.0
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=Windows(x),
        optimizers=(opt, None),
        callbacks=[SuperLevelTrainerCallback()],
    )
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError) as err:
        trainer.train()
    msg = str(err.value)
    assert "LambdaLR takes the lr factor from 1 down to 0" in msg
    assert "superlevel_optimizers" in msg and "lr_scheduler_type='constant'" in msg
    assert "max_grad_norm=1" in msg and "max_grad_norm=0.0" in msg
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))

    # strict=False trains on after a loud warning: the double decay and the clip happen
    model = _model(vocab)
    opt = SuperLevelSGD(model.parameters(), lr=LR, decay=DECAY)
    probe = NormProbe()
    trainer = transformers.Trainer(
        model=model,
        args=_args(tmp_path / "warned", max_steps=8),
        train_dataset=Windows(x),
        optimizers=(opt, None),
        callbacks=[SuperLevelTrainerCallback(strict=False), probe],
    )
    with pytest.warns(UserWarning, match="changes SuperLevelSGD's rule"):
        trainer.train()
    last = [h for h in trainer.state.log_history if "superlevel/lr" in h][-1]
    assert last["superlevel/lr"] < 0.5 * LR * math.exp(-DECAY * 7)  # decayed twice
    assert max(probe.seen) <= 1.0 + 1e-5  # never saw a norm above the clip
    assert max(h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h) > 1.0


def test_check_trainer_setup_sees_through_wrappers_and_refuses_the_guard():
    from superlevel.stability import LyapunovGuard

    w = torch.zeros(2, requires_grad=True)
    opt, sched = superlevel_optimizers([w], lr=0.1, decay=0.01)
    args = transformers.TrainingArguments(output_dir="unused", max_grad_norm=0.0, report_to=[])
    assert check_trainer_setup(args, opt, sched, 100) == []
    warmup = transformers.get_constant_schedule_with_warmup(opt, num_warmup_steps=10)
    assert check_trainer_setup(args, opt, warmup, 100) == []  # warmup only rises
    cosine = transformers.get_cosine_schedule_with_warmup(opt, 10, 100)
    assert "down to 0" in check_trainer_setup(args, opt, cosine, 100)[0]
    step = torch.optim.lr_scheduler.StepLR(opt, 10)
    assert "may lower the lr" in check_trainer_setup(args, opt, step, 100)[0]
    no_decay, sched2 = superlevel_optimizers([w], lr=0.1, decay=0.0)
    assert check_trainer_setup(args, no_decay, cosine, 100) == []  # its only decay: allowed
    assert "closure" in check_trainer_setup(args, LyapunovGuard(opt), sched, 100)[0]
    assert "no SuperLevelSGD" in check_trainer_setup(args, torch.optim.SGD([w], lr=0.1))[0]


def test_optimizer_cls_and_kwargs_with_a_constant_schedule(tmp_path, corpus):
    vocab, x = corpus
    model = _model(vocab)
    args = _args(
        tmp_path / "cls",
        max_steps=4,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        weight_decay=0.01,
    )
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=Windows(x),
        optimizer_cls_and_kwargs=(SuperLevelSGD, {"lr": LR, "decay": DECAY}),
        callbacks=[SuperLevelTrainerCallback()],  # strict: the setup passes
    )
    trainer.train()
    opt = find_superlevel(trainer.optimizer)
    # the Trainer's two groups: decay on weights, none on biases and norms (decoupled here)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    stats = superlevel_stats(trainer.optimizer)
    assert stats["superlevel/step"] == 4
    assert stats["superlevel/lr"] == pytest.approx(LR * math.exp(-DECAY * 3), rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"prefix": None}, TypeError, "prefix"),
        ({"prefix": 3}, TypeError, "prefix"),
        ({"prefix": ""}, ValueError, "prefix"),
        ({"strict": "no"}, TypeError, "strict"),
        ({"strict": 0}, TypeError, "strict"),
    ],
)
def test_bad_callback_arguments_fail_at_construction(kwargs, error, named):
    # Before: accepted; prefix=None logged "None/lr", strict="no" raised like True.
    with pytest.raises(error, match=named):
        SuperLevelTrainerCallback(**kwargs)
