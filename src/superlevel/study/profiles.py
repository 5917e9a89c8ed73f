"""The study's sizes: ``tiny`` (the test suite), ``cpu`` (the committed results), ``gpu``.

- ``tiny`` checks the pipeline end to end in well under two minutes on two cores; its
  numbers mean nothing.
- ``cpu`` is sized for about two hours on a two-core machine for every section it has.
- ``gpu`` has the full budgets, sized for about ten minutes on one H200.

A profile maps section ids to that section's ``Config``; a section missing from a profile
is not run by it (the report says so).
"""

from __future__ import annotations

from typing import Any

from superlevel.study import e1, e2, e3, n2, q1, q2, q3
from superlevel.study.e1 import log_grid

_ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid")  # the harness offers no GELU
_Q1_OPTIMIZERS = (
    "superlevel",
    "superlevel_momentum",
    "sgd",
    "momentum",
    "adam",
    "adamw",
    "sgdr",
    "sgd_expdecay",
    "sgd_clip",
)
_Q2_OPTIMIZERS = ("superlevel", "sgd", "adam", "sgd_clip")
_Q3_OPTIMIZERS = ("superlevel", "superlevel_momentum", "sgd", "momentum", "adam", "sgd_clip")
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
        "E1": e1.Config(
            conditions=(10.0, 100.0, 1e4),
            noises=(0.0, 1.0),
            dim=50,
            epochs=20,
            lr_grid=log_grid(-3, 1.5, 3),
            seeds=5,
        ),
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
            sharpness_examples=1000,
        ),
        "N2": n2.Config(
            activations=_ACTIVATIONS,
            optimizers=_N2_OPTIMIZERS,
            trials=4,
            seeds=5,
        ),
        "Q2": q2.Config(
            # fmnist_2c2d: about 1 min a run here (5000 examples, 3 epochs, 1 thread).
            tasks=(("mnist_mlp", (("subset", 5000),)), ("fmnist_2c2d", (("subset", 5000),))),
            optimizers=_Q2_OPTIMIZERS,
            trials=4,
            seeds=3,
            epochs=3,
        ),
        "Q1": q1.Config(
            # The CNN is MNIST-1D's here: fmnist_2c2d took ~160 s a run on the loaded
            # 2-core machine, so it is in the gpu profile only.
            tasks=(
                ("mnist1d_mlp", ()),
                ("mnist1d_cnn", ()),
                ("char_lstm", ()),
                ("char_transformer", ()),
            ),
            optimizers=_Q1_OPTIMIZERS,
            trials=3,
            seeds=5,
        ),
        "Q3": q3.Config(
            # About 2 min a run at the full budget (1e5 env steps) on one core here.
            tasks=(("cartpole_novel", ()),),
            optimizers=_Q3_OPTIMIZERS,
            trials=3,
            seeds=5,
            budget="full",
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
    },
}


def get_profile(name: str) -> dict[str, Any]:
    """The section configs of profile ``name``; ``ValueError`` naming the valid ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}") from None
