"""Algorithm 1 on constructed score tables whose decision is known; every p-value cross-checked with scipy.

The samples are built from quantiles (normal or exponential), so their shape is exact rather than left to a seed:
normal-quantile samples pass Shapiro-Wilk, exponential-quantile samples fail it, equal spreads pass Levene.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cadsflow.ranking.algorithm import (
    NO_SCORES,
    PRIMARY_MEAN,
    PRIMARY_SIGNIFICANCE,
    SECONDARY_SIGNIFICANCE,
    TIE_BREAK_FLAVOR_ORDER,
    TIE_BREAK_SECONDARY_MEAN,
    RankingSettings,
    ambiguous_top,
    award_points,
    choose_omnibus,
    rank_structure,
    significance_test,
)

SETTINGS = RankingSettings()
N = 20
NORMAL = stats.norm.ppf((np.arange(1, N + 1) - 0.5) / N)  # mean 0, exact normal shape
SKEWED = stats.expon.ppf((np.arange(1, N + 1) - 0.5) / N)  # exponential shape: Shapiro-Wilk rejects it


def scores(dice: dict[str, np.ndarray], hd95: dict[str, np.ndarray] | None = None, split: str = "ID",
           prefix: str = "v") -> pd.DataFrame:
    """Long score rows: volume i of every flavor is the same validation volume."""
    rows = []
    for flavor, values in dice.items():
        for i, value in enumerate(values):
            h = hd95[flavor][i] if hd95 is not None else 2.0
            rows.append(dict(flavor=flavor, volume_id=f"{prefix}{i:03d}", split_kind=split, dice=value, hd95=h))
    return pd.DataFrame(rows)


def approx(p):
    return pytest.approx(p, rel=1e-6, abs=1e-12)


# -- independent references (scipy or textbook formulas) --------------------------------------------------------


def welch_anova_p(*groups) -> float:
    """Welch (1951) one-way ANOVA for unequal variances, by its formula."""
    k = len(groups)
    n = np.array([len(g) for g in groups], float)
    m = np.array([np.mean(g) for g in groups])
    w = n / np.array([np.var(g, ddof=1) for g in groups])
    grand = np.sum(w * m) / np.sum(w)
    a = np.sum(w * (m - grand) ** 2) / (k - 1)
    lam = np.sum((1 - w / np.sum(w)) ** 2 / (n - 1))
    f = a / (1 + 2 * (k - 2) / (k**2 - 1) * lam)
    return float(stats.f.sf(f, k - 1, (k**2 - 1) / (3 * lam)))


def games_howell_p(x, y, k: int) -> float:
    vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    t = abs(np.mean(x) - np.mean(y)) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    return float(stats.studentized_range.sf(t * math.sqrt(2), k, df))


def dunn_bonferroni_p(groups: dict[str, np.ndarray]) -> dict[tuple[str, str], float]:
    """Dunn (1964) z-test on pooled mean ranks with the tie correction, Bonferroni over all pairs."""
    names = list(groups)
    pooled = np.concatenate([groups[f] for f in names])
    ranks = stats.rankdata(pooled)
    big_n = len(pooled)
    _, ties = np.unique(pooled, return_counts=True)
    tie_term = np.sum(ties**3 - ties) / (12 * (big_n - 1))
    mean_rank, start = {}, 0
    for f in names:
        mean_rank[f] = ranks[start:start + len(groups[f])].mean()
        start += len(groups[f])
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    out = {}
    for a, b in pairs:
        var = (big_n * (big_n + 1) / 12 - tie_term) * (1 / len(groups[a]) + 1 / len(groups[b]))
        z = abs(mean_rank[a] - mean_rank[b]) / math.sqrt(var)
        out[(a, b)] = min(1.0, 2 * stats.norm.sf(z) * len(pairs))
    return out


def assert_assumption_tests_match_scipy(test, groups: dict[str, np.ndarray]) -> None:
    for flavor, values in groups.items():
        assert test.shapiro_p[flavor] == approx(stats.shapiro(values).pvalue)
    assert test.levene_p == approx(stats.levene(*groups.values()).pvalue)


# -- the scenarios of the issue ---------------------------------------------------------------------------------


def test_normal_equal_variances_use_anova_and_tukey_and_rank_by_significant_differences():
    dice = {"GT": 0.86 + 0.03 * NORMAL, "Pseudo": 0.83 + 0.033 * NORMAL, "Shape": 0.80 + 0.027 * NORMAL}
    d = rank_structure(scores(dice), SETTINGS)
    t = d.primary
    assert (t.omnibus, t.posthoc) == ("anova", "tukey")
    assert_assumption_tests_match_scipy(t, dice)
    assert t.omnibus_p == approx(stats.f_oneway(*dice.values()).pvalue)
    tukey = stats.tukey_hsd(*dice.values()).pvalue
    assert t.pair_p == {("GT", "Pseudo"): approx(tukey[0, 1]), ("GT", "Shape"): approx(tukey[0, 2]),
                        ("Pseudo", "Shape"): approx(tukey[1, 2])}
    assert set(t.wins) == {("GT", "Pseudo"), ("GT", "Shape"), ("Pseudo", "Shape")}
    assert d.primary_points == {"GT": 6, "Pseudo": 3, "Shape": 0}
    assert d.order == ("GT", "Pseudo", "Shape")
    assert (d.secondary, d.decided_by, d.secondary_decided) == (None, PRIMARY_SIGNIFICANCE, False)


def test_unequal_variances_use_welch_anova_and_games_howell():
    dice = {"GT": 0.90 + 0.01 * NORMAL, "Pseudo": 0.84 + 0.06 * NORMAL, "Shape": 0.78 + 0.01 * NORMAL}
    d = rank_structure(scores(dice), SETTINGS)
    t = d.primary
    assert stats.levene(*dice.values()).pvalue < 0.05  # the construction: unequal variances
    assert (t.omnibus, t.posthoc) == ("welch_anova", "games_howell")
    assert_assumption_tests_match_scipy(t, dice)
    assert t.omnibus_p == approx(welch_anova_p(*dice.values()))
    assert t.pair_p == {(a, b): approx(games_howell_p(dice[a], dice[b], 3))
                        for a, b in [("GT", "Pseudo"), ("GT", "Shape"), ("Pseudo", "Shape")]}
    assert d.order == ("GT", "Pseudo", "Shape")
    assert d.decided_by == PRIMARY_SIGNIFICANCE


def test_non_normal_scores_use_kruskal_wallis_and_dunn():
    dice = {"GT": 0.95 - 0.02 * SKEWED, "Pseudo": 0.90 - 0.02 * SKEWED, "Shape": 0.85 - 0.02 * SKEWED}
    d = rank_structure(scores(dice), SETTINGS)
    t = d.primary
    assert all(stats.shapiro(v).pvalue < 0.05 for v in dice.values())  # the construction: not normal
    assert (t.omnibus, t.posthoc) == ("kruskal", "dunn")
    assert_assumption_tests_match_scipy(t, dice)
    assert t.omnibus_p == approx(stats.kruskal(*dice.values()).pvalue)
    assert t.pair_p == {pair: approx(p) for pair, p in dunn_bonferroni_p(dice).items()}
    assert d.order == ("GT", "Pseudo", "Shape")
    assert d.decided_by == PRIMARY_SIGNIFICANCE


def test_no_significant_difference_ranks_by_mean_dice_and_consults_hd95():
    dice = {"GT": 0.80 + 0.1 * NORMAL, "Pseudo": 0.81 + 0.1 * NORMAL[::-1], "Shape": 0.79 + 0.1 * NORMAL}
    hd95 = {"GT": 3.0 + NORMAL, "Pseudo": 2.9 + NORMAL, "Shape": 3.1 + NORMAL}
    d = rank_structure(scores(dice, hd95), SETTINGS)
    assert d.primary.omnibus == "anova"
    assert d.primary.omnibus_p == approx(stats.f_oneway(*dice.values()).pvalue)
    assert d.primary.omnibus_p > 0.05 and d.primary.posthoc == "none" and d.primary.wins == ()
    assert d.primary_points == {"GT": 1, "Pseudo": 2, "Shape": 0}  # mean ranks
    assert d.secondary.flavors == ("GT", "Pseudo", "Shape")  # indistinguishable on Dice: HD95 looks at all
    assert d.secondary.omnibus_p == approx(stats.f_oneway(*hd95.values()).pvalue)
    assert d.order == ("Pseudo", "GT", "Shape")
    assert (d.decided_by, d.secondary_decided) == (PRIMARY_MEAN, False)


def test_a_tie_on_dice_is_broken_by_significantly_lower_hd95():
    dice = {"GT": 0.90 + 0.02 * NORMAL, "Pseudo": 0.80 + 0.02 * NORMAL, "Shape": 0.90 + 0.02 * NORMAL}
    hd95 = {"GT": 3.0 + 0.3 * NORMAL, "Pseudo": 9.0 + 0.3 * NORMAL, "Shape": 2.0 + 0.3 * NORMAL}
    d = rank_structure(scores(dice, hd95), SETTINGS)
    assert set(d.primary.wins) == {("GT", "Pseudo"), ("Shape", "Pseudo")}
    assert d.primary_points == {"GT": 6, "Pseudo": 0, "Shape": 6}
    s = d.secondary
    assert s.flavors == ("GT", "Shape")  # only the tied top
    assert (s.omnibus, s.posthoc) == ("anova", "tukey")
    assert s.omnibus_p == approx(stats.f_oneway(hd95["GT"], hd95["Shape"]).pvalue)
    assert s.pair_p == {("GT", "Shape"): approx(stats.tukey_hsd(hd95["GT"], hd95["Shape"]).pvalue[0, 1])}
    assert s.wins == (("Shape", "GT"),)  # lower HD95 is better
    assert d.total_points == {"GT": 6, "Pseudo": 0, "Shape": 8}
    assert d.order == ("Shape", "GT", "Pseudo")
    assert (d.decided_by, d.secondary_decided) == (SECONDARY_SIGNIFICANCE, True)


def test_ood_scores_are_used_when_the_structure_has_them():
    id_dice = {"GT": 0.90 + 0.02 * NORMAL, "Pseudo": 0.85 + 0.02 * NORMAL, "Shape": 0.80 + 0.02 * NORMAL}
    ten = NORMAL[:10]
    ood_dice = {"GT": 0.70 + 0.02 * ten, "Pseudo": 0.75 + 0.02 * ten, "Shape": 0.80 + 0.02 * ten}
    both = pd.concat([scores(id_dice, split="ID", prefix="id"), scores(ood_dice, split="OOD", prefix="ood")])
    d = rank_structure(both, SETTINGS)
    assert d.split_kind == "OOD"
    assert d.n == {"GT": 10, "Pseudo": 10, "Shape": 10}
    assert d.primary.omnibus_p == approx(stats.f_oneway(*ood_dice.values()).pvalue)
    assert d.order == ("Shape", "Pseudo", "GT")


def test_id_scores_are_used_when_the_structure_has_no_ood_scores():
    id_dice = {"GT": 0.90 + 0.02 * NORMAL, "Pseudo": 0.85 + 0.02 * NORMAL, "Shape": 0.80 + 0.02 * NORMAL}
    d = rank_structure(scores(id_dice, split="ID"), SETTINGS)
    assert d.split_kind == "ID"
    assert d.n == {"GT": N, "Pseudo": N, "Shape": N}
    assert d.order == ("GT", "Pseudo", "Shape")


# -- the points rule and the ambiguity rule ---------------------------------------------------------------------


def test_points_count_the_flavors_one_is_not_significantly_worse_than():
    means = {"GT": 0.9, "Pseudo": 0.85, "Shape": 0.8}
    assert award_points(means, [("GT", "Shape")], higher_is_better=True) == {"GT": 6, "Pseudo": 6, "Shape": 3}


def test_mean_rank_points_give_equal_means_equal_points_and_respect_lower_is_better():
    assert award_points({"GT": 0.8, "Pseudo": 0.8, "Shape": 0.7}, [], True) == {"GT": 2, "Pseudo": 2, "Shape": 0}
    assert award_points({"GT": 2.0, "Pseudo": 3.0}, [], higher_is_better=False) == {"GT": 1, "Pseudo": 0}


def test_top_is_ambiguous_when_shared_or_when_nothing_was_significant():
    assert ambiguous_top({"GT": 6, "Pseudo": 6, "Shape": 3}, [("GT", "Shape")]) == ("GT", "Pseudo")
    assert ambiguous_top({"GT": 6, "Pseudo": 3, "Shape": 0}, [("GT", "Pseudo")]) == ()
    assert ambiguous_top({"GT": 2, "Pseudo": 1, "Shape": 0}, []) == ("GT", "Pseudo", "Shape")


def test_significant_hd95_outranks_a_non_significant_dice_mean_order():
    dice = {"GT": 0.82 + 0.1 * NORMAL, "Pseudo": 0.81 + 0.1 * NORMAL[::-1], "Shape": 0.80 + 0.1 * NORMAL}
    hd95 = {"GT": 6.0 + 0.5 * NORMAL, "Pseudo": 6.0 + 0.5 * NORMAL[::-1], "Shape": 2.0 + 0.5 * NORMAL}
    d = rank_structure(scores(dice, hd95), SETTINGS)
    assert d.primary.wins == () and d.primary_points == {"GT": 2, "Pseudo": 1, "Shape": 0}
    assert set(d.secondary.wins) == {("Shape", "GT"), ("Shape", "Pseudo")}
    assert d.order == ("Shape", "GT", "Pseudo")
    assert (d.decided_by, d.secondary_decided) == (SECONDARY_SIGNIFICANCE, True)


def test_non_significant_hd95_means_break_ties_only_unless_the_literal_reading_is_configured():
    dice = {"GT": 0.82 + 0.1 * NORMAL, "Pseudo": 0.81 + 0.1 * NORMAL[::-1], "Shape": 0.80 + 0.1 * NORMAL}
    hd95 = {"GT": 3.4 + NORMAL, "Pseudo": 3.0 + NORMAL[::-1], "Shape": 3.2 + NORMAL}
    table = scores(dice, hd95)
    default = rank_structure(table, SETTINGS)
    literal = rank_structure(table, RankingSettings(secondary_mean_rank_points=1))
    assert default.secondary.wins == () and default.secondary.omnibus_p > 0.05
    assert default.total_points == default.primary_points == {"GT": 2, "Pseudo": 1, "Shape": 0}
    assert default.order == ("GT", "Pseudo", "Shape") and default.decided_by == PRIMARY_MEAN
    assert literal.total_points == {"GT": 2, "Pseudo": 3, "Shape": 1}  # + HD95 mean ranks 0, 2, 1
    assert literal.order == ("Pseudo", "GT", "Shape") and literal.secondary_decided


def test_equal_dice_and_no_significant_hd95_difference_are_settled_by_mean_hd95():
    same = 0.8 + 0.05 * NORMAL
    hd95 = {"GT": 3.2 + NORMAL, "Pseudo": 3.0 + NORMAL[::-1], "Shape": 3.4 + NORMAL}
    d = rank_structure(scores({"GT": same, "Pseudo": same, "Shape": same}, hd95), SETTINGS)
    assert d.secondary.wins == ()
    assert d.order == ("Pseudo", "GT", "Shape")
    assert (d.decided_by, d.secondary_decided) == (TIE_BREAK_SECONDARY_MEAN, True)


@pytest.mark.parametrize("normal, equal, algorithm1, normality_first", [
    (True, True, "anova", "anova"),
    (True, False, "welch_anova", "welch_anova"),
    (False, True, "kruskal", "kruskal"),
    (False, False, "welch_anova", "kruskal"),  # the two rules differ only here
])
def test_omnibus_choice_follows_algorithm1_or_the_authors_normality_first_rule(normal, equal, algorithm1,
                                                                               normality_first):
    assert choose_omnibus(normal, equal, "algorithm1") == algorithm1
    assert choose_omnibus(normal, equal, "normality_first") == normality_first


def test_non_normal_unequal_variances_go_to_welch_by_algorithm1_and_to_kruskal_by_normality_first():
    values = {"GT": 0.95 - 0.01 * SKEWED, "Pseudo": 0.85 - 0.08 * SKEWED, "Shape": 0.80 - 0.01 * SKEWED}
    paper = significance_test(values, "dice", SETTINGS)
    authors = significance_test(values, "dice", RankingSettings(test_choice="normality_first"))
    assert (paper.omnibus, paper.posthoc) == ("welch_anova", "games_howell")
    assert paper.omnibus_p == approx(welch_anova_p(*values.values()))
    assert (authors.omnibus, authors.posthoc) == ("kruskal", "dunn")
    assert authors.omnibus_p == approx(stats.kruskal(*values.values()).pvalue)


# -- degenerate inputs: documented decisions, not crashes ------------------------------------------------------


def test_a_flavor_without_scores_is_ranked_last_and_the_others_are_tested():
    dice = {"GT": 0.90 + 0.02 * NORMAL, "Pseudo": 0.85 + 0.02 * NORMAL}
    d = rank_structure(scores(dice), SETTINGS)
    assert d.n == {"GT": N, "Pseudo": N, "Shape": 0}
    assert d.primary.flavors == ("GT", "Pseudo")
    assert d.primary.omnibus_p == approx(stats.f_oneway(*dice.values()).pvalue)
    assert d.order == ("GT", "Pseudo", "Shape")
    assert "Shape" in d.note


def test_a_constant_flavor_is_compared_with_the_rank_based_test():
    dice = {"GT": 0.90 + 0.02 * NORMAL, "Pseudo": np.full(N, 0.5), "Shape": 0.80 + 0.02 * NORMAL}
    t = rank_structure(scores(dice), SETTINGS).primary
    assert (t.omnibus, t.posthoc) == ("kruskal", "dunn")
    assert math.isnan(t.shapiro_p["Pseudo"]) and "zero variance in Pseudo" in t.note
    assert t.omnibus_p == approx(stats.kruskal(*dice.values()).pvalue)
    assert t.pair_p == {pair: approx(p) for pair, p in dunn_bonferroni_p(dice).items()}


def test_identical_values_everywhere_are_not_tested_and_fall_through_to_hd95():
    dice = {f: np.full(N, 1.0) for f in ("GT", "Pseudo", "Shape")}
    hd95 = {"GT": np.full(N, 3.0), "Pseudo": np.full(N, 1.5), "Shape": np.full(N, 3.0)}
    d = rank_structure(scores(dice, hd95), SETTINGS)
    assert d.primary.omnibus == "none" and d.primary.note == "all values identical"
    assert d.primary_points == {"GT": 2, "Pseudo": 2, "Shape": 2}
    assert d.secondary.omnibus == "kruskal"  # constant within each flavor, different between them
    assert d.order[0] == "Pseudo"


def test_fewer_than_three_scores_per_flavor_are_ranked_by_means_without_tests():
    dice = {"GT": np.array([0.7, 0.8]), "Pseudo": np.array([0.9, 0.95]), "Shape": np.array([0.6, 0.65])}
    d = rank_structure(scores(dice), SETTINGS)
    assert d.primary.omnibus == "none" and d.primary.note == "n < 3: mean ranks"
    assert d.order == ("Pseudo", "GT", "Shape")


def test_a_structure_without_finite_scores_keeps_the_configured_order():
    dice = {f: np.full(4, np.nan) for f in ("GT", "Pseudo", "Shape")}
    d = rank_structure(scores(dice), SETTINGS)
    assert d.order == ("GT", "Pseudo", "Shape") and d.decided_by == NO_SCORES and d.split_kind == ""


def test_equal_points_and_means_fall_back_to_the_configured_flavor_order():
    same = 0.8 + 0.05 * NORMAL
    d = rank_structure(scores({"Shape": same, "Pseudo": same, "GT": same}), SETTINGS)
    assert d.order == ("GT", "Pseudo", "Shape") and d.decided_by == TIE_BREAK_FLAVOR_ORDER


def test_only_volumes_every_flavor_was_scored_on_are_compared():
    dice = {"GT": 0.90 + 0.02 * NORMAL, "Pseudo": 0.85 + 0.02 * NORMAL, "Shape": 0.80 + 0.02 * NORMAL}
    table = scores(dice)
    table = table[~((table["flavor"] == "Shape") & table["volume_id"].isin(["v000", "v001"]))]
    d = rank_structure(table, SETTINGS)
    assert d.n == {"GT": N - 2, "Pseudo": N - 2, "Shape": N - 2}
    kept = {f: v[2:] for f, v in dice.items()}
    assert d.primary.omnibus_p == approx(stats.f_oneway(*kept.values()).pvalue)
