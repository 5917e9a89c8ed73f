"""What a run is, and what its numbers depend on: its configuration, its code, its machine.

- :class:`RunConfig` is the run's identity: ``run_id`` hashes exactly the fields that
  choose its result (task, task options, budget, epochs, optimizer, hyperparameters,
  seed).
- :func:`code_identity` is the identity of the code that computes it. A stored run is
  only reused by code with the same identity (the parent refuses otherwise, unless told
  to accept it), so a result never silently outlives a change of the optimizer, a
  model or a data loader.

  The code is found, not listed: the modules reachable by ``import`` statements (read
  with :mod:`ast`, lazy imports inside functions included, ``TYPE_CHECKING`` blocks not)
  from the training loop, the optimizer registry and the module that builds the run's
  task. Their source is hashed together with the versions of Python and of every
  third-party distribution they import (torch, numpy, ...). The report, the store, the
  command line and the console text cannot change a number and are not reached, so
  editing them keeps every stored run valid.
- :func:`environment` is the machine: device, its name, cores, threads, git revision.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch

from superlevel.bench.optimizers import get_optimizer

# Where the numbers of every run are computed; a task adds the module that builds it.
NUMERIC_ROOTS = ("superlevel.bench.run.loop", "superlevel.bench.optimizers")
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # tasks train float32 parameters


@dataclass(frozen=True)
class RunConfig:
    """The identity of one run (all fields resolved: no defaults left implicit).

    Attributes:
        task: task name in the registry.
        optimizer: optimizer name in the registry.
        seed: seed (>= 1) for model init, data order and noise.
        budget: the task budget name (``quick`` or ``full``).
        epochs: epochs to train.
        hparams: the optimizer's complete hyperparameters (defaults merged in).
        task_options: options passed to the task builder.
    """

    task: str
    optimizer: str
    seed: int
    budget: str
    epochs: int
    hparams: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        """``sha256`` of the canonical JSON of all fields, first 16 hex digits."""
        text = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def label(self) -> str:
        """Short human label, e.g. ``digits_mlp/adam/s1``."""
        return f"{self.task}/{self.optimizer}/s{self.seed}"


def check_positive(name: str, value: int) -> int:
    """``value`` if it is an integer >= 1, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def make_config(
    task: str,
    optimizer: str,
    seed: int,
    *,
    budget: str = "quick",
    epochs: int | None = None,
    hparams: Mapping[str, Any] | None = None,
    task_options: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Validate names and numbers and resolve defaults into a :class:`RunConfig`.

    Every value is checked here, before any run starts: an option value the task would
    refuse when built (``dim=0``, ``label_noise=1.5``) and a hyperparameter that no
    float32 parameter can take (``lr=1e308`` overflows torch's conversion) are errors
    naming the option or hyperparameter, not ``failed`` runs.

    Raises:
        UnknownNameError: unknown task or optimizer.
        ValueError: seed or epochs < 1, unknown budget, option or hyperparameter, a bad
            option value, a hyperparameter beyond float32's range.
    """
    from superlevel.bench.registry import ConfigError
    from superlevel.bench.tasks import get_task
    from superlevel.bench.tasks.registry import OPTION_VALIDATORS

    spec = get_task(task)
    opt = get_optimizer(optimizer)
    check_positive("seed", seed)
    if budget not in spec.budgets:
        raise ValueError(
            f"task {task!r} has no budget {budget!r}; valid: {', '.join(sorted(spec.budgets))}"
        )
    epochs = spec.budgets[budget].epochs if epochs is None else check_positive("epochs", epochs)
    options = dict(task_options or {})
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(
            f"task {task!r} has no option {unknown[0]!r}; valid: {', '.join(sorted(spec.options))}"
        )
    for key, value in options.items():
        OPTION_VALIDATORS[key](value)  # ConfigError naming the option and the value
    resolved = opt.resolve(hparams)
    for key, value in resolved.items():
        if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise ConfigError(
                f"hyperparameter {key}={value:g} of {optimizer!r} is beyond float32's range "
                f"(|value| <= {FLOAT32_MAX:.4g}): torch cannot apply it to the parameters"
            )
    return RunConfig(
        task=task,
        optimizer=optimizer,
        seed=seed,
        budget=budget,
        epochs=epochs,
        hparams=resolved,
        task_options=options,
    )


# ------------------------------------------------------------------ the code of a run


@dataclass(frozen=True)
class CodeIdentity:
    """The code a run's numbers come from.

    Attributes:
        id: 16 hex digits of ``sha256`` over ``modules`` and ``versions``.
        modules: ``{module name: sha256 of its source}`` (first 16 hex digits).
        versions: ``{"python" | distribution name: version}``.
    """

    id: str
    modules: dict[str, str]
    versions: dict[str, str]

    def info(self) -> dict[str, Any]:
        """The JSON-ready record the store keeps."""
        return {"modules": self.modules, "versions": self.versions}

    def changed(self, other: Mapping[str, Any]) -> list[str]:
        """Module and distribution names whose hash or version differ from ``other``'s
        :meth:`info` (present in one only counts as changed)."""
        out = []
        for key, mine in (("modules", self.modules), ("versions", self.versions)):
            theirs = dict(other.get(key) or {})
            out += sorted(n for n in set(mine) | set(theirs) if mine.get(n) != theirs.get(n))
        return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, package: str) -> Iterable[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` of every import that can run (``TYPE_CHECKING`` blocks skipped);
    relative imports are resolved against ``package`` (the importing module's package)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            yield module, tuple(a.name for a in node.names)
        stack.extend(ast.iter_child_nodes(node))


def _source_file(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


@cache
def module_closure(roots: tuple[str, ...], package: str = "superlevel") -> tuple[
    dict[str, Path], frozenset[str]
]:  # fmt: skip
    """The modules of ``package`` reachable from ``roots`` by imports, and the top-level
    names of the other (non-standard-library) packages they import.

    ``from a.b import c`` reaches module ``a.b.c`` when there is one, else ``a.b``.
    """
    found: dict[str, Path] = {}
    external: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        path = _source_file(name)
        if path is None:
            raise ValueError(f"cannot find the source of module {name!r}")
        found[name] = path
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for module, names in _imports(tree, own_package):
            top = module.split(".")[0]
            if top != package:
                if top not in sys.stdlib_module_names and top != "__future__":
                    external.add(top)
                continue
            subs = [f"{module}.{n}" for n in names if _source_file(f"{module}.{n}")]
            todo += subs if subs and len(subs) == len(names) else [module, *subs]
    return found, frozenset(external)


def _versions(external: Iterable[str]) -> dict[str, str]:
    dists = importlib.metadata.packages_distributions()
    out = {"python": platform.python_version()}
    for top in sorted(external):
        for dist in dists.get(top, [top]):
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[dist] = "not installed"
    return out


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@cache
def code_identity_of(roots: tuple[str, ...]) -> CodeIdentity:
    """The :class:`CodeIdentity` of the modules reachable from ``roots``."""
    modules, external = module_closure(roots)
    hashes = {name: _digest(path.read_bytes()) for name, path in sorted(modules.items())}
    versions = _versions(external)
    text = json.dumps({"modules": hashes, "versions": versions}, sort_keys=True)
    return CodeIdentity(_digest(text.encode()), hashes, versions)


def code_identity(task: str) -> CodeIdentity:
    """The identity of the code that computes a run of ``task`` (cached per process)."""
    from superlevel.bench.tasks import get_task

    return code_identity_of((*NUMERIC_ROOTS, get_task(task).builder.__module__))


# ------------------------------------------------------------------ the machine


@lru_cache(maxsize=1)
def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """What a number depends on besides its config and code: versions and hardware."""
    import numpy

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "device": device.type,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_revision": _git_revision(),
    }
