"""The report's tables and sentences, from selected settings (pure: text in, text out)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from superlevel.bench.report.select import (
    Config,
    Setting,
    differing,
    fmt,
    hparams_text,
    seeds_text,
    summarize,
)

__all__ = [
    "environment_text",
    "guard_text",
    "lr_points",
    "overview_table",
    "profile_costs",
    "setting_table",
]

Run = dict[str, Any]


def environment_text(runs: Sequence[Run]) -> str:
    """The distinct machines of ``runs``: device, CPUs, threads, torch and git revision."""
    envs = {json.dumps(r["env"], sort_keys=True) for r in runs if r["env"]}
    parts = []
    for e in sorted(envs):
        d = json.loads(e)
        parts.append(
            f"{d.get('device_name', '?')} ({d.get('device', '?')}, {d.get('cpu_count', '?')} CPUs, "
            f"torch threads {d.get('torch_threads', '?')}), torch {d.get('torch', '?')}, "
            f"git {d.get('git_revision', '?')}"
        )
    return "; ".join(parts) or "unknown"


def guard_text(configs: Sequence[Config]) -> str:
    """One sentence per guarded configuration: how often the Lyapunov check rejected a step."""
    parts = []
    for cfg in configs:
        counters = [r["info"].get("guard") for r in cfg.runs if r.get("info")]
        counters = [c for c in counters if c]
        if not counters:
            continue
        total = {
            k: sum(c.get(k, 0) for c in counters)
            for k in ("steps", "violations", "retries", "skips")
        }
        if total["steps"]:
            parts.append(
                f"`{cfg.label}`: the Lyapunov check rejected {total['violations']} trial steps in "
                f"{total['steps']} steps ({total['retries']} retries, {total['skips']} steps "
                f"skipped), summed over {len(counters)} seeds."
            )
    return " ".join(parts)


def _hparams_cell(cfg: Config, rows: Sequence[Config]) -> str:
    """The hyperparameters that tell ``cfg`` from the optimizer's other rows, else its lr."""
    peers = [c.hparams for c in rows if c.optimizer == cfg.optimizer]
    keys = differing(peers) if len(peers) > 1 else []
    if not keys and "lr" in cfg.hparams:
        keys = ["lr"]
    return hparams_text(cfg.hparams, keys) or "—"


def setting_table(setting: Setting) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a setting's table: one row per configuration."""
    metric, target = setting.metric_name, setting.target
    head = [
        "optimizer",
        "protocol",
        "hyperparameters",
        "seeds",
        f"test {metric} mean ± std",
        "95% CI",
        "test loss",
        f"steps to val {metric} {'≥' if setting.higher_is_better else '≤'} "
        f"{fmt(target)} (median, reached)",
        "ms/step",
        "diverged",
    ]
    rows = []
    for cfg in setting.rows:
        s = summarize(cfg.runs)
        mean = "—" if s.mean is None else f"{fmt(s.mean)} ± {fmt(s.std, 2)}"
        ci = "—" if s.ci[0] is None else f"[{fmt(s.ci[0])}, {fmt(s.ci[1])}]"
        stt = "—" if target is None else f"{fmt(s.stt_median)} ({s.reached}/{s.n})"
        rows.append(
            [
                cfg.optimizer,
                cfg.protocol,
                _hparams_cell(cfg, setting.rows),
                seeds_text(s.seeds),
                mean,
                ci,
                fmt(s.test_loss),
                stt,
                fmt(s.ms_per_step, 3),
                f"{s.diverged}/{s.n}",
            ]
        )
    return head, rows


def overview_table(settings: Sequence[Setting]) -> tuple[list[str], list[list[str]]]:
    """One row per setting, one column per compared label: test metric mean ± std.

    The best mean in the task's direction is bold; a cell from tuned reruns says
    ``(tuned)``.
    """
    labels = sorted({c.label for s in settings for c in s.compared})
    head = ["task (metric)", *labels]
    tasks = [s.key[0] for s in settings]
    rows = []
    for setting in settings:
        sums = {c.label: (c, summarize(c.runs)) for c in setting.compared}
        means = {k: s.mean for k, (_, s) in sums.items() if s.mean is not None}
        pick = max if setting.higher_is_better else min
        best = pick(means, key=means.__getitem__) if means else None
        cells = []
        for label in labels:
            if label not in sums:
                cells.append("")
                continue
            cfg, s = sums[label]
            if s.mean is None:
                cells.append(f"diverged {s.diverged}/{s.n}")
                continue
            text = f"{fmt(s.mean, 3)} ± {fmt(s.std, 2)}"
            text = f"**{text}**" if label == best else text
            cells.append(text + (" (tuned)" if cfg.protocol == "tuned" else ""))
        better = "↑" if setting.higher_is_better else "↓"
        # A task in several settings is named with what tells them apart.
        name = setting.title() if tasks.count(setting.key[0]) > 1 else setting.key[0]
        rows.append([f"{name} ({setting.metric_name} {better})", *cells])
    return head, rows


def profile_costs(settings: Sequence[Setting]) -> dict[str, dict[str, float]]:
    """``{setting title: {label: median steps-to-target}}`` (``inf``: not reached).

    Settings without a target are left out.
    """
    costs = {}
    for s in settings:
        if s.target is not None:
            costs[s.title()] = {
                c.label: summarize(c.runs).stt_median or math.inf for c in s.compared
            }
    return costs


def lr_points(runs: Sequence[Run]) -> tuple[dict[str, list[tuple[float, float | None]]], bool]:
    """Learning rate and final validation metric per optimizer, from ``grid`` else ``trial`` runs.

    Returns:
        ``({optimizer: [(lr, val_metric or None when diverged)]}, grid)``: ``grid`` says
        the points are a learning-rate grid, not tuning trials.
    """
    grid = [r for r in runs if "grid" in r["tags"]]
    chosen = grid or [r for r in runs if "trial" in r["tags"]]
    points: dict[str, list[tuple[float, float | None]]] = {}
    for r in chosen:
        if r["status"] not in ("finished", "diverged") or "lr" not in r["hparams"]:
            continue
        ok = r["status"] == "finished" and r["val_metric"] is not None
        points.setdefault(r["optimizer"], []).append(
            (float(r["hparams"]["lr"]), r["val_metric"] if ok else None)
        )
    return points, bool(grid)
