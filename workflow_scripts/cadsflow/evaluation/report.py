"""Per-volume score tables -> the evaluation report: TSV tables and PNG figures (Online Methods 5.4).

Outputs (each written atomically; a Snakemake rule marks them `report(...)`):
- scores: every per-volume row in one table;
- structures: per system and structure, per metric: n, mean, std, median, 95% bootstrap CI (Table A.12);
- datasets: the same per system and dataset (source);
- comparison: the model vs. each other system (the specialists, the baseline: column `versus`) per structure and
  metric, paired test and corrected p-value;
- summary: Tables A.7/A.8 rows (per dataset and all test data; mutual structures per other system, and all);
- radar, bars, bubbles: the figures of plots.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd

from cadsflow.atomic import atomic_path
from cadsflow.evaluation import plots
from cadsflow.evaluation.statistics import (
    BASELINE,
    BOOTSTRAP_SAMPLES,
    DEFAULT_CORRECTION,
    MODEL,
    SIGNIFICANCE_ALPHA,
    compare_systems,
    read_scores,
    summarize,
    summary_table,
)

REPORT_OUTPUTS = ("scores", "structures", "datasets", "comparison", "summary", "radar", "bars", "bubbles")


def build_report(
    score_tables: Iterable[str],
    outputs: Mapping[str, str],
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    correction: str = DEFAULT_CORRECTION,
    alpha: float = SIGNIFICANCE_ALPHA,
    model: str = MODEL,
    others: Sequence[str] | None = None,
) -> None:
    """Read per-volume score tables and write every output named in `outputs` (keys: REPORT_OUTPUTS).

    `others`: the systems the model is compared with, in report order; None = every other system in the scores
    (the baseline last).
    """
    missing = [k for k in REPORT_OUTPUTS if k not in outputs]
    if missing:
        raise ValueError(f"report outputs missing: {missing}")
    scores = read_scores(score_tables)
    others = list(others) if others is not None else other_systems(scores, model)
    structures = summarize(scores, ["system", "structure"], n_boot=n_boot, seed=seed)
    datasets = summarize(scores, ["system", "source"], n_boot=n_boot, seed=seed)
    comparison = compare_systems(scores, model, others, correction=correction, alpha=alpha)
    summary = summary_table(scores, model, others)

    write_table(scores, outputs["scores"])
    write_table(structures, outputs["structures"])
    write_table(datasets, outputs["datasets"])
    write_table(comparison, outputs["comparison"])
    write_table(summary, outputs["summary"])
    systems = (model, *others)
    plots.radar_plot(structures, outputs["radar"], systems=systems)
    plots.dataset_bars(datasets, outputs["bars"], systems=systems)
    plots.difference_bubbles(comparison, outputs["bubbles"], model, others)


def other_systems(scores: pd.DataFrame, model: str = MODEL) -> list[str]:
    """The systems of the scores besides the model, in order of appearance, the baseline last."""
    names = [s for s in dict.fromkeys(scores["system"]) if s != model]
    return [s for s in names if s != BASELINE] + [s for s in names if s == BASELINE]


def write_table(table: pd.DataFrame, path: str) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="")
