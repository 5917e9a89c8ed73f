"""Q1 — architectures: MLP, CNN, RNN and Transformer against the usual optimizers.

Not implemented in this version: the report states its protocol and that it has not run.
"""

from __future__ import annotations

from superlevel.study.common import Context, SectionResult, not_yet_run

ID = "Q1"
TITLE = "Architectures"
PROTOCOL = (
    "**Question.** Does the rule match or beat the usual optimizers beyond MLPs?\n\n"
    "**Protocol (planned).** MLP, CNN (fmnist_2c2d, mnist1d_cnn), RNN (char_lstm), "
    "Transformer (char_transformer) x {sgd, momentum, adam, adamw, sgdr, sgd_expdecay, "
    "sgd_clip, superlevel, superlevel_momentum}: the same tuning budget for every "
    "optimizer, selection on validation, >= 5 seeds at the selected setting; "
    "time-to-target and a performance profile."
)
WHY = "this section's runner is not implemented yet."


def report(ctx: Context, cfg: object) -> SectionResult:
    """Always "not yet run" in this version."""
    return not_yet_run(ID, TITLE, PROTOCOL, WHY)
