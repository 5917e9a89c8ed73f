"""Make ``optimizer_step_length.png``: step length against gradient norm.

Run from the repository root: ``python docs/figures/optimizer_step_length.py``.
The curves are measured by stepping the optimizers, not drawn from the formulas.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from superlevel.optim import SuperLevelSGD  # noqa: E402

OUT = Path(__file__).with_suffix(".png")


def step_length(make_opt, norm: float, clip: float | None = None) -> float:
    p = torch.zeros(16, dtype=torch.float64, requires_grad=True)
    p.grad = torch.full_like(p, norm / 4.0)  # ||g|| = norm
    if clip is not None:
        torch.nn.utils.clip_grad_norm_([p], clip)
    make_opt([p]).step()
    return float(p.detach().norm())


def main() -> None:
    norms = torch.logspace(-2, 3, 120, dtype=torch.float64).tolist()
    a = 0.1
    curves = {
        "SGD: a·n": [step_length(lambda ps: torch.optim.SGD(ps, lr=a), n) for n in norms],
        "clip_grad_norm_(1) + SGD": [
            step_length(lambda ps: torch.optim.SGD(ps, lr=a), n, clip=1.0) for n in norms
        ],
    }
    for s in (1.0, 10.0):
        curves[f"SuperLevelSGD, norm_scale={s:g}: a·n/(1+n/s)"] = [
            step_length(lambda ps, s=s: SuperLevelSGD(ps, lr=a, norm_scale=s), n) for n in norms
        ]
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=110)
    for label, ys in curves.items():
        ax.loglog(norms, ys, label=label)
    ax.axhline(a, color="grey", lw=0.8, ls=":")
    ax.text(norms[0], a * 1.15, "a_t", color="grey", fontsize=8)
    ax.set_xlabel("global gradient norm n")
    ax.set_ylabel("step length ||Δθ||")
    ax.set_title("One step, a_t = 0.1", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
