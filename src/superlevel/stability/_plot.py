"""The monitor's figure: three stacked panels sharing the step axis (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    pts = [(s, float(v)) for s, v in pts if math.isfinite(float(v))]
    return [s for s, _ in pts], [v for _, v in pts]


def plot_records(records: list[dict[str, Any]], path: Path, title: str | None = None) -> Path:
    """Panels: (1) loss and dV (violations marked), (2) effective lr and the largest
    stable lr ``c / sharpness`` (log scale), (3) sub- and super-level segment barriers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(7.5, 8.0), sharex=True)
    ax = axes[0]
    steps, loss = _series(records, "loss")
    ax.plot(steps, loss, lw=0.8, color="C0", label="loss $L_t$")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if loss and min(loss) > 0 else "linear")
    twin = ax.twinx()
    # raw dV between consecutive mini-batches is mostly batch noise: show the running
    # fraction of violations instead, which is what tells stable from unstable
    vsteps = [r["step"] for r in records if r.get("dV") is not None]
    flags = [1.0 if r.get("violation") else 0.0 for r in records if r.get("dV") is not None]
    window = max(1, min(50, len(flags) // 10 or 1))
    if flags:
        run = [
            sum(flags[max(0, i - window + 1) : i + 1]) / len(flags[max(0, i - window + 1) : i + 1])
            for i in range(len(flags))
        ]
        twin.plot(vsteps, run, lw=0.8, color="C1", label=f"fraction dV > 0 (last {window})")
    twin.set_ylim(0.0, 1.0)
    twin.set_ylabel("fraction of steps with dV > 0")
    n_viol = int(sum(flags))
    ax.set_title(
        f"{n_viol} of {len(flags)} steps with dV = L_t - L_(t-1) > 0 (consecutive batches)",
        fontsize=9,
    )
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="upper right")

    ax = axes[1]
    s, lr = _series(records, "lr")
    ax.plot(s, lr, lw=0.8, color="C2", label="effective lr")
    s, slr = _series(records, "stable_lr")
    if slr:
        ax.plot(s, slr, "o-", ms=3, color="C3", label="largest stable lr $c/\\lambda_{max}$")
    ax.set_yscale("log")
    ax.set_ylabel("step size")
    s2, sh = _series(records, "sharpness")
    if sh and not slr:
        ax.text(
            0.01,
            0.02,
            "no stability rule for this optimizer: sharpness only",
            transform=ax.transAxes,
            fontsize=8,
        )
    ax.legend(fontsize=8, loc="upper right")

    ax = axes[2]
    for key, color, label in (
        ("barrier_sub", "C4", "sub-level barrier (max on segment - max end)"),
        ("barrier_super", "C5", "super-level barrier (min end - min on segment)"),
    ):
        s, b = _series(records, key)
        if b:
            ax.plot(s, b, "o-", ms=3, color=color, label=label)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_ylabel("barrier")
    ax.set_xlabel("step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
