"""The study: the paper's experiments and open questions, answered from measured runs.

``superlevel study [--profile tiny|cpu|gpu] [--only E1,E2,...]`` runs every section through
the benchmark harness (so it resumes where it stopped) and writes ``docs/study``: one
report with a claims table at the top and one part per section, each with its question,
protocol, figures, a table with 95% confidence intervals and a verdict computed from the
numbers, as ``README.md`` and as the self-contained ``report.html`` (figures embedded),
both rendered from the same blocks (:mod:`superlevel.bench.report.render`).
``--report-only`` rebuilds both from the stored results without training.

Sections (fixed ids): E1 quadratic, E2 landscape topology, E3 MNIST and beta,
N2 activations, Q1 architectures, Q2 noisy and imbalanced data, Q3 reinforcement learning,
A1 the ablation (is the rule more than clipping plus decay?).
"""

from __future__ import annotations

SECTION_IDS = ("E1", "E2", "E3", "N2", "Q1", "Q2", "Q3", "A1")
