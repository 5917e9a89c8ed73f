"""A1 — the decisive ablation: is SuperLevelSGD more than clipping plus exponential decay?

The rule's step is ``a(t) g / (1 + ||g|| / s)``: for large gradients it tends to
normalised GD with step ``a(t) s``, for small ones to GD, and its step length is always
below ``a(t) s``, a smooth form of global-norm clipping. A reader's first question is
whether that smoothness matters on real tasks. Arms, all under the bench tuning protocol
with the same trials (lr and ``decay_total``, plus ``max_norm`` for the clip):

- ``superlevel``: the rule (``s = 1``);
- ``sgd_clip_expdecay``: hard clip at ``max_norm``, then SGD with the same decay;
- ``ngd_expdecay``: normalised GD ``g / ||g||`` with the same decay (the large-gradient limit);
- ``sgd_expdecay``: the decay alone (the small-gradient limit);
- ``adam_damped``: the modulation on Adam, ``Adam(g / (1 + ||g||))`` with the decay;
- ``superlevel@norm_scale=s`` for ``s`` in the sweep: where between the limits it works.

**Rule, written before the numbers.** Per task and arm, the paired comparison of
``superlevel`` minus the arm over the final seeds, with Holm's correction over the
section's family and TOST against the task's margin: ``equivalent`` means the rule is,
within the margin, the arm; ``higher``/``lower``; else ``inconclusive``. The paper's
method is *more than clipping plus decay* on a task only when it is ``higher`` than
``sgd_clip_expdecay`` there; it is *no more* when ``equivalent`` or ``lower``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from superlevel.bench.report.render import Block, Paragraph, Table
from superlevel.study.common import (
    Context,
    Tally,
    Verdict,
    compute_text,
    paragraphs,
)
from superlevel.study.compare import (
    Compared,
    Comparison,
    TasksConfig,
    load_complete_tasks,
    missing_blocks,
    run_comparison,
    summarize,
    tasks_text,
)

ID = "A1"
TITLE = "Ablation: more than clipping plus decay?"
REFERENCE = "superlevel"
CLIP = "sgd_clip_expdecay"
ARMS = ("superlevel", CLIP, "ngd_expdecay", "sgd_expdecay", "adam_damped")


@dataclass(frozen=True)
class Config:
    """A1's size: tasks (with options, budget, epochs), arms, the norm_scale sweep, trials,
    seeds."""

    tasks: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]
    trials: int
    seeds: int
    norm_scales: tuple[float, ...] = (0.1, 10.0, 100.0)
    budget: str = "quick"
    epochs: int | None = None
    arms: tuple[str, ...] = ARMS

    @property
    def optimizers(self) -> tuple[str, ...]:
        return self.arms + tuple(f"superlevel@norm_scale={s:g}" for s in self.norm_scales)

    def tasks_config(self) -> TasksConfig:
        return TasksConfig(self.tasks, self.optimizers, self.trials, self.seeds, self.budget,
                           self.epochs)  # fmt: skip

    def comparison(self, tasks: tuple[str, ...] | None = None) -> Any:
        return self.tasks_config().comparison(tasks)


def configs(cfg: Config) -> list[Comparison]:
    """One comparison per task (every arm and the norm_scale sweep)."""
    return [cfg.comparison((task,)) for task, *_ in cfg.tasks]


def run(ctx: Context, cfg: Config) -> None:
    """Task by task: every arm through the tuning protocol, then its final seeds."""
    for comp in configs(cfg):
        run_comparison(ctx, comp, ID)


def load(ctx: Context, cfg: Config) -> Compared | str:
    """A1's comparison over the complete tasks, from stored runs only, or what is missing."""
    loaded = load_complete_tasks(ctx, cfg)
    if isinstance(loaded, str):
        return loaded
    done, out, missing = loaded
    return Compared(done, out, summarize(ctx, done.comparison(), out, REFERENCE), missing)


def blocks(ctx: Context, cfg: Config, m: Compared) -> list[Block]:
    """A1's body: protocol, compute and the table."""
    table = Table(
        ["task", "arm", "selected", f"test score % mean (min..max), {cfg.seeds} seeds",
         f"{REFERENCE} minus arm [95% CI] (points)", "verdict (Holm, TOST)"],
        m.summ.rows,
    )  # fmt: skip
    return [
        *paragraphs(protocol(cfg)),
        *missing_blocks(m.missing),
        Paragraph(compute_text(m.out.all_runs)),
        table,
    ]


def verdict(cfg: Config, m: Compared) -> Verdict:
    """On how many tasks the rule is higher than the hard clip with the same decay."""
    tasks = [s.label for s in m.cfg.comparison().settings]
    lines = []
    for task in tasks:
        c = m.summ.verdicts.get(f"{task}|{CLIP}")
        lines.append(f"{task}: vs hard clip + decay {c.text() if c else 'not compared'}")
    t = m.summ.tally.get(CLIP, Tally())
    n = len(tasks)
    text = (
        f"Against hard clipping with the same exponential decay (`{CLIP}`), SuperLevelSGD "
        f"is higher on {t.higher}, equivalent on {t.equivalent}, lower on {t.lower} and "
        f"inconclusive on {t.inconclusive} of {n} tasks (Holm, TOST margins): shown to be "
        f"more than clipping plus decay on {t.higher} of {n}."
    )
    return Verdict(text, {}, "; ".join(lines) + ".")


def protocol(cfg: Config) -> str:
    """Question, protocol and the rule written before the numbers."""
    tasks = tasks_text(cfg.tasks, cfg.budget, cfg.epochs)
    return (
        "**Question.** Is the rule anything more than gradient clipping plus exponential "
        "decay on real tasks?\n\n"
        f"**Protocol.** Tasks {tasks}. Arms: {', '.join(f'`{o}`' for o in cfg.optimizers)}. "
        "Every arm: the bench "
        f"tuning protocol with {cfg.trials} trials over (lr, decay_total[, max_norm]), "
        f"finals on seeds 1..{cfg.seeds}, never the tuning seed. `superlevel@norm_scale=s` "
        "fixes s (the norm at which the step is halved; s -> 0 is normalised GD with step "
        "a s, s -> inf is GD).\n\n"
        "**Rule (before the numbers).** Per task and arm: superlevel minus the arm, paired "
        "over seeds, Holm over the section, TOST against the task's margin. The rule is "
        f"more than clipping plus decay on a task only when it is `higher` than `{CLIP}`; "
        "`equivalent` or `lower` means it is not."
    )
