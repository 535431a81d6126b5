"""Summaries and paired comparisons of score tables (Online Methods 5.4, Tables A.7, A.8, A.12).

- ``summarize``: per group (e.g. system x structure, or system x dataset) and metric: n, mean, std, median and a
  percentile-bootstrap 95% confidence interval of the mean;
- ``compare_paired``: the model vs. one other system (the baseline, the specialists, ...) per structure and metric
  on the volumes both scored: a Shapiro-Wilk test of the paired differences picks a paired t-test (normal) or a
  Wilcoxon signed-rank test (not), via pingouin; p-values are not corrected by default, as the authors ran their
  tests (murong-xu/CADS misc/sandbox/table_plots/utils/utils.py: compare_models_stat_test(
  do_benjamini_hochberg=False)); Holm (or any pingouin method) across structures per metric is an option (config
  evaluation.correction); ``compare_systems`` stacks one such comparison per other system (column ``versus``),
  each corrected on its own;
- ``summary_table``: the Tables A.7/A.8 rows: per dataset and over all test data, per other system its mean, the
  model's and their difference on the structures both scored, and (model only) the mean on all structures.
Only rows whose status counts for the paper's statistics (scored, false_negative) enter any of these.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from cadsflow.evaluation.volumes import AGGREGATED_STATUSES

METRICS = ("dice", "nsd", "hd", "hd95")
HIGHER_IS_BETTER = {"dice": True, "nsd": True, "hd": False, "hd95": False}
CONFIDENCE = 0.95  # Online Methods 5.4 / Table A.12: 95% confidence intervals
NORMALITY_ALPHA = 0.05  # Shapiro-Wilk: p > 0.05 reads as normal (as in Algorithm 1's test choice)
SIGNIFICANCE_ALPHA = 0.05  # Table A.12: significant improvements at p < 0.05
BOOTSTRAP_SAMPLES = 10_000  # murong-xu/CADS misc/sandbox/table_plots/utils/utils.py: bootstrap_ci(n_iterations=10000)
NO_CORRECTION = "none"
DEFAULT_CORRECTION = NO_CORRECTION  # the authors' tables: uncorrected p < 0.05
CORRECTIONS = (NO_CORRECTION, "holm", "bonf", "sidak", "fdr_bh", "fdr_by")
MIN_PAIRS_FOR_TEST = 3  # Shapiro-Wilk needs at least 3 values
MODEL, BASELINE = "model", "baseline"
ALL_TEST_DATA = "all"
_BOOTSTRAP_CHUNK_VALUES = 4_000_000  # resampled values held in memory at once


def read_scores(paths: Iterable[str]) -> pd.DataFrame:
    """Concatenate per-volume score tables (evaluate.write_scores)."""
    frames = []
    for path in paths:
        try:
            frames.append(pd.read_csv(path, sep="\t", dtype={"volume_id": str, "source": str, "structure": str}))
        except (OSError, pd.errors.ParserError) as exc:
            raise ValueError(f"{path}: cannot read score table ({exc})") from None
    if not frames:
        raise ValueError("no score tables to aggregate")
    return pd.concat(frames, ignore_index=True)


def aggregated(scores: pd.DataFrame) -> pd.DataFrame:
    """Rows that count for the statistics (scored and penalised false negatives)."""
    return scores[scores["status"].isin(AGGREGATED_STATUSES)]


def describe(values: Sequence[float], n_boot: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> dict:
    """n, mean, std (ddof 1), median and the bootstrap CI of the mean of `values` (NaNs dropped)."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n == 0:
        return dict(n=0, mean=math.nan, std=math.nan, median=math.nan, ci_low=math.nan, ci_high=math.nan)
    low, high = bootstrap_ci(x, n_boot, seed)
    return dict(
        n=n,
        mean=float(np.mean(x)),
        std=float(np.std(x, ddof=1)) if n > 1 else math.nan,
        median=float(np.median(x)),
        ci_low=low,
        ci_high=high,
    )


def bootstrap_ci(x: np.ndarray, n_boot: int = BOOTSTRAP_SAMPLES, seed: int = 0, level: float = CONFIDENCE):
    """Percentile bootstrap interval of the mean (resampling with replacement, `n_boot` times, seeded)."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    if n == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, _BOOTSTRAP_CHUNK_VALUES // n)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarize(
    scores: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = METRICS, n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """One row per group and metric: by..., metric, n, mean, std, median, ci_low, ci_high."""
    rows = []
    data = aggregated(scores)
    for key, group in data.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            rows.append({**dict(zip(by, key)), "metric": metric, **describe(group[metric], n_boot, seed)})
    columns = [*by, "metric", "n", "mean", "std", "median", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def paired_values(scores: pd.DataFrame, model: str = MODEL, versus: str = BASELINE) -> pd.DataFrame:
    """Rows (volume, structure) that both systems scored, with <metric>_model and <metric>_versus columns."""
    data = aggregated(scores)
    keys = ["volume_id", "source", "structure"]
    a = data[data["system"] == model][keys + list(METRICS)]
    b = data[data["system"] == versus][keys + list(METRICS)]
    return a.merge(b, on=keys, suffixes=("_model", "_versus"))


COMPARISON_COLUMNS = ("versus", "structure", "metric", "n_pairs", "model_mean", "versus_mean", "delta", "normality_p",
                      "test", "p_value", "p_adjusted", "significant", "better")  # fmt: skip


def compare_paired(
    scores: pd.DataFrame, model: str = MODEL, versus: str = BASELINE, metrics: Sequence[str] = METRICS,
    correction: str = DEFAULT_CORRECTION, alpha: float = SIGNIFICANCE_ALPHA,
) -> pd.DataFrame:  # fmt: skip
    """Per structure and metric: paired test of `model` vs. `versus`, optionally corrected for multiple comparisons.

    Columns (COMPARISON_COLUMNS): versus, structure, metric, n_pairs, model_mean, versus_mean, delta (model -
    versus), normality_p, test ("t-test", "wilcoxon", "identical" when all differences are 0, "none" below 3 pairs),
    p_value, p_adjusted, significant, better (`model`, `versus` or "").
    """
    import pingouin as pg

    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    pairs = paired_values(scores, model, versus)
    rows = []
    for structure, group in pairs.groupby("structure", sort=True):
        for metric in metrics:
            x = group[f"{metric}_model"].to_numpy(float)
            y = group[f"{metric}_versus"].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            rows.append({"versus": versus, "structure": structure, "metric": metric, **_paired_test(pg, x[ok], y[ok])})
    table = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    if table.empty:
        return table
    for metric in metrics:
        sel = (table["metric"] == metric) & table["p_value"].notna()
        if sel.any() and correction == NO_CORRECTION:
            table.loc[sel, "p_adjusted"] = table.loc[sel, "p_value"]
        elif sel.any():
            reject, adjusted = pg.multicomp(table.loc[sel, "p_value"].to_numpy(float), alpha=alpha, method=correction)
            table.loc[sel, "p_adjusted"] = adjusted
    table["significant"] = table["p_adjusted"].notna() & (table["p_adjusted"] < alpha)
    sign = np.where(table["metric"].map(HIGHER_IS_BETTER), 1.0, -1.0) * table["delta"]
    significant = table["significant"].to_numpy(bool)
    table["better"] = np.where(significant & (sign > 0), model, np.where(significant & (sign < 0), versus, ""))
    return table


def compare_systems(
    scores: pd.DataFrame, model: str = MODEL, others: Sequence[str] = (BASELINE,), metrics: Sequence[str] = METRICS,
    correction: str = DEFAULT_CORRECTION, alpha: float = SIGNIFICANCE_ALPHA,
) -> pd.DataFrame:  # fmt: skip
    """compare_paired of `model` against each of `others` that the scores hold, stacked (column `versus`)."""
    present = set(scores["system"])
    tables = [compare_paired(scores, model, other, metrics, correction, alpha) for other in others if other in present]
    tables = [t for t in tables if not t.empty]
    if not tables:
        return pd.DataFrame(columns=list(COMPARISON_COLUMNS))
    return pd.concat(tables, ignore_index=True)


def summary_table(
    scores: pd.DataFrame, model: str = MODEL, others: Sequence[str] = (BASELINE,), metrics: Sequence[str] = METRICS
) -> pd.DataFrame:
    """Tables A.7/A.8: mean per dataset and over all test data; per other system the mutual structures (that system,
    the model and their delta; column `versus`) and, once, all structures of the model.

    Mutual rows use the (volume, structure) pairs both systems scored; the delta is model - the other system.
    """
    rows = []
    data = aggregated(scores)
    pairs = {other: paired_values(scores, model, other) for other in others}
    groups = [(ALL_TEST_DATA, None), *((s, s) for s in sorted(data["source"].unique()))]
    for dataset, source in groups:
        for other, other_pairs in pairs.items():
            sub_pairs = other_pairs if source is None else other_pairs[other_pairs["source"] == source]
            if len(sub_pairs):
                theirs = {m: float(sub_pairs[f"{m}_versus"].mean()) for m in metrics}
                mine = {m: float(sub_pairs[f"{m}_model"].mean()) for m in metrics}
                n = len(sub_pairs)
                rows.append(dict(dataset=dataset, scope="mutual", versus=other, system=other, n=n, **theirs))
                rows.append(dict(dataset=dataset, scope="mutual", versus=other, system=model, n=n, **mine))
                delta = {m: mine[m] - theirs[m] for m in metrics}
                rows.append(dict(dataset=dataset, scope="mutual", versus=other, system="delta", n=n, **delta))
        sub = data[data["system"] == model]
        sub = sub if source is None else sub[sub["source"] == source]
        if len(sub):
            means = {m: float(sub[m].mean()) for m in metrics}
            rows.append(dict(dataset=dataset, scope="all", versus="", system=model, n=len(sub), **means))
    return pd.DataFrame(rows, columns=["dataset", "scope", "versus", "system", "n", *metrics])


# -- helpers ---------------------------------------------------------------------------------------------------


def _paired_test(pg, x: np.ndarray, y: np.ndarray) -> dict:
    n = len(x)
    out = dict(n_pairs=n, model_mean=_mean(x), versus_mean=_mean(y), delta=_mean(x - y) if n else math.nan,
               normality_p=math.nan, test="none", p_value=math.nan, p_adjusted=math.nan)  # fmt: skip
    if n < MIN_PAIRS_FOR_TEST:
        return out
    d = x - y
    if np.all(d == 0):
        out.update(test="identical", p_value=1.0)
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        normality_p = _p(pg.normality(d, method="shapiro"), ("pval", "p_val", "p-val")) if np.ptp(d) > 0 else 0.0
        if normality_p > NORMALITY_ALPHA:
            out.update(test="t-test", p_value=_p(pg.ttest(x, y, paired=True), ("p_val", "p-val")))
        else:
            out.update(test="wilcoxon", p_value=_p(pg.wilcoxon(x, y), ("p_val", "p-val")))
    out["normality_p"] = normality_p
    return out


def _p(frame: pd.DataFrame, names) -> float:
    for name in names:
        if name in frame.columns:
            return float(frame[name].iloc[0])
    raise KeyError(f"no p-value column among {list(frame.columns)}")


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan
