"""The wheel as users install it: built from a copy of the tree, offline."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("setuptools", reason="building the wheel needs setuptools")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``setuptools.build_meta`` builds (in a copy: no build/ in the tree)."""
    tree = tmp_path_factory.mktemp("tree")
    shutil.copytree(
        ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tree / name)
    out = tree / "dist"
    code = f"from setuptools import build_meta; build_meta.build_wheel({str(out)!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, timeout=300
    )
    wheels = list(out.glob("*.whl"))
    assert proc.returncode == 0 and wheels, proc.stderr[-3000:]
    return wheels[0]


def test_the_wheel_ships_py_typed(wheel):
    # PEP 561: without the marker, users' type checkers ignore the annotations.
    names = zipfile.ZipFile(wheel).namelist()
    assert "superlevel/py.typed" in names
    assert "superlevel/optim/optimizer.py" in names
    assert "superlevel/optax/_transform.py" in names  # the jax extra's module


def test_the_jax_extra_is_declared_and_in_dev():
    # CI installs `.[dev]`: the JAX tests only run if dev carries the jax extra's packages.
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {req.split(">")[0].split("=")[0] for req in extras["jax"]}
    assert names == {"jax", "optax", "flax"}
    assert set(extras["jax"]) <= set(extras["dev"])
