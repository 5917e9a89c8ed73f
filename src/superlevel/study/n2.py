"""N2 — activations: does the rule's stability hold across ReLU, leaky ReLU, tanh, sigmoid, GELU?

Not implemented in this version: the report states its protocol and that it has not run.
"""

from __future__ import annotations

from superlevel.study.common import Context, SectionResult, not_yet_run

ID = "N2"
TITLE = "Activations"
PROTOCOL = (
    "**Question.** Is the rule's behaviour the same across activation functions?\n\n"
    "**Protocol (planned).** ReLU, leaky ReLU, tanh, sigmoid, GELU x {superlevel, "
    "superlevel_momentum, sgd, momentum, adam, sgd_clip}, each tuned with the same grid "
    "budget on validation, >= 5 seeds at the selected setting; accuracy and stability."
)
WHY = "this section's runner is not implemented yet."


def report(ctx: Context, cfg: object) -> SectionResult:
    """Always "not yet run" in this version."""
    return not_yet_run(ID, TITLE, PROTOCOL, WHY)
