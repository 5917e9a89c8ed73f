"""What successive halving changes in the tuning protocol: every trial in full vs halving.

Usage::

    python benchmarks/halving_bias.py                      # mnist1d_mlp, nine optimizers
    python benchmarks/halving_bias.py --write              # ... and regenerate the docs table
    python benchmarks/halving_bias.py --store-dir DIR      # keep (and reuse) the two stores

The same :class:`~superlevel.bench.tune.Protocol` (9 Halton trials, edge extension,
tuning seed 1001, finals on seeds 1-5) is run twice on one setting, once with every trial
trained in full (``halving=1``, the protocol's default) and once with successive halving
(``halving=3``: 9 trials to about a tenth of the epochs, the best 3 to a third, the best
one to the end). Printed per optimizer: each protocol's selection, its validation metric
on the tuning seed, the finals' mean test metric, and the paired difference full - halving
over the final seeds (a t interval of the paired differences, signed so that > 0
is better). Halving judges a trial by its early progress,
and a schedule that decays over the whole run (``decay_total``) has done little of its
work by then (short-horizon bias), so the two selections differ most where the search
space has a schedule.

Both runs go through the protocol's store, so a second call with the same
``--store-dir`` trains nothing. ``--write`` puts the table between the ``halving_bias``
markers of docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from superlevel.bench.executors import make_executor  # noqa: E402
from superlevel.bench.report.tables import environment_text  # noqa: E402
from superlevel.bench.stats import t_interval  # noqa: E402
from superlevel.bench.store import Store  # noqa: E402
from superlevel.bench.tasks import get_task  # noqa: E402
from superlevel.bench.tune import Protocol, TuneResult, final_score, tune  # noqa: E402
from superlevel.blocks import replace_block  # noqa: E402

DOC = ROOT / "docs" / "benchmark.md"
DOC_BEGIN = "<!-- halving_bias: written by benchmarks/halving_bias.py --write -->"
DOC_END = "<!-- /halving_bias -->"
OPTIMIZERS = ("sgd,momentum,adam,adamw,sgdr,sgd_expdecay,sgd_clip,superlevel,"
              "superlevel_momentum")  # fmt: skip


def _hp(hp: dict) -> str:
    fixed = ("beta1", "beta2", "eps", "momentum", "eta_min_ratio")  # never searched
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(hp.items()) if k not in fixed)  # fmt: skip


def _scores(store: Store, res: TuneResult) -> list[float]:
    return [final_score(store.get_run(r)) for r in res.finals]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="mnist1d_mlp")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--optimizers", default=OPTIMIZERS)
    ap.add_argument("--trials", type=int, default=9)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per run (default 1, as bench tune)")  # fmt: skip
    ap.add_argument(
        "--store-dir",
        type=Path,
        default=None,
        help="folder of the two stores (default: a temporary one)",
    )
    ap.add_argument("--write", action="store_true", help="write the table into docs")
    args = ap.parse_args()
    names = [n.strip() for n in args.optimizers.split(",") if n.strip()]
    folder = args.store_dir or Path(tempfile.mkdtemp(prefix="halving_bias_"))
    folder.mkdir(parents=True, exist_ok=True)
    higher = get_task(args.task).higher_is_better
    torch.set_num_threads(args.threads)  # worker processes take the parent's setting
    results: dict[int, tuple[Store, dict[str, TuneResult]]] = {}
    for eta in (1, 3):
        store = Store(folder / f"halving{eta}.db")
        protocol = Protocol(trials=args.trials, seeds=args.seeds, halving=eta)
        with make_executor("local", workers=args.workers) as ex:
            tuned = tune(args.task, names, protocol, store, budget=args.budget, executor=ex,
                         checkpoint_dir=folder / "checkpoints")  # fmt: skip
        results[eta] = (store, tuned)
    rows, changed, better = [], 0, 0
    for name in names:
        (s1, r1), (s3, r3) = results[1], results[3]
        a, b = _scores(s1, r1[name]), _scores(s3, r3[name])
        diff = [x - y if higher else y - x for x, y in zip(a, b, strict=True)]
        low, high = t_interval(diff)
        mean = sum(diff) / len(diff)
        same = r1[name].best_hparams == r3[name].best_hparams
        changed += not same
        better += low > 0
        rows.append(
            f"| {name} | {_hp(r1[name].best_hparams)} | {r1[name].compute['full_runs']:.1f} | "
            f"{sum(a) / len(a):.4f} | {_hp(r3[name].best_hparams)} | "
            f"{r3[name].compute['full_runs']:.1f} | {sum(b) / len(b):.4f} | "
            f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] |"
        )
    finals = [store.get_run(r) for store, res in results.values() for t in res.values()
              for r in t.finals]  # fmt: skip
    env = f"{args.workers} worker(s); as stored with the runs: {environment_text(finals)}"
    text = "\n".join([
        f"`python benchmarks/halving_bias.py --task {args.task} --budget {args.budget} "
        f"--trials {args.trials} --seeds {args.seeds}`: the same protocol with every trial "
        f"in full and with successive halving (eta 3); finals on seeds 1-{args.seeds}, "
        f"never used for selection; {env}.",
        "",
        "| optimizer | in full: selected | search (full runs) | test mean | halving 3: selected"
        " | search (full runs) | test mean | full − halving [95% CI] |",
        "|---|---|---:|---:|---|---:|---:|---:|",
        *rows,
        "",
        f"Halving changed the selection of {changed} of {len(names)} optimizers; the "
        f"selection in full was better on the final seeds (interval above 0) for {better}.",
    ])  # fmt: skip
    print(text)
    if args.write:
        replace_block(DOC, DOC_BEGIN, DOC_END, text)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
