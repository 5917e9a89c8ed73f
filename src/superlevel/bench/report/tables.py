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
    """The lr, the hyperparameters its optimizer searches, and those that tell ``cfg``
    from the optimizer's other rows."""
    from superlevel.bench.optimizers import OPTIMIZERS

    peers = [c.hparams for c in rows if c.optimizer == cfg.optimizer]
    keys = set(differing(peers) if len(peers) > 1 else [])
    spec = OPTIMIZERS.get(cfg.optimizer)
    keys |= set(spec.space) if spec is not None else {"lr"}
    return hparams_text(cfg.hparams, sorted(k for k in keys if k in cfg.hparams)) or "—"


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


# ------------------------------------------------------------------ comparisons


def reference_label(setting: Setting) -> str:
    """The configuration the others are compared with: ``superlevel`` when compared, else
    the first compared label."""
    labels = [c.label for c in setting.compared]
    return "superlevel" if "superlevel" in labels else labels[0]


def comparison_family(settings: Sequence[Setting]) -> dict[tuple[str, str], Any]:
    """Every comparison of the report as one Holm family: per setting, its reference minus
    each other compared configuration, paired over the seeds both have (>= 2).

    Values are the scores (a diverged seed scored with its untrained model), read in
    ``log10`` where the task says so; margins are the task's
    (:attr:`~superlevel.bench.tasks.registry.TaskSpec.comparison`).

    Returns:
        ``{(setting title, label): (Comparison, Paired inputs info)}``.
    """
    from superlevel.bench.stats import compare_family
    from superlevel.bench.tasks import get_task

    pairs: dict[str, tuple[list[float], list[float]]] = {}
    margins: dict[str, float] = {}
    keys: dict[str, tuple[str, str, str]] = {}
    for setting in settings:
        how = get_task(setting.key[0]).comparison
        ref_label = reference_label(setting)
        by_label = {c.label: c for c in setting.compared}
        ref = _scores_by_seed(by_label[ref_label], how.log10)
        for label, cfg in by_label.items():
            if label == ref_label:
                continue
            other = _scores_by_seed(cfg, how.log10)
            seeds = sorted(set(ref) & set(other))
            if len(seeds) < 2:
                continue
            name = f"{setting.title()}|{label}"
            pairs[name] = ([ref[s] for s in seeds], [other[s] for s in seeds])
            margins[name] = how.margin
            keys[name] = (setting.title(), ref_label, label)
    if not pairs:
        return {}
    out = compare_family(pairs, margin=margins)
    return {(keys[n][0], keys[n][2]): (out[n], keys[n][1]) for n in pairs}


def _scores_by_seed(cfg: Config, log10: bool) -> dict[int, float]:
    from superlevel.bench.tune import final_score

    out = {}
    for r in cfg.runs:
        v = final_score(r)
        if v is None or not math.isfinite(v):
            continue
        out[r["seed"]] = math.log10(max(v, 1e-30)) if log10 else v
    return out


def comparison_table(settings: Sequence[Setting]) -> tuple[list[str], list[list[str]]]:
    """One row per comparison: reference minus other, its interval, Holm-adjusted tests,
    the margin, the detectable difference and the verdict."""
    from superlevel.bench.tasks import get_task

    family = comparison_family(settings)
    head = ["setting", "reference − other", "seeds", "difference [95% CI]", "Holm p",
            "TOST p (margin)", "detectable (80%)", "verdict"]  # fmt: skip
    rows = []
    by_title = {s.title(): s for s in settings}
    for (title, label), (cmp, ref) in family.items():
        how = get_task(by_title[title].key[0]).comparison
        unit = " decade" if how.log10 else ""
        p = cmp.paired
        rows.append([
            title, f"{ref} − {label}", str(p.n), p.text(), f"{cmp.p_adjusted:.3g}",
            f"{cmp.p_equivalent_adjusted:.3g} (±{p.margin:g}{unit})",
            f"{cmp.detectable:.3g}{unit}", cmp.text(),
        ])  # fmt: skip
    return head, rows


# ------------------------------------------------------------------ tuning and provenance


def tuning_rows(setting: Setting, tunings: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Per tuned optimizer of ``setting``: its search, compute, selection and edges."""
    task, budget, epochs, opts = setting.key
    rows = []
    for t in tunings:
        s = t["setting"]
        if (s["task"], s["budget"], s["epochs"], json.dumps(s["task_options"], sort_keys=True)) \
                != (task, budget, epochs, opts):  # fmt: skip
            continue
        proto = t["protocol"]
        ranges = "; ".join(
            f"{d} [{lo:g}, {hi:g}]" + (f" from [{t['initial_space'][d][0]:g}, "
                                       f"{t['initial_space'][d][1]:g}]"
                                       if [lo, hi] != t["initial_space"][d] else "")
            for d, (lo, hi) in t["space"].items()
        )  # fmt: skip
        ext = (
            "; ".join(
                f"{e['dim']} {e['side']} to {e['after'][0 if e['side'] == 'low' else 1]:g}"
                f" ({'kept' if e['kept'] else 'not better'})"
                for e in t["extensions"]
            )
            or "none"
        )
        edges = "; ".join(f"{d}: {why}" for d, why in t["edges"].items()) or "none"
        rungs = " → ".join(f"{n}@{e}" for e, n in t["rungs"])
        c = t["compute"]
        rows.append([
            t["optimizer"], f"{proto['trials']} {proto['search']}, seed {proto['tuning_seed']}",
            rungs, f"{c['runs']} runs, {fmt(c['full_runs'], 3)} full runs, "
            f"{fmt(c['train_s'], 3)} s", ranges, hparams_text(t["best_hparams"],
                                                             sorted(t["space"])),
            ext, edges, seeds_text(range(1, proto["seeds"] + 1)),
        ])  # fmt: skip
    return rows


TUNING_HEAD = ["optimizer", "trials (search, tuning seed)", "rungs (trials@epochs)",
               "search compute", "ranges (after extension)", "selected", "extensions",
               "still on an edge", "final seeds"]  # fmt: skip


def provenance_text(runs: Sequence[Run]) -> str:
    """The code and software the runs came from: code ids with counts, git revisions,
    Python, torch and numpy versions; says so when the runs come from more than one code."""
    codes: dict[str, int] = {}
    for r in runs:
        key = r.get("code_id") or "unknown (stored before runs recorded their code)"
        codes[key] = codes.get(key, 0) + 1
    revs = sorted({r["env"].get("git_revision", "?") for r in runs if r.get("env")})
    envs = [r["env"] for r in runs if r.get("env")]
    soft = sorted({f"Python {e.get('python', '?')}, torch {e.get('torch', '?')}, "
                   f"numpy {e.get('numpy', '?')}" for e in envs})  # fmt: skip
    code = ", ".join(f"`{k}` ({v} runs)" for k, v in sorted(codes.items()))
    text = (f"Code: {code}; git revisions {', '.join(revs) or '?'}; "
            f"{'; '.join(soft) or '?'}.")  # fmt: skip
    if len(codes) > 1:
        text += (
            f" **These runs come from {len(codes)} different codes** (runs of other code "
            "were accepted): numbers of different code are compared here."
        )
    return text
