"""Q2 — noisy and imbalanced data: label noise and class imbalance on MNIST and Fashion-MNIST.

Not implemented in this version: the report states its protocol and that it has not run.
"""

from __future__ import annotations

from superlevel.study.common import Context, SectionResult, not_yet_run

ID = "Q2"
TITLE = "Noisy and imbalanced data"
PROTOCOL = (
    "**Question.** Does the rule stay stable under label noise and class imbalance?\n\n"
    "**Protocol (planned).** Label noise 0 / 20 / 40 %, class imbalance 1 / 10 / 100 "
    "(balanced accuracy) on MNIST and Fashion-MNIST; the generalisation gap."
)
WHY = "this section's runner is not implemented yet."


def report(ctx: Context, cfg: object) -> SectionResult:
    """Always "not yet run" in this version."""
    return not_yet_run(ID, TITLE, PROTOCOL, WHY)
