"""Statistics and report (Online Methods 5.4, Tables A.7, A.8, A.12) on constructed score tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pingouin as pg
import pytest

from cadsflow.evaluation.evaluate import SCORE_COLUMNS, write_scores
from cadsflow.evaluation.report import REPORT_OUTPUTS, build_report
from cadsflow.evaluation.statistics import (
    BOOTSTRAP_SAMPLES,
    bootstrap_ci,
    compare_paired,
    describe,
    summarize,
    summary_table,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def scores_frame(rows) -> pd.DataFrame:
    return pd.DataFrame([dict(zip(SCORE_COLUMNS, r)) for r in rows], columns=SCORE_COLUMNS)


def paired_scores(model_dice, baseline_dice, structure="liver", source="src", hd_offset=0.0):
    rows = []
    offsets = np.broadcast_to(hd_offset, (len(model_dice),))
    for i, (m, b) in enumerate(zip(model_dice, baseline_dice)):
        for system, d in (("model", m), ("baseline", b)):
            hd = 10 * (1 - d) + (offsets[i] if system == "model" else 0)
            rows.append((f"v{i}", source, system, structure, "scored", d, d, hd, hd / 2, 1.0, 1.0, 1.0))
    return scores_frame(rows)


def test_describe_gives_mean_std_median_and_the_bootstrap_interval_of_the_mean():
    # resampling [0, 0, 0, 1]: the mean is k/4 with k ~ Binomial(4, 1/4); P(k = 0) = 0.32 > 2.5% and
    # P(k <= 2) = 0.949 < 97.5% <= P(k <= 3) = 0.996, so the 95% interval is exactly (0, 0.75)
    stats = describe([0.0, 0.0, 0.0, 1.0], seed=1)
    assert (stats["n"], stats["mean"], stats["median"], stats["ci_low"], stats["ci_high"]) == (4, 0.25, 0.0, 0.0, 0.75)
    assert stats["std"] == pytest.approx(0.5)  # sqrt(0.75 / 3)


def test_bootstrap_interval_of_a_symmetric_sample_matches_the_normal_approximation():
    x = np.linspace(0.0, 1.0, 100)
    half_width = 1.96 * np.std(x) / np.sqrt(len(x))  # 0.0566: the bootstrap SE of the mean is std(ddof=0)/sqrt(n)
    low, high = bootstrap_ci(x, seed=7)
    assert low == pytest.approx(0.5 - half_width, abs=0.004) and high == pytest.approx(0.5 + half_width, abs=0.004)


def test_bootstrap_defaults_to_the_authors_10000_samples_and_is_reproducible_with_a_seed():
    import inspect

    from cadsflow.evaluation.report import build_report

    defaults = {f.__name__: inspect.signature(f).parameters["n_boot"].default for f in (describe, summarize, build_report)}
    assert BOOTSTRAP_SAMPLES == 10_000 and set(defaults.values()) == {10_000}
    x = np.random.default_rng(0).normal(size=50)
    assert bootstrap_ci(x, 500, seed=3) == bootstrap_ci(x, 500, seed=3) != bootstrap_ci(x, 500, seed=4)
    assert bootstrap_ci(np.full(7, 0.5), 500) == (0.5, 0.5)


def test_summaries_ignore_excluded_missed_partial_and_absent_rows():
    rows = [("v1", "s", "model", "liver", "scored", 0.9, 0.9, 2, 1, 1, 1, 1),
            ("v2", "s", "model", "liver", "false_negative", 0.0, 0.0, 500, 500, 1, 0, 1),
            ("v3", "s", "model", "liver", "excluded_small", np.nan, np.nan, np.nan, np.nan, 0.01, 0, 1),
            ("v4", "s", "model", "liver", "missed_partial", np.nan, np.nan, np.nan, np.nan, 0.5, 0, 1)]  # fmt: skip
    table = summarize(scores_frame(rows), ["system", "structure"], n_boot=10)
    dice = table[table["metric"] == "dice"].iloc[0]
    assert (dice["n"], dice["mean"]) == (2, 0.45)


def test_normal_paired_differences_get_a_paired_t_test():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.7, 0.8, 30)
    model = base + rng.normal(0.05, 0.01, 30)
    row = compare_paired(paired_scores(model, base)).query("metric == 'dice'").iloc[0]
    expected = pg.ttest(model, base, paired=True)
    p_column = "p_val" if "p_val" in expected.columns else "p-val"
    assert row["test"] == "t-test" and row["p_value"] == pytest.approx(float(expected[p_column].iloc[0]))


def test_skewed_paired_differences_get_a_wilcoxon_test():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.7, 0.8, 30)
    model = base + rng.exponential(0.02, 30) ** 3  # strongly skewed differences
    row = compare_paired(paired_scores(model, base)).query("metric == 'dice'").iloc[0]
    assert row["test"] == "wilcoxon" and row["normality_p"] <= 0.05


def three_structures():
    rng = np.random.default_rng(2)
    frames = []
    for k, shift in enumerate([0.05, 0.002, 0.0]):
        base = rng.uniform(0.6, 0.9, 20)
        frames.append(paired_scores(base + shift + rng.normal(0, 0.01, 20), base, structure=f"s{k}"))
    return pd.concat(frames)


def test_p_values_are_holm_corrected_across_structures_per_metric_on_request():
    table = compare_paired(three_structures(), correction="holm").query("metric == 'dice'").sort_values("structure")
    _, expected = pg.multicomp(table["p_value"].to_numpy(), method="holm")
    assert np.allclose(table["p_adjusted"], expected) and not np.allclose(table["p_adjusted"], table["p_value"])


def test_p_values_are_uncorrected_by_default_as_the_authors_ran_their_tests():
    table = compare_paired(three_structures()).query("metric == 'dice'")
    assert table["p_value"].notna().all() and (table["p_adjusted"] == table["p_value"]).all()


def test_an_unknown_correction_method_is_refused():
    with pytest.raises(ValueError, match="correction.*'tukey'"):
        compare_paired(three_structures(), correction="tukey")


def test_better_system_reads_lower_distances_as_better():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.7, 0.8, 25)
    table = compare_paired(paired_scores(base, base, hd_offset=-1.0 - rng.uniform(0, 0.1, 25)))
    hd = table.query("metric == 'hd'").iloc[0]
    assert (hd["better"], hd["delta"] < 0) == ("model", True)


def test_identical_systems_are_reported_identical_not_significant():
    base = np.linspace(0.5, 0.9, 10)
    row = compare_paired(paired_scores(base, base)).query("metric == 'dice'").iloc[0]
    assert (row["test"], row["p_value"], row["significant"]) == ("identical", 1.0, False)


def test_summary_rows_give_baseline_model_and_delta_on_mutual_pairs_and_model_on_all():
    frame = pd.concat([
        paired_scores([0.9, 0.8], [0.7, 0.6], structure="liver", source="a"),
        scores_frame([("v0", "a", "model", "brainstem", "scored", 0.5, 0.5, 1, 1, 1, 1, 1)]),
    ])  # fmt: skip
    table = summary_table(frame).set_index(["dataset", "scope", "system"])
    assert table.loc[("a", "mutual", "delta"), "dice"] == pytest.approx(0.2)
    assert table.loc[("all", "all", "model"), "dice"] == pytest.approx((0.9 + 0.8 + 0.5) / 3)


def test_report_writes_every_table_and_png_figure(tmp_path):
    rng = np.random.default_rng(4)
    frames = [paired_scores(rng.uniform(0.8, 0.95, 6), rng.uniform(0.7, 0.9, 6), structure=s, source=src)
              for s in ("liver", "spleen", "aorta") for src in ("a", "b")]  # fmt: skip
    table_path = tmp_path / "scores" / "all.tsv"
    write_scores(pd.concat(frames).to_dict("records"), table_path)
    outputs = {k: str(tmp_path / "report" / (k + (".png" if k in ("radar", "bars", "bubbles") else ".tsv")))
               for k in REPORT_OUTPUTS}  # fmt: skip
    build_report([str(table_path)], outputs, n_boot=50)
    pngs = [open(outputs[k], "rb").read(8) for k in ("radar", "bars", "bubbles")]
    comparison = pd.read_csv(outputs["comparison"], sep="\t")
    assert all(p.startswith(b"\x89PNG") for p in pngs) and len(comparison) == 3 * 4


def test_report_without_a_baseline_has_model_rows_only_and_an_empty_comparison(tmp_path):
    frame = paired_scores([0.9, 0.8, 0.85], [0.7, 0.6, 0.65])
    table_path = tmp_path / "model_only.tsv"
    write_scores(frame[frame["system"] == "model"].to_dict("records"), table_path)
    outputs = {k: str(tmp_path / (k + (".png" if k in ("radar", "bars", "bubbles") else ".tsv"))) for k in REPORT_OUTPUTS}
    build_report([str(table_path)], outputs, n_boot=20)
    summary = pd.read_csv(outputs["summary"], sep="\t")
    assert set(summary["system"]) == {"model"} and pd.read_csv(outputs["comparison"], sep="\t").empty
