"""Reference figure of the recurrent PPO agent with Adam on CartPole without velocities.

The RL Zoo's published RecurrentPPO agent (sb3-contrib, Adam) scores 500 on
CartPoleNoVel-v1 after 1e5 environment steps with its ``ppo_lstm.yml`` hyperparameters.
This script trains :class:`superlevel.rl.ppo.RecurrentPPO` with Adam for the same number
of environment steps and evaluates the final policy greedily on fixed episode seeds.

Two configurations:

- ``zoo``: the Zoo's hyperparameters as RecurrentPPO applies them — Adam with SB3's
  ``eps=1e-5``, lr ``1e-3`` decayed linearly to 0 (stepped once per rollout, as SB3 does),
  PPO clip ``0.2`` decayed linearly, gradients clipped to norm 0.5 inside the closure.
- ``harness``: what ``superlevel bench run --task cartpole_novel --optimizers adam``
  trains: the harness's Adam defaults (constant lr 1e-3, eps 1e-8), no gradient
  clipping (the optimizer sees the raw gradient), same PPO settings otherwise.

Results are merged into ``--out`` (JSON, one record per configuration and seed) and the
table between the ``rl-reference`` markers of ``--doc`` is rewritten from all records.

Usage (from the project root; CPU-heavy, one thread per run is fastest here)::

    python benchmarks/rl_reference.py --config zoo --seeds 1 [--budget quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superlevel.bench.run.identity import cpu_name  # noqa: E402
from superlevel.rl.ppo import ZOO_CARTPOLE_NOVEL, ZOO_LR, ZOO_TIMESTEPS, RecurrentPPO, train

BEGIN, END = "<!-- rl-reference:begin -->", "<!-- rl-reference:end -->"
EVAL_SEEDS = [10_000 + i for i in range(20)]
BUDGETS = {"full": ZOO_TIMESTEPS, "quick": 10_000, "smoke": 512}


def run(config: str, seed: int, timesteps: int, curve_every: int) -> dict[str, Any]:
    """Train one agent and return its record (final greedy returns on EVAL_SEEDS)."""
    cfg = ZOO_CARTPOLE_NOVEL
    if config == "harness":
        cfg = type(cfg)(**{**cfg.__dict__, "max_grad_norm": None})
    # SB3's learn(n) collects whole rollouts until at least n steps: ceil(n / rollout).
    rollouts = -(-timesteps // cfg.rollout_size)
    torch.manual_seed(seed)
    agent = RecurrentPPO("cartpole_novel", cfg, seed=seed, total_rollouts=rollouts)
    params = agent.model.parameters()
    scheduler = None
    if config == "zoo":
        optimizer = torch.optim.Adam(params, lr=ZOO_LR, eps=1e-5)
        # SB3 sets lr = lr0 * (1 - steps_done / total) before each rollout's updates.
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda k: max(0.0, 1.0 - (k + 1) * cfg.rollout_size / timesteps)
        )
    else:
        optimizer = torch.optim.Adam(params, lr=1e-3)
    curve: list[tuple[int, float]] = []

    def on_rollout(k: int) -> None:
        if (k + 1) % curve_every == 0 or k + 1 == rollouts:
            ret = agent.evaluate(EVAL_SEEDS[:10])
            curve.append(((k + 1) * cfg.rollout_size, float(np.mean(ret))))
            print(
                f"  {config} s{seed} steps {curve[-1][0]}: greedy return {curve[-1][1]:.1f}",
                flush=True,
            )

    t0 = time.perf_counter()
    status = train(agent, optimizer, rollouts=rollouts, scheduler=scheduler, on_rollout=on_rollout)
    wall = time.perf_counter() - t0
    returns = agent.evaluate(EVAL_SEEDS)
    # The RL Zoo scores PPO agents with sampled actions (enjoy.py's default): both here.
    sampled = agent.evaluate(EVAL_SEEDS, deterministic=False)
    summary = agent.summary()
    return {
        "config": config,
        "seed": seed,
        "status": status,
        "env_steps": rollouts * cfg.rollout_size,
        "eval_episodes": len(EVAL_SEEDS),
        "eval_mean": float(np.mean(returns)),
        "eval_std": float(np.std(returns)),
        "eval_min": float(np.min(returns)),
        "eval_mean_sampled": float(np.mean(sampled)),
        "curve": curve,
        "collapses": summary["collapses"],
        "train_return_last": summary["log"][-1].get("train_return"),
        "wall_s": wall,
        "hardware": f"{cpu_name()}, {torch.get_num_threads()} torch thread(s), "
        f"load average {os.getloadavg()[0]:.1f} at the end",
        "torch": torch.__version__,
        "ppo": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()},
    }


def _sampled(r: dict[str, Any]) -> str:
    v = r.get("eval_mean_sampled")
    return "not measured" if v is None else f"{v:.1f}"


def render(records: list[dict[str, Any]]) -> str:
    """The Markdown table of all records, with how they were measured."""
    lines = [
        BEGIN,
        "",
        "Written by `benchmarks/rl_reference.py` (evaluation of the final policy on "
        f"{len(EVAL_SEEDS)} fixed episode seeds {EVAL_SEEDS[0]}..{EVAL_SEEDS[-1]}, greedy "
        "and with sampled actions; collapses: of the training return, see docs/rl.md):",
        "",
        "| config | seed | env steps | greedy mean return (std, min) | sampled actions "
        "| collapses | status | time | hardware |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["config"], r["env_steps"], r["seed"])):
        lines.append(
            f"| {r['config']} | {r['seed']} | {r['env_steps']} | {r['eval_mean']:.1f} "
            f"({r['eval_std']:.1f}, {r['eval_min']:.0f}) | {_sampled(r)} "
            f"| {r['collapses']} | {r['status']} "
            f"| {r['wall_s'] / 60:.0f} min | {r['hardware']}, torch {r['torch']} |"
        )
    lines += ["", "Greedy return on 10 of those episodes during training (env steps: return):", ""]
    for r in sorted(records, key=lambda r: (r["config"], r["env_steps"], r["seed"])):
        curve = ", ".join(f"{steps // 1000}k: {ret:.0f}" for steps, ret in r["curve"])
        lines.append(f"- {r['config']}, seed {r['seed']}: {curve}")
    lines += ["", END]
    return "\n".join(lines)


def update_doc(doc: Path, records: list[dict[str, Any]]) -> None:
    """Replace the text between the markers of ``doc`` (they must exist) with the table."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{doc} has no {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    tmp = doc.with_suffix(".tmp")
    tmp.write_text(head + render(records) + tail)
    tmp.replace(doc)  # a failed write leaves the old file intact


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=("zoo", "harness"), default="zoo")
    ap.add_argument("--seeds", default="1", help="comma-separated seeds")
    ap.add_argument("--budget", choices=tuple(BUDGETS), default="full")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--curve-every", type=int, default=40, help="rollouts between evaluations")
    ap.add_argument("--out", type=Path, default=Path("docs/results/rl_reference.json"))
    ap.add_argument("--doc", type=Path, default=Path("docs/data_and_tasks.md"))
    ap.add_argument("--render", action="store_true", help="only rewrite --doc from --out")
    args = ap.parse_args()
    if args.render:
        update_doc(args.doc, json.loads(args.out.read_text()))
        return
    torch.set_num_threads(args.threads)
    for seed in (int(s) for s in args.seeds.split(",")):
        rec = run(args.config, seed, BUDGETS[args.budget], args.curve_every)
        print(json.dumps({k: v for k, v in rec.items() if k != "curve"}), flush=True)
        records = json.loads(args.out.read_text()) if args.out.exists() else []
        key = (rec["config"], rec["seed"], rec["env_steps"])
        records = [r for r in records if (r["config"], r["seed"], r["env_steps"]) != key]
        records.append(rec)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1) + "\n")
        tmp.replace(args.out)
        update_doc(args.doc, records)


if __name__ == "__main__":
    main()
