"""The study's sizes: ``tiny`` (the test suite), ``cpu`` (the committed results), ``gpu``.

- ``tiny`` checks the pipeline end to end in well under two minutes on two cores; its
  numbers mean nothing.
- ``cpu`` is sized for at most about 8 h of wall on a two-core machine with two workers.
  The tuned sections train every trial in full (the protocol's default, see
  docs/benchmark.md), about 14 runs per (setting, optimizer): 9 trials, edge extensions,
  5 finals. Measured compute (single-core minutes, in the report): E1 8.3, E3 4.7, N2 7.3,
  Q2 25.7, A1 26.9, Q3 65.0, Q1 215.0 (its two text tasks ~185 of it; E2 is seconds):
  about 6 single-core hours in all, about 3 h of wall with two workers.
- ``gpu`` has the full budgets, sized for about ten minutes on one H200.

A profile maps section ids to that section's ``Config``; a section missing from a profile
is not run by it (the report says so).
"""

from __future__ import annotations

from typing import Any

from superlevel.study import a1, e1, e2, e3, n2, q1, q2, q3
from superlevel.study.e1 import log_grid

_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")  # the harness offers no GELU
# C5 names AdamW and SGDR; the clipping and decay twins are A1's question.
_Q1_OPTIMIZERS = ("superlevel", "sgd", "momentum", "adam", "adamw", "sgdr")
_Q2_OPTIMIZERS = ("superlevel", "sgd", "adam", "sgd_clip")
_Q3_OPTIMIZERS = ("superlevel", "momentum", "adam", "sgd_clip")
_N2_OPTIMIZERS = ("superlevel", "superlevel_momentum", "sgd", "momentum", "adam", "sgd_clip")

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "E1": e1.Config(
            conditions=(10.0,), noises=(0.0,), dim=10, epochs=2, lr_grid=(0.1, 1.0), seeds=2
        ),
        "E2": e2.Config(
            functions=("himmelblau", "rastrigin"),
            lr_grid=(0.01, 0.1),
            starts=4,
            steps=20,
            resolution=61,
        ),
        "E3": e3.Config(
            lrs=(0.5,),
            decays=(0.0, 2.0),
            seeds=2,
            task="digits_mlp",
            epochs=1,
            sharpness_examples=200,
        ),
        "N2": n2.Config(
            activations=("relu", "tanh"),
            optimizers=("superlevel", "sgd"),
            trials=2,
            seeds=2,
            epochs=1,
        ),
        "Q2": q2.Config(
            tasks=(("digits_mlp", (("activation", "relu"),)),),  # clean: N2's relu runs
            optimizers=("superlevel", "sgd"),
            trials=2,
            seeds=2,
            epochs=1,
            conditions=q2.CONDITIONS[:2],
        ),
        "Q1": q1.Config(
            tasks=(("digits_mlp", (("activation", "relu"),)),),  # N2's relu runs
            optimizers=("superlevel", "sgd"),
            trials=2,
            seeds=2,
            epochs=1,
        ),
        "A1": a1.Config(
            tasks=(("digits_mlp", (("activation", "relu"),)),),
            trials=2,
            seeds=2,
            norm_scales=(10.0,),
            epochs=1,
            arms=("superlevel", "sgd_clip_expdecay"),
        ),
        "Q3": q3.Config(
            tasks=(("cartpole_novel", ()),),
            optimizers=("superlevel", "adam"),
            trials=2,
            seeds=2,
            budget="quick",
            epochs=1,
        ),
    },
    "cpu": {
        # Sized for about 8 h of compute on two cores (about 4 h of wall with --workers 2);
        # seconds per run measured on one thread of the 2-core machine in the comments.
        "E1": e1.Config(
            conditions=(10.0, 100.0, 1e4),
            noises=(0.0, 1.0),
            dim=50,
            epochs=20,
            lr_grid=log_grid(-3, 1.5, 3),
            seeds=5,
        ),  # 2160 runs of 640 steps, ~0.25 s each (8.3 min measured)
        "E2": e2.Config(
            functions=("himmelblau", "multiwell", "rastrigin"),
            lr_grid=log_grid(-4, 1, 3),
            starts=64,
            steps=200,
            resolution=301,
        ),
        "E3": e3.Config(
            lrs=(0.1, 0.3, 1.0, 3.0, 10.0),
            decays=(0.0, 1.0, 3.0, 10.0),
            seeds=3,
            budget="full",
            task_options=(("subset", 10000),),
            sharpness_examples=1000,
        ),  # the full budget (10 epochs, 780 steps) on 10 000 examples, ~6 s a run
        "N2": n2.Config(
            activations=_ACTIVATIONS,
            optimizers=_N2_OPTIMIZERS,
            trials=9,
            seeds=5,
            budget="full",
        ),  # digits_mlp's full budget (100 epochs, 1900 steps), ~4 s a run
        "Q2": q2.Config(
            # 30 epochs on 5000 examples (1170 steps): long enough for the MLP to fit the
            # noisy labels (the train accuracy on them is in the table), ~8 s a run.
            # fmnist_2c2d at that length is ~10 min a run here: gpu profile only.
            tasks=(("mnist_mlp", (("subset", 5000),)),),
            optimizers=_Q2_OPTIMIZERS,
            trials=9,
            seeds=5,
            epochs=30,
        ),
        "Q1": q1.Config(
            tasks=(
                ("mnist1d_mlp", (), "full", None),  # 150 epochs, 5250 steps, ~9 s
                ("mnist1d_cnn", (), "full", None),  # 150 epochs, ~30 s
                # 1500+ steps on the quick budget's 2000 sequences, evaluated on 1000
                # windows a split, at half the default sequence lengths: measured 70 s
                # (LSTM, 1520 steps), 58 s (Transformer, 1550 steps) a run. At the default lengths
                # and with full evaluation a run is ~160 s and the section does not fit.
                ("char_lstm", (("seq_len", 25), ("eval_subset", 1000)), "quick", 38),
                ("char_transformer", (("seq_len", 16), ("eval_subset", 1000)), "quick", 25),
            ),
            optimizers=_Q1_OPTIMIZERS,
            trials=9,
            seeds=5,
        ),
        "Q3": q3.Config(
            # About 2 min a run at the full budget (1e5 env steps) on one core here.
            tasks=(("cartpole_novel", ()),),
            optimizers=_Q3_OPTIMIZERS,
            trials=9,
            seeds=5,
            budget="full",
        ),
        "A1": a1.Config(
            tasks=(
                ("mnist1d_mlp", (), "full", None),  # ~9 s a run
                ("mnist_mlp", (("subset", 10000),), "full", None),  # ~6 s
                ("digits_mlp", (("activation", "relu"),), "full", None),  # ~4 s, N2's relu runs
            ),
            trials=9,
            seeds=5,
        ),
    },
    "gpu": {
        "E1": e1.Config(
            conditions=(10.0, 100.0, 1e4),
            noises=(0.0, 1.0),
            dim=50,
            epochs=100,
            lr_grid=log_grid(-3, 1.5, 6),
            seeds=10,
        ),
        "E2": e2.Config(
            functions=("himmelblau", "multiwell", "rastrigin"),
            lr_grid=log_grid(-4, 1, 6),
            starts=256,
            steps=500,
            resolution=401,
        ),
        "E3": e3.Config(
            lrs=(0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
            decays=(0.0, 0.5, 1.0, 3.0, 10.0),
            seeds=5,
            budget="full",
            sharpness_examples=1000,
        ),
        "N2": n2.Config(
            activations=_ACTIVATIONS,
            optimizers=_N2_OPTIMIZERS,
            trials=7,
            seeds=10,
            task="mnist_mlp",
        ),
        "Q2": q2.Config(
            tasks=(("mnist_mlp", ()), ("fmnist_2c2d", ())),
            optimizers=_Q2_OPTIMIZERS + ("adamw", "superlevel_momentum"),
            trials=7,
            seeds=5,
        ),
        "Q1": q1.Config(
            tasks=(
                ("mnist1d_mlp", ()),
                ("mnist1d_cnn", ()),
                ("fmnist_2c2d", ()),
                ("char_lstm", ()),
                ("char_transformer", ()),
            ),
            optimizers=_Q1_OPTIMIZERS,
            trials=7,
            seeds=5,
            budget="full",
        ),
        "Q3": q3.Config(
            tasks=(("cartpole_novel", ()), ("cartpole_noisy", ())),
            optimizers=_Q3_OPTIMIZERS + ("superlevel_guarded", "adamw"),
            trials=5,
            seeds=10,
            budget="full",
        ),
        "A1": a1.Config(
            tasks=(
                ("mnist1d_mlp", (), "full", None),
                ("mnist_mlp", (), "full", None),
                ("fmnist_2c2d", (), "full", None),
                ("char_lstm", (), "full", None),
            ),
            trials=16,
            seeds=10,
        ),
    },
}


def get_profile(name: str) -> dict[str, Any]:
    """The section configs of profile ``name``; ``ValueError`` naming the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}") from None
