"""The report: Markdown plus a self-contained HTML page, built only from the results store.

For every *setting* (task, budget, epochs, task options) it shows a table (test metric
mean ± std and 95% bootstrap CI over seeds, test loss, steps-to-target, time per step,
diverged runs), training curves (mean ± std band over seeds), the LR-sensitivity plot
(from grid or tuning runs, when present) and, for the super-level optimizers, traces of
the effective learning rate and the gradient norm. Across settings it draws an
AlgoPerf-style performance profile on steps-to-target. Every section states its seeds,
budget and hardware.

Which runs are compared: per optimizer, the runs tagged ``tuned`` (the selected setting
rerun over seeds) when there are any, else those tagged ``default``.

Figures use matplotlib's object API with the Agg canvas (no pyplot, no global backend
change); matplotlib is imported only when a report is written.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superlevel.bench.stats import bootstrap_ci, mean_std, performance_profile
from superlevel.bench.store import Store

SettingKey = tuple[str, str, int, str]  # task, budget, epochs, options json


@dataclass
class Report:
    """Paths of a written report."""

    markdown: Path
    html: Path
    figures: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------ selection


def _setting_key(run: dict[str, Any]) -> SettingKey:
    opts = json.dumps(run["task_options"], sort_keys=True)
    return run["task"], run["budget"], int(run["epochs"]), opts


def final_runs(
    runs: Sequence[dict[str, Any]], protocol: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Per optimizer, the runs to compare, sorted by seed.

    Args:
        runs: runs of one setting.
        protocol: ``"tuned"`` (the selected setting's reruns; when an optimizer was tuned
            more than once, the most recently finished setting wins), ``"default"``, or
            ``None``: tuned when there are tuned runs, else default.

    Runs not yet done (``running``) are left out.
    """
    if protocol not in (None, "tuned", "default"):
        raise ValueError(f"protocol must be None, 'tuned' or 'default', got {protocol!r}")
    by_opt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        if r["status"] in ("finished", "diverged"):
            by_opt[r["optimizer"]].append(r)
    out = {}
    for opt, rs in sorted(by_opt.items()):
        tuned = [r for r in rs if "tuned" in r["tags"]]
        chosen: list[dict[str, Any]] = []
        if tuned and protocol in (None, "tuned"):
            by_hp: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in tuned:
                by_hp[json.dumps(r["hparams"], sort_keys=True)].append(r)
            chosen = max(by_hp.values(), key=lambda g: max(r["finished_at"] or 0 for r in g))
        elif protocol in (None, "default"):
            chosen = [r for r in rs if "default" in r["tags"]]
        if chosen:
            out[opt] = sorted(chosen, key=lambda r: r["seed"])
    return out


# ------------------------------------------------------------------ tables


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def _seeds_text(seeds: Sequence[int]) -> str:
    s = sorted(seeds)
    if s and s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"{s[0]}-{s[-1]}"
    return ",".join(map(str, s))


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Numbers for one optimizer's runs of one setting (one table row)."""
    ok = [r for r in runs if r["status"] == "finished" and r["test_metric"] is not None]
    row: dict[str, Any] = {
        "n": len(runs),
        "seeds": [r["seed"] for r in runs],
        "diverged": sum(r["status"] == "diverged" for r in runs),
        "mean": None,
        "std": None,
        "ci": (None, None),
        "test_loss": None,
        "stt_median": None,
        "reached": 0,
        "ms_per_step": None,
    }
    if ok:
        row["mean"], row["std"] = mean_std([r["test_metric"] for r in ok])
        row["ci"] = bootstrap_ci([r["test_metric"] for r in ok])
        losses = [r["test_loss"] for r in ok if r["test_loss"] is not None]
        row["test_loss"] = float(np.mean(losses)) if losses else None
    stt = [r["steps_to_target"] for r in runs]
    row["reached"] = sum(s is not None for s in stt)
    # Not reached (or diverged) counts as infinitely slow; median over all seeds.
    med = float(np.median([math.inf if s is None else s for s in stt])) if stt else math.inf
    row["stt_median"] = med if math.isfinite(med) else None
    timed = [r["train_s"] / r["steps"] for r in runs if r["steps"] and r["train_s"] is not None]
    row["ms_per_step"] = 1000 * float(np.mean(timed)) if timed else None
    return row


def _environment_text(runs: Sequence[dict[str, Any]]) -> str:
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


def _guard_text(by_opt: dict[str, list[dict[str, Any]]]) -> str:
    """One sentence per guarded optimizer: how often the Lyapunov check rejected a step."""
    parts = []
    for opt, runs in by_opt.items():
        counters = [r["info"].get("guard") for r in runs if r.get("info")]
        counters = [c for c in counters if c]
        if not counters:
            continue
        total = {
            k: sum(c.get(k, 0) for c in counters)
            for k in ("steps", "violations", "retries", "skips")
        }
        if total["steps"]:
            parts.append(
                f"`{opt}`: the Lyapunov check rejected {total['violations']} trial steps in "
                f"{total['steps']} steps ({total['retries']} retries, {total['skips']} steps "
                f"skipped), summed over {len(counters)} seeds."
            )
    return " ".join(parts)


# ------------------------------------------------------------------ figures


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.4) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    return path


def _band(
    store: Store, runs: Sequence[dict[str, Any]], field_: str, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and std over seeds of a per-step or per-epoch series, on common x values."""
    series = []
    for r in runs:
        if r["status"] != "finished":
            continue
        if source == "step":
            rows = store.step_metrics(r["run_id"])
            pts = {row["step"]: row[field_] for row in rows}
        else:
            rows = [m for m in store.epoch_metrics(r["run_id"]) if m["split"] == "val"]
            pts = {row["step"]: row["metric"] for row in rows}
        series.append(pts)
    if not series:
        return None
    xs = sorted(set.intersection(*(set(s) for s in series)))
    if not xs:
        return None
    ys = np.array([[np.nan if s[x] is None else s[x] for x in xs] for s in series], dtype=float)
    return np.array(xs), np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)


def plot_curves(
    store: Store, by_opt: dict[str, list[dict[str, Any]]], title: str, path: Path
) -> Path | None:
    """Training loss per step and validation metric per epoch (mean ± std band over seeds)."""
    fig, (ax_loss, ax_val) = _figure(2)
    drawn = False
    metric_name = "metric"
    for opt, runs in by_opt.items():
        metric_name = runs[0]["metric_name"] or metric_name
        # The method under study solid, the baselines dashed: legible with many lines.
        style = {"lw": 1.4, "ls": "-" if opt.startswith("superlevel") else "--"}
        b = _band(store, runs, "loss", "step")
        if b is not None:
            x, m, s = b
            (line,) = ax_loss.plot(x, m, label=opt, **style)
            ax_loss.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2, lw=0)
            drawn = True
        b = _band(store, runs, "metric", "epoch")
        if b is not None:
            x, m, s = b
            if len(x) > 2:  # the untrained epoch-0 point would squash the interesting range
                x, m, s = x[1:], m[1:], s[1:]
            (line,) = ax_val.plot(x, m, marker="o", ms=3, label=opt, **style)
            ax_val.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2, lw=0)
    if not drawn:
        return None
    ax_loss.set(xlabel="step", ylabel="training loss (window mean)", title=title)
    if all(np.all(line.get_ydata() > 0) for line in ax_loss.get_lines()):
        ax_loss.set_yscale("log")
    ax_val.set(xlabel="step", ylabel=f"validation {metric_name}", title="validation, per epoch")
    ax_loss.legend(fontsize=7)
    return _save(fig, path)


def plot_lr_sensitivity(runs: Sequence[dict[str, Any]], title: str, path: Path) -> Path | None:
    """Final validation metric against the learning rate, from ``grid`` (else ``trial``) runs.

    Diverged settings are drawn as crosses on the lower edge.
    """
    grid = [r for r in runs if "grid" in r["tags"]]
    chosen = grid or [r for r in runs if "trial" in r["tags"]]
    chosen = [r for r in chosen if r["status"] in ("finished", "diverged")]
    if not chosen:
        return None
    fig, (ax,) = _figure(1, width=5.5)
    by_opt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in chosen:
        by_opt[r["optimizer"]].append(r)
    finite = [r["val_metric"] for r in chosen if r["val_metric"] is not None]
    floor = min(finite) if finite else 0.0
    for opt, rs in sorted(by_opt.items()):
        rs = sorted(rs, key=lambda r: r["hparams"]["lr"])
        ok = [r for r in rs if r["status"] == "finished" and r["val_metric"] is not None]
        style = "-o" if grid else "o"
        (line,) = ax.plot(
            [r["hparams"]["lr"] for r in ok], [r["val_metric"] for r in ok], style, ms=4, label=opt
        )
        bad = [r["hparams"]["lr"] for r in rs if r not in ok]
        if bad:
            ax.plot(bad, [floor] * len(bad), "x", color=line.get_color(), ms=7)
    metric = chosen[0]["metric_name"] or "metric"
    ax.set(
        xscale="log",
        xlabel="learning rate",
        ylabel=f"final validation {metric}",
        title=f"{title}: LR sensitivity ({'grid' if grid else 'tuning trials'}; x = diverged)",
    )
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_superlevel_traces(
    store: Store, by_opt: dict[str, list[dict[str, Any]]], title: str, path: Path
) -> Path | None:
    """Effective lr ``a(t)/(1+||g||)``, schedule ``a(t)`` and gradient norm of super-level runs."""
    chosen = {o: rs for o, rs in by_opt.items() if o.startswith("superlevel")}
    if not chosen:
        return None
    fig, (ax_lr, ax_g) = _figure(2)
    drawn = False
    for opt, runs in chosen.items():
        eff = _band(store, runs, "effective_lr", "step")
        sched = _band(store, runs, "lr", "step")
        gn = _band(store, runs, "grad_norm", "step")
        if eff is None or sched is None or gn is None:
            continue
        (line,) = ax_lr.plot(eff[0], eff[1], label=f"{opt} effective", lw=1.2)
        ax_lr.plot(sched[0], sched[1], "--", color=line.get_color(), lw=1, label=f"{opt} a(t)")
        ax_g.plot(gn[0], gn[1], color=line.get_color(), label=opt, lw=1.2)
        ax_g.fill_between(
            gn[0], gn[1] - gn[2], gn[1] + gn[2], color=line.get_color(), alpha=0.2, lw=0
        )
        drawn = True
    if not drawn:
        return None
    ax_lr.set(
        xlabel="step",
        ylabel="learning rate",
        yscale="log",
        title=f"{title}: a(t) and a(t)/(1+||g||)",
    )
    ax_g.set(xlabel="step", ylabel="gradient norm ||g||", yscale="log", title="gradient norm")
    ax_lr.legend(fontsize=7)
    return _save(fig, path)


def plot_profile(profile: dict[str, np.ndarray], taus: np.ndarray, n: int, path: Path) -> Path:
    """Draw a performance profile ``rho_s(tau)``."""
    fig, (ax,) = _figure(1, width=6.5)
    for opt, rho in sorted(profile.items()):
        ls = "-" if opt.startswith("superlevel") else "--"
        ax.step(taus, rho, where="post", label=opt, ls=ls, lw=1.4)
    ax.set(
        xscale="log",
        xlabel="tau (steps-to-target / best)",
        ylabel="fraction of tasks",
        ylim=(-0.02, 1.02),
        title=f"performance profile over {n} task(s)",
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(fig, path)


# ------------------------------------------------------------------ document


Block = tuple[Any, ...]


def _slug(key: SettingKey) -> str:
    task, budget, epochs, opts = key
    extra = ""
    if opts != "{}":
        extra = "_" + "".join(c if c.isalnum() else "-" for c in opts.strip("{}"))[:40]
    return f"{task}_{budget}_e{epochs}{extra}"


def _title(key: SettingKey) -> str:
    task, budget, epochs, opts = key
    suffix = "" if opts == "{}" else f", options {opts}"
    return f"{task} (budget {budget}, {epochs} epochs{suffix})"


def _table(
    by_opt: dict[str, list[dict[str, Any]]], default: dict[str, list[dict[str, Any]]]
) -> tuple[list[str], list[list[str]]]:
    """Rows of the compared runs, plus the default runs of optimizers that were tuned."""
    first = next(iter(by_opt.values()))[0]
    metric = first["metric_name"] or "metric"
    target = first["target"]
    head = [
        "optimizer",
        "protocol",
        "seeds",
        f"test {metric} mean ± std",
        "95% CI",
        "test loss",
        f"steps to val {metric} {'≥' if first['higher_is_better'] else '≤'} "
        f"{_fmt(target)} (median, reached)",
        "ms/step",
        "diverged",
    ]
    rows = []
    pairs = []
    for opt, runs in by_opt.items():
        tuned = "tuned" in runs[0]["tags"] and "default" not in runs[0]["tags"]
        if tuned and opt in default:
            pairs.append((opt, "default", default[opt]))
        pairs.append((opt, "tuned" if "tuned" in runs[0]["tags"] else "default", runs))
    for opt, protocol, runs in pairs:
        s = summarize(runs)
        mean = "—" if s["mean"] is None else f"{_fmt(s['mean'])} ± {_fmt(s['std'], 2)}"
        ci = "—" if s["ci"][0] is None else f"[{_fmt(s['ci'][0])}, {_fmt(s['ci'][1])}]"
        stt = "—" if target is None else f"{_fmt(s['stt_median'])} ({s['reached']}/{s['n']})"
        rows.append(
            [
                opt,
                protocol,
                _seeds_text(s["seeds"]),
                mean,
                ci,
                _fmt(s["test_loss"]),
                stt,
                _fmt(s["ms_per_step"], 3),
                f"{s['diverged']}/{s['n']}",
            ]
        )
    return head, rows


def overview_table(
    settings: dict[SettingKey, dict[str, list[dict[str, Any]]]],
) -> tuple[list[str], list[list[str]]]:
    """One row per setting, one column per optimizer: test metric mean ± std (best in bold).

    A cell from an optimizer's tuned reruns says ``(tuned)``; the others use its defaults.
    """
    opts = sorted({o for by_opt in settings.values() for o in by_opt})
    head = ["task (metric)", *opts]
    rows = []
    for key, by_opt in settings.items():
        first = next(iter(by_opt.values()))[0]
        sums = {o: summarize(rs) for o, rs in by_opt.items()}
        means = {o: s["mean"] for o, s in sums.items() if s["mean"] is not None}
        best = None
        if means:
            pick = max if first["higher_is_better"] else min
            best = pick(means, key=means.get)
        cells = []
        for o in opts:
            s = sums.get(o)
            if s is None:
                cells.append("")
            elif s["mean"] is None:
                cells.append(f"diverged {s['diverged']}/{s['n']}")
            else:
                text = f"{_fmt(s['mean'], 3)} ± {_fmt(s['std'], 2)}"
                text = f"**{text}**" if o == best else text
                cells.append(text + (" (tuned)" if "tuned" in by_opt[o][0]["tags"] else ""))
        better = "↑" if first["higher_is_better"] else "↓"
        rows.append([f"{key[0]} ({first['metric_name']} {better})", *cells])
    return head, rows


def build_blocks(store: Store, out_dir: Path) -> tuple[list[Block], list[Path]]:
    """Read the store, draw the figures into ``out_dir/figures``, return document blocks."""
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    runs = store.runs()
    by_setting: dict[SettingKey, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by_setting[_setting_key(r)].append(r)
    settings = {k: final_runs(v) for k, v in sorted(by_setting.items())}
    settings = {k: v for k, v in settings.items() if v}
    blocks: list[Block] = [("h", 1, "superlevel benchmark report")]
    figures: list[Path] = []
    if not settings:
        blocks.append(("p", f"No finished runs in {store.path.name} yet."))
        return blocks, figures
    compared = [r for by_opt in settings.values() for rs in by_opt.values() for r in rs]
    blocks.append(
        (
            "p",
            f"{len(compared)} compared runs ({len(runs)} runs in the store). "
            f"Hardware: {_environment_text(compared)}.",
        )
    )
    blocks.append(
        (
            "p",
            "Protocol: `default` = the registry's default hyperparameters; "
            "`tuned` = the setting with the best validation metric among an equal "
            "number of trials per optimizer, rerun over seeds. The test split is "
            "never used for choices. Steps-to-target is measured at epoch ends.",
        )
    )
    head, rows = overview_table(settings)
    blocks.append(("h", 2, "Overview: test metric, mean ± std over seeds"))
    budgets = sorted({f"`{k[1]}`" for k in settings})
    blocks.append(
        (
            "p",
            f"Seeds {_seeds_text(sorted({r['seed'] for r in compared}))}; "
            f"budget {', '.join(budgets)}; best mean in bold; details per task below.",
        )
    )
    blocks.append(("table", head, rows))

    costs: dict[str, dict[str, float]] = {}
    for key, by_opt in settings.items():
        slug, title = _slug(key), _title(key)
        all_runs = by_setting[key]
        compared = [r for rs in by_opt.values() for r in rs]
        seeds = sorted({r["seed"] for r in compared})
        blocks.append(("h", 2, title))
        blocks.append(
            (
                "p",
                f"Seeds {_seeds_text(seeds)}; budget `{key[1]}` ({key[2]} epochs); "
                f"hardware: {_environment_text(compared)}.",
            )
        )
        head, rows = _table(by_opt, final_runs(all_runs, "default"))
        blocks.append(("table", head, rows))
        guard = _guard_text(by_opt)
        if guard:
            blocks.append(("p", guard))
        for maker, name, caption in (
            (
                lambda p, b=by_opt, t=title: plot_curves(store, b, t, p),
                "curves",
                "Training loss and validation metric, mean ± std over seeds.",
            ),
            (
                lambda p, a=all_runs, t=key[0]: plot_lr_sensitivity(a, t, p),
                "lr",
                "LR sensitivity (one seed per setting).",
            ),
            (
                lambda p, b=by_opt, t=key[0]: plot_superlevel_traces(store, b, t, p),
                "superlevel",
                "Super-level optimizers: schedule a(t) (dashed), effective lr and gradient norm.",
            ),
        ):
            path = maker(fig_dir / f"bench_{slug}_{name}.png")
            if path is not None:
                figures.append(path)
                blocks.append(("img", path, caption))
        first = compared[0]
        if first["target"] is not None:
            costs[title] = {
                o: (summarize(rs)["stt_median"] or math.inf) for o, rs in by_opt.items()
            }
    if costs:
        taus = np.logspace(0, 1.5, 200)
        profile = performance_profile(costs, taus)
        path = plot_profile(profile, taus, len(costs), fig_dir / "bench_profile.png")
        figures.append(path)
        blocks.append(("h", 2, "Performance profile"))
        blocks.append(
            (
                "p",
                "AlgoPerf-style: for each task the ratio of an optimizer's median "
                "steps-to-target to the best optimizer's; rho(tau) is the fraction of "
                "tasks within a factor tau of the best (never reached = never counts).",
            )
        )
        blocks.append(("img", path, "Performance profile on steps-to-target."))
    return blocks, figures


def to_markdown(blocks: Sequence[Block], base: Path) -> str:
    """Render blocks as Markdown; images are linked relative to ``base``."""
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append(f"{'#' * b[1]} {b[2]}\n")
        elif b[0] == "p":
            out.append(f"{b[1]}\n")
        elif b[0] == "table":
            head, rows = b[1], b[2]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out.extend("| " + " | ".join(r) + " |" for r in rows)
            out.append("")
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1].relative_to(base).as_posix()})\n")
    return "\n".join(out)


def _inline_md(text: str) -> str:
    # Only the two inline forms the report uses: `code` and **bold**.
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def to_html(blocks: Sequence[Block]) -> str:
    """Render blocks as one self-contained HTML page (PNG figures embedded as base64)."""
    body = []
    for b in blocks:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{_inline_md(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{_inline_md(b[1])}</p>")
        elif b[0] == "table":
            head = "".join(f"<th>{_inline_md(h)}</th>" for h in b[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>" for r in b[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                f"<figcaption>{html.escape(b[2])}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;font-size:0.9em;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "figcaption{font-size:0.85em;color:#555}"
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>superlevel benchmark"
        f"</title><style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(store: Store, out_dir: str | Path) -> Report:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks, figures = build_blocks(store, out)
    md = out / "report.md"
    md.write_text(to_markdown(blocks, out), encoding="utf-8")
    page = out / "report.html"
    page.write_text(to_html(blocks), encoding="utf-8")
    return Report(md, page, figures)
