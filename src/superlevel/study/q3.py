"""Q3 — reinforcement learning in POMDPs (the paper's open question 3).

Waits for the harness's RL tasks: until they are registered the report says so.
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
WHY = "the harness has no RL tasks yet."


def report(ctx: Context, cfg: object) -> SectionResult:
    """Always "not yet run" until the RL tasks land."""
    return not_yet_run(ID, TITLE, PROTOCOL, WHY)
