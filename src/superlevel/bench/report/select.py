"""Selection and summaries: which runs the report compares, and their numbers (pure).

Everything here works on run records as :meth:`~superlevel.bench.store.Store.runs`
returns them; nothing reads a store or draws.

- A **setting** is what makes runs comparable across optimizers: task, budget, epochs,
  task options.
- A **configuration** is a setting plus an optimizer and its hyperparameters: the runs
  of one configuration differ only in their seed, and only they are averaged. One
  table row is one configuration, never a pool of several.
- Per optimizer, the **compared** configurations are the tuned one (the selected setting
  rerun over seeds; when an optimizer was tuned more than once, the most recently
  finished tuned configuration, with a note saying so) when there is one, else every
  configuration tagged ``default``, each its own row.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superlevel.bench.stats import mean_std, t_interval

__all__ = [
    "Config",
    "Setting",
    "SettingKey",
    "Summary",
    "configurations",
    "differing",
    "fmt",
    "hparams_text",
    "plural",
    "seeds_text",
    "select",
    "setting_key",
    "summarize",
]

Run = dict[str, Any]
SettingKey = tuple[str, str, int, str]  # task, budget, epochs, options json
DONE = ("finished", "diverged")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def setting_key(run: Mapping[str, Any]) -> SettingKey:
    """The setting of ``run``: task, budget, epochs and its options as canonical JSON."""
    return run["task"], run["budget"], int(run["epochs"]), _json(run["task_options"])


def plural(n: int, word: str) -> str:
    """``"1 epoch"``, ``"2 epochs"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def fmt(x: float | None, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits; an em dash for ``None`` and non-finite."""
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def seeds_text(seeds: Iterable[int]) -> str:
    """``1-5`` for a run of three or more consecutive seeds, else ``1,3``."""
    s = sorted(seeds)
    if s and s == list(range(s[0], s[-1] + 1)) and len(s) > 2:
        return f"{s[0]}-{s[-1]}"
    return ",".join(map(str, s))


@dataclass(frozen=True)
class Config:
    """One configuration's done runs (sorted by seed) and why they are in the report.

    Attributes:
        optimizer: the optimizer.
        hparams: its hyperparameters (the same for every run here).
        protocol: ``"tuned"`` or ``"default"``.
        runs: the runs, one per seed.
        label: the name in the overview, legends and profile: the optimizer, plus the
            hyperparameters that differ when it has several compared configurations.
        note: a sentence for the reader (e.g. other tuned settings not shown).
    """

    optimizer: str
    hparams: dict[str, Any]
    protocol: str
    runs: tuple[Run, ...]
    label: str
    note: str = ""

    @property
    def seeds(self) -> list[int]:
        return [r["seed"] for r in self.runs]


@dataclass(frozen=True)
class Setting:
    """One setting: every configuration in its table, and the compared ones.

    Attributes:
        key: task, budget, epochs, options json.
        rows: the table rows: per optimizer its compared configurations, and for a tuned
            optimizer also its default configurations (for reference).
        compared: the configurations the overview, figures and profile compare.
        runs: every run of the setting, done or not (LR-sensitivity plot, counts).
    """

    key: SettingKey
    rows: tuple[Config, ...]
    compared: tuple[Config, ...]
    runs: tuple[Run, ...] = field(repr=False)

    @property
    def first(self) -> Run:
        return self.compared[0].runs[0]

    @property
    def metric_name(self) -> str:
        return self.first["metric_name"] or "metric"

    @property
    def higher_is_better(self) -> bool:
        return bool(self.first["higher_is_better"])

    @property
    def target(self) -> float | None:
        return self.first["target"]

    def title(self) -> str:
        task, budget, epochs, opts = self.key
        suffix = "" if opts == "{}" else f", options {opts}"
        return f"{task} (budget {budget}, {plural(epochs, 'epoch')}{suffix})"

    def slug(self) -> str:
        task, budget, epochs, opts = self.key
        extra = ""
        if opts != "{}":
            extra = "_" + "".join(c if c.isalnum() else "-" for c in opts.strip("{}"))[:40]
        return f"{task}_{budget}_e{epochs}{extra}"


def _by_hparams(runs: Iterable[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        groups[_json(r["hparams"])].append(r)
    return groups


def differing(hparams: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys whose values are not the same in every one of ``hparams``."""
    keys = sorted({k for h in hparams for k in h})
    return [k for k in keys if len({_json(h.get(k)) for h in hparams}) > 1]


def hparams_text(hparams: Mapping[str, Any], keys: Sequence[str]) -> str:
    """``lr=0.01, momentum=0.9`` for ``keys`` of ``hparams``."""
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k in keys for v in [hparams.get(k)]
    )


def _configs(optimizer: str, groups: Sequence[tuple[str, list[Run], str]]) -> list[Config]:
    """:class:`Config` of ``(protocol, runs, note)`` groups, labelled apart from each other."""
    keys = differing([g[1][0]["hparams"] for g in groups]) if len(groups) > 1 else []
    out = []
    for protocol, runs, note in groups:
        hp = runs[0]["hparams"]
        label = f"{optimizer} ({hparams_text(hp, keys)})" if keys else optimizer
        ordered = tuple(sorted(runs, key=lambda r: r["seed"]))
        out.append(Config(optimizer, hp, protocol, ordered, label, note))
    return out


def configurations(runs: Sequence[Run]) -> tuple[list[Config], list[Config]]:
    """The table rows and the compared configurations of one setting's ``runs``.

    Returns:
        ``(rows, compared)``, both ordered by optimizer; runs not done are left out.
    """
    by_opt: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        if r["status"] in DONE:
            by_opt[r["optimizer"]].append(r)
    rows: list[Config] = []
    compared: list[Config] = []
    for opt, rs in sorted(by_opt.items()):
        tuned = _by_hparams(r for r in rs if "tuned" in r["tags"])
        default = _by_hparams(r for r in rs if "default" in r["tags"])
        reference: list[tuple[str, list[Run], str]] = []
        if tuned:
            latest = max(tuned, key=lambda k: max(r["finished_at"] or 0 for r in tuned[k]))
            note = ""
            if len(tuned) > 1:
                note = (
                    f"`{opt}` was tuned {len(tuned)} times in this setting; shown is the "
                    "most recently finished tuned configuration."
                )
            chosen = [("tuned", tuned[latest], note)]
            # Its defaults for reference, unless they are the tuned configuration itself.
            reference = [("default", g, "") for k, g in sorted(default.items()) if k != latest]
        else:
            chosen = [("default", g, "") for _, g in sorted(default.items())]
        picked = _configs(opt, chosen)
        compared += picked
        rows += picked + _configs(opt, reference)
    return rows, compared


def select(runs: Sequence[Run]) -> list[Setting]:
    """Group ``runs`` into settings (sorted) with their rows; settings without any left out."""
    by_setting: dict[SettingKey, list[Run]] = defaultdict(list)
    for r in runs:
        by_setting[setting_key(r)].append(r)
    out = []
    for key, rs in sorted(by_setting.items()):
        rows, compared = configurations(rs)
        if compared:
            out.append(Setting(key, tuple(rows), tuple(compared), tuple(rs)))
    return out


@dataclass(frozen=True)
class Summary:
    """The numbers of one configuration's runs (one table row).

    Attributes:
        n: runs (seeds).
        seeds: their seeds.
        diverged: how many diverged.
        scores: per seed, the test metric, a diverged seed scored with its untrained
            model's (:func:`~superlevel.bench.tune.final_score`): a failure counts.
        mean, std: of ``scores`` (``None`` when there are none).
        ci: 95% Student-t interval of that mean.
        test_loss: mean test loss of the finished runs.
        stt_median: median steps-to-target over all seeds, a seed that never reached it
            counting as infinitely slow (``None`` when that median is infinite).
        reached: seeds that reached the target.
        ms_per_step: mean training time per step.
    """

    n: int
    seeds: list[int]
    diverged: int
    scores: list[float]
    mean: float | None
    std: float | None
    ci: tuple[float | None, float | None]
    test_loss: float | None
    stt_median: float | None
    reached: int
    ms_per_step: float | None


def summarize(runs: Sequence[Run]) -> Summary:
    """The :class:`Summary` of one configuration's runs."""
    from superlevel.bench.tune import final_score

    scored = [(r["seed"], final_score(r)) for r in runs]
    scores = [v for _, v in scored if v is not None and math.isfinite(v)]
    mean = std = test_loss = None
    ci: tuple[float | None, float | None] = (None, None)
    if scores:
        mean, std = mean_std(scores)
        ci = t_interval(scores)
    done = [r for r in runs if r["status"] == "finished"]
    losses = [r["test_loss"] for r in done if r["test_loss"] is not None]
    test_loss = float(np.mean(losses)) if losses else None
    stt = [r["steps_to_target"] for r in runs]
    med = float(np.median([math.inf if s is None else s for s in stt])) if stt else math.inf
    timed = [r["train_s"] / r["steps"] for r in runs if r["steps"] and r["train_s"] is not None]
    return Summary(
        n=len(runs),
        seeds=[r["seed"] for r in runs],
        diverged=sum(r["status"] == "diverged" for r in runs),
        scores=scores,
        mean=mean,
        std=std,
        ci=ci,
        test_loss=test_loss,
        stt_median=med if math.isfinite(med) else None,
        reached=sum(s is not None for s in stt),
        ms_per_step=1000 * float(np.mean(timed)) if timed else None,
    )
