"""Per-volume score tables -> the evaluation report: TSV tables and PNG figures (Online Methods 5.4).

Outputs (each written atomically; a Snakemake rule marks them `report(...)`):
- scores: every per-volume row in one table;
- structures: per system and structure, per metric: n, mean, std, median, 95% bootstrap CI (Table A.12);
- datasets: the same per system and dataset (source);
- comparison: model vs. baseline per structure and metric, paired test and corrected p-value;
- summary: Tables A.7/A.8 rows (per dataset and all test data; mutual and all structures);
- radar, bars, bubbles: the figures of plots.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from cadsflow.atomic import atomic_path
from cadsflow.evaluation import plots
from cadsflow.evaluation.statistics import (
    BASELINE,
    BOOTSTRAP_SAMPLES,
    DEFAULT_CORRECTION,
    MODEL,
    SIGNIFICANCE_ALPHA,
    compare_paired,
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
    baseline: str = BASELINE,
) -> None:
    """Read per-volume score tables and write every output named in `outputs` (keys: REPORT_OUTPUTS)."""
    missing = [k for k in REPORT_OUTPUTS if k not in outputs]
    if missing:
        raise ValueError(f"report outputs missing: {missing}")
    scores = read_scores(score_tables)
    structures = summarize(scores, ["system", "structure"], n_boot=n_boot, seed=seed)
    datasets = summarize(scores, ["system", "source"], n_boot=n_boot, seed=seed)
    comparison = compare_paired(scores, model, baseline, correction=correction, alpha=alpha)
    summary = summary_table(scores, model, baseline)

    write_table(scores, outputs["scores"])
    write_table(structures, outputs["structures"])
    write_table(datasets, outputs["datasets"])
    write_table(comparison, outputs["comparison"])
    write_table(summary, outputs["summary"])
    plots.radar_plot(structures, outputs["radar"], systems=(model, baseline))
    plots.dataset_bars(datasets, outputs["bars"], systems=(model, baseline))
    plots.difference_bubbles(comparison, outputs["bubbles"], model, baseline)


def write_table(table: pd.DataFrame, path: str) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="")
