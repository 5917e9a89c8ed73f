"""Q3 — reinforcement learning in POMDPs (the paper's open question 3).

The harness has the RL tasks (``cartpole_novel``, ``cartpole_noisy``, ``repeat_previous``),
but the RL issue makes a reference the condition for any optimizer comparison on them: our
recurrent PPO with Adam must reach a mean return of 450 on ``cartpole_novel`` at the full
budget. It has not yet (docs/data_and_tasks.md), so the section reports why it has not run.
"""

from __future__ import annotations

from superlevel.study.common import Context, SectionResult, not_yet_run

ID = "Q3"
TITLE = "Reinforcement learning in POMDPs"
PROTOCOL = (
    "**Question.** Does the rule stabilise policy optimisation in partially observable "
    "environments?\n\n"
    "**Protocol (planned).** Recurrent PPO on CartPole without velocities and its noisy "
    "variant; optimizers x >= 5 seeds, return curves with CIs, collapses and gradient-norm "
    "spikes."
)
WHY = (
    "the RL tasks exist, but the Adam reference on cartpole_novel has not reached the "
    "450 return that must hold before an optimizer comparison on them is trusted "
    "(see docs/data_and_tasks.md, reinforcement learning)."
)


def report(ctx: Context, cfg: object) -> SectionResult:
    """Always "not yet run" until the Adam reference reaches its bar."""
    return not_yet_run(ID, TITLE, PROTOCOL, WHY)
