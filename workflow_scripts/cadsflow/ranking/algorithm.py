"""Algorithm 1 of the CADS paper: per structure, a priority order of the three model flavors (Online Methods 2.4).

For one structure the steps are:

1. Scores: OOD validation scores when the structure has any, else ID scores (Algorithm 1, GETMEANSCORE). With
   ``align_volumes`` only the volumes every scored flavor was scored on are kept (complete cases), as the
   authors' comparison code does (murong-xu/CADS ``table_plots/utils/utils.py``, ``statistical_test_upgrade``:
   ``combined_data.dropna(subset=...)``).
2. Significance on Dice (TESTSIGNIFICANCE): Shapiro-Wilk per flavor ("normal" when every flavor has p >= alpha,
   as in the authors' code) and Levene across flavors (scipy's default centre, the median) choose the omnibus
   test; only when the omnibus p < alpha is the post-hoc test run, and its pairs with p < alpha are the
   significant differences (the authors' code gates the post-hoc test the same way).

   - Test choice ``algorithm1`` (default, the paper's Algorithm 1 lines 8-14): normal and equal variances ->
     ANOVA; else unequal variances -> Welch's ANOVA; else (not normal, equal variances) -> Kruskal-Wallis.
   - Test choice ``normality_first`` (the authors' ``statistical_test_upgrade``): normal -> ANOVA or Welch by
     Levene; not normal -> Kruskal-Wallis whatever the variances.
   - Post-hoc: Tukey HSD after ANOVA; Games-Howell after Welch's ANOVA (Tukey assumes equal variances, the very
     thing Levene rejected when Welch was chosen; the authors' code ran Tukey there); Dunn after Kruskal-Wallis
     with Bonferroni adjustment (the authors' ``posthoc_dunn(..., p_adjust='bonferroni')``).
3. Points (``award_points``, the one rule; the paper leaves it open and the authors' repository has no code for
   it): from the significant pairs when there are any, else from the mean ranks.
4. Ambiguous top (``ambiguous_top``): when several flavors share the most points, or when Dice showed no
   significant difference at all (then every flavor's Dice is statistically indistinguishable from the best,
   the paper's "statistically indistinguishable top performance"), the same test and points rule runs on HD95
   (lower is better) over those flavors only, and its points are added to theirs (Algorithm 1 lines 32-42).
   HD95 mean ranks are worth ``secondary_mean_rank_points`` per place: 0 by default, so that HD95 changes the
   order through significant differences only and its means are left to the tie-break; 1 is the literal
   reading of Algorithm 1 line 40 (HD95 mean-rank points added on Dice's scale). On simulated flavors of known
   quality (200 structures, n = 20) the literal reading picked the truly best flavor in 63.5% of structures
   where only Dice differed (0.02) and HD95 carried no information, against 79.5% with 0 (and 81.5% for the
   plain highest mean Dice); where only HD95 differed (30%), 87.0% against 86.0% (29.5% for mean Dice).
5. Priority: flavors by total points; remaining ties by mean Dice (higher first), then mean HD95 (lower first),
   then the configured flavor order. Flavors without scores come last, in the configured order.

Degenerate inputs are decisions, not crashes (each is named in the decision's ``note``):
- fewer than two flavors with scores: no test; a single scored flavor is first;
- any flavor with fewer than ``min_n`` scores (3: Shapiro-Wilk's minimum): no test, mean ranks decide;
- every value identical across the flavors: no test (nothing to rank), the tie goes on to HD95 / the tie-breaks;
- a flavor whose values are all equal (zero variance): Shapiro-Wilk and Welch's weights are undefined for it,
  so the rank-based Kruskal-Wallis + Dunn is used, which handles ties;
- a test that returns NaN (e.g. a degenerate variance): read as not significant.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cadsflow.evaluation.statistics import HIGHER_IS_BETTER

ALPHA = 0.05  # Online Methods 2.4, Step-2: significance threshold p < 0.05
MIN_N = 3  # Shapiro-Wilk needs at least three values
FLAVORS = ("GT", "Pseudo", "Shape")  # Online Methods 2.3; also the final tie-break order
PREFERRED_SPLIT, FALLBACK_SPLIT = "OOD", "ID"  # Online Methods 2.4, Step-1: OOD when available, else ID
TEST_CHOICES = ("algorithm1", "normality_first")
OMNIBUS_TESTS = ("anova", "welch_anova", "kruskal")
POSTHOC_TESTS = ("tukey", "games_howell", "dunn")
DEFAULT_POSTHOC = {"anova": "tukey", "welch_anova": "games_howell", "kruskal": "dunn"}
DUNN_P_ADJUST = "bonferroni"  # murong-xu/CADS table_plots/utils/utils.py: posthoc_dunn(..., p_adjust='bonferroni')
NO_TEST = "none"

# decided_by values: what settled the first flavor
NO_SCORES = "no_scores"
ONLY_SCORED = "only_scored_flavor"
PRIMARY_SIGNIFICANCE, PRIMARY_MEAN = "primary_significance", "primary_mean_rank"
SECONDARY_SIGNIFICANCE, SECONDARY_MEAN = "secondary_significance", "secondary_mean_rank"
TIE_BREAK_PRIMARY_MEAN = "tie_break_primary_mean"
TIE_BREAK_SECONDARY_MEAN = "tie_break_secondary_mean"
TIE_BREAK_FLAVOR_ORDER = "tie_break_flavor_order"
SECONDARY_MEAN_RANK_POINTS = 0  # HD95 means break ties only (module docstring, step 4); 1: Algorithm 1 literally


@dataclass(frozen=True)
class RankingSettings:
    """The ranking's parameters (config/flavors.yaml, section ``ranking``)."""

    alpha: float = ALPHA
    primary_metric: str = "dice"
    secondary_metric: str = "hd95"
    flavors: tuple[str, ...] = FLAVORS
    preferred_split: str = PREFERRED_SPLIT
    fallback_split: str = FALLBACK_SPLIT
    test_choice: str = "algorithm1"
    posthoc: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_POSTHOC))
    dunn_p_adjust: str = DUNN_P_ADJUST
    min_n: int = MIN_N
    align_volumes: bool = True
    secondary_mean_rank_points: int = SECONDARY_MEAN_RANK_POINTS

    def __post_init__(self):
        problems = []
        if not 0 < self.alpha < 1:
            problems.append(f"alpha={self.alpha} (expected 0 < alpha < 1)")
        for name in ("primary_metric", "secondary_metric"):
            if getattr(self, name) not in HIGHER_IS_BETTER:
                problems.append(f"{name}={getattr(self, name)!r} (expected one of {sorted(HIGHER_IS_BETTER)})")
        if self.test_choice not in TEST_CHOICES:
            problems.append(f"test_choice={self.test_choice!r} (expected one of {TEST_CHOICES})")
        if set(self.posthoc) != set(OMNIBUS_TESTS) or not set(self.posthoc.values()) <= set(POSTHOC_TESTS):
            problems.append(f"posthoc={dict(self.posthoc)!r} (expected {{{', '.join(OMNIBUS_TESTS)}}} -> "
                            f"one of {POSTHOC_TESTS})")
        if len(set(self.flavors)) != len(self.flavors) or len(self.flavors) < 2:
            problems.append(f"flavors={self.flavors!r} (expected at least two distinct names)")
        if self.secondary_mean_rank_points not in (0, 1):
            problems.append(f"secondary_mean_rank_points={self.secondary_mean_rank_points!r} (expected 0 or 1)")
        if self.min_n < MIN_N:
            problems.append(f"min_n={self.min_n} (Shapiro-Wilk needs at least {MIN_N})")
        if problems:
            raise ValueError("ranking settings: " + "; ".join(problems))


@dataclass(frozen=True)
class SignificanceTest:
    """TESTSIGNIFICANCE of Algorithm 1 for one metric over some flavors, with everything it computed."""

    metric: str
    flavors: tuple[str, ...]
    n: dict[str, int]
    means: dict[str, float]
    shapiro_p: dict[str, float]  # NaN where not computed
    levene_p: float
    omnibus: str  # anova | welch_anova | kruskal | none
    omnibus_p: float
    posthoc: str  # tukey | games_howell | dunn | none
    pair_p: dict[tuple[str, str], float]  # post-hoc p per pair (names in the flavors' order)
    wins: tuple[tuple[str, str], ...]  # (better, worse) for each pair with post-hoc p < alpha
    note: str = ""


@dataclass(frozen=True)
class Decision:
    """The priority order of one structure and the trail that led to it."""

    group: str
    structure: str
    order: tuple[str, ...]
    split_kind: str  # the validation split whose scores were used (OOD or ID), "" without scores
    n: dict[str, int]
    mean_primary: dict[str, float]
    mean_secondary: dict[str, float]
    primary: SignificanceTest | None
    primary_points: dict[str, int]
    secondary: SignificanceTest | None  # None when the top was not ambiguous
    total_points: dict[str, int]
    decided_by: str
    secondary_decided: bool
    note: str = ""


def rank_structure(scores: pd.DataFrame, settings: RankingSettings = RankingSettings(), group: str = "",
                   structure: str = "") -> Decision:
    """Algorithm 1 for one structure. `scores`: rows flavor, volume_id, split_kind, <primary>, <secondary>."""
    flavors = settings.flavors
    split = _split_to_use(scores, settings)
    rows = scores[scores["split_kind"] == split] if split else scores.iloc[0:0]
    primary_values = _values_per_flavor(rows, settings.primary_metric, flavors, settings.align_volumes)
    secondary_values = _values_per_flavor(rows, settings.secondary_metric, flavors, settings.align_volumes)
    n = {f: len(primary_values.get(f, ())) for f in flavors}
    mean_primary = {f: _mean(primary_values.get(f)) for f in flavors}
    mean_secondary = {f: _mean(secondary_values.get(f)) for f in flavors}
    scored = [f for f in flavors if n[f] > 0]
    unscored = [f for f in flavors if n[f] == 0]
    note = f"no scores for {', '.join(unscored)}: ranked last" if unscored and scored else ""

    if len(scored) < 2:
        order = tuple(scored) + tuple(unscored)
        zero = {f: 0 for f in flavors}
        decided_by = ONLY_SCORED if scored else NO_SCORES
        return Decision(group, structure, order, split or "", n, mean_primary, mean_secondary, None, zero, None,
                        zero, decided_by, False, note if scored else "no scores: configured flavor order")

    primary = significance_test({f: primary_values[f] for f in scored}, settings.primary_metric, settings)
    primary_points = award_points(primary.means, primary.wins, HIGHER_IS_BETTER[settings.primary_metric])
    relevant = ambiguous_top(primary_points, primary.wins)
    total = dict(primary_points)
    secondary = None
    if relevant:
        secondary = significance_test({f: secondary_values.get(f, np.array([])) for f in relevant},
                                      settings.secondary_metric, settings)
        secondary_points = award_points(secondary.means, secondary.wins, HIGHER_IS_BETTER[settings.secondary_metric],
                                        settings.secondary_mean_rank_points)
        for f, p in secondary_points.items():
            total[f] += p

    order = tuple(sorted(scored, key=lambda f: _priority_key(f, total, mean_primary, mean_secondary, settings)))
    decided_by, secondary_decided = _what_decided(order, primary, primary_points, secondary, total, mean_primary,
                                                  mean_secondary)
    points = {f: primary_points.get(f, 0) for f in flavors}
    totals = {f: total.get(f, 0) for f in flavors}
    return Decision(group, structure, order + tuple(unscored), split, n, mean_primary, mean_secondary, primary,
                    points, secondary, totals, decided_by, secondary_decided, note)


def award_points(means: Mapping[str, float], wins: Sequence[tuple[str, str]], higher_is_better: bool,
                 mean_rank_points: int = 1) -> dict[str, int]:
    """Ranking points of the flavors in `means` for one metric: THE points rule of this implementation.

    - With significant pairwise differences (`wins`, (better, worse) pairs): a flavor earns k points (k = number
      of flavors compared) for every other flavor it is NOT significantly worse than. The flavors with the most
      points are then exactly those no other flavor beats significantly, so two flavors that share the top are
      statistically indistinguishable from each other.
    - Without any (Algorithm 1: "based on mean ranks"): a flavor earns `mean_rank_points` (1 for Dice; the
      setting secondary_mean_rank_points, 0 or 1, for HD95) for every other flavor whose mean is not better than
      its own; equal means earn equal points.
    A significant difference (k points) is worth more than the whole mean-rank spread (at most k - 1 points). So
    when the secondary metric's points are added for an ambiguous top (Algorithm 1 line 42), a significant HD95
    difference outranks a Dice order that was only a non-significant mean order.
    """
    flavors = list(means)
    if wins:
        k = len(flavors)
        beaten = set(wins)
        return {f: k * sum(1 for g in flavors if g != f and (g, f) not in beaten) for f in flavors}
    return {f: mean_rank_points * sum(1 for g in flavors if g != f and not _better(means[g], means[f],
                                                                                  higher_is_better))
            for f in flavors}


def ambiguous_top(points: Mapping[str, int], wins: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The flavors the secondary metric must separate, or () when the top is clear (Algorithm 1 lines 32-33).

    Ambiguous: several flavors share the most points, or the primary metric had no significant difference at all
    (then all flavors are statistically indistinguishable, whatever their mean order).
    """
    if not wins:
        return tuple(points) if len(points) > 1 else ()
    best = max(points.values())
    top = tuple(f for f, p in points.items() if p == best)
    return top if len(top) > 1 else ()


def significance_test(values: Mapping[str, np.ndarray], metric: str,
                      settings: RankingSettings = RankingSettings()) -> SignificanceTest:
    """Algorithm 1's TESTSIGNIFICANCE: the omnibus test Shapiro-Wilk and Levene choose, then its post-hoc test."""
    flavors = tuple(values)
    arrays = {f: np.asarray(values[f], dtype=float) for f in flavors}
    n = {f: len(a) for f, a in arrays.items()}
    means = {f: _mean(a) for f, a in arrays.items()}
    nan_shapiro = {f: math.nan for f in flavors}

    def untested(note: str) -> SignificanceTest:
        return SignificanceTest(metric, flavors, n, means, nan_shapiro, math.nan, NO_TEST, math.nan, NO_TEST, {}, (),
                                note)

    scored = [f for f in flavors if n[f] > 0]
    if len(scored) < 2:
        return untested("fewer than two flavors with scores")
    if len(scored) < len(flavors):
        return untested(f"no {metric} scores for {', '.join(f for f in flavors if n[f] == 0)}")
    if min(n.values()) < settings.min_n:
        return untested(f"n < {settings.min_n}: mean ranks")
    pooled = np.concatenate(list(arrays.values()))
    if np.all(pooled == pooled[0]):
        return untested("all values identical")

    import pingouin as pg

    data = pd.DataFrame({"flavor": np.repeat(flavors, [n[f] for f in flavors]), "value": pooled})
    constant = [f for f in flavors if np.all(arrays[f] == arrays[f][0])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        shapiro = {f: math.nan if f in constant else float(_column(pg.normality(arrays[f], method="shapiro"), "pval"))
                   for f in flavors}
        levene = float(_column(pg.homoscedasticity(data, dv="value", group="flavor", method="levene"), "pval"))
        note = ""
        if constant:
            omnibus = "kruskal"
            note = f"zero variance in {', '.join(constant)}: rank-based test"
        else:
            omnibus = choose_omnibus(all(p >= settings.alpha for p in shapiro.values()), levene >= settings.alpha,
                                     settings.test_choice)
        omnibus_p = _nan_to_one(_run_omnibus(pg, data, omnibus))
        if not omnibus_p < settings.alpha:
            return SignificanceTest(metric, flavors, n, means, shapiro, levene, omnibus, omnibus_p, NO_TEST, {}, (),
                                    _join(note, "omnibus not significant"))
        posthoc = settings.posthoc[omnibus]
        pair_p = _run_posthoc(data, flavors, posthoc, settings.dunn_p_adjust)
    location = _mean_ranks(arrays) if posthoc == "dunn" else means
    wins = tuple(_winner_first(a, b, location, HIGHER_IS_BETTER[metric])
                 for (a, b), p in pair_p.items() if p < settings.alpha and location[a] != location[b])
    return SignificanceTest(metric, flavors, n, means, shapiro, levene, omnibus, omnibus_p, posthoc, pair_p, wins,
                            note)


def choose_omnibus(normal: bool, equal_variances: bool, test_choice: str = "algorithm1") -> str:
    """The omnibus test for the assumption checks' outcome (module docstring: the two test-choice rules)."""
    if test_choice == "algorithm1":
        if normal and equal_variances:
            return "anova"
        return "welch_anova" if not equal_variances else "kruskal"
    if test_choice == "normality_first":
        if not normal:
            return "kruskal"
        return "anova" if equal_variances else "welch_anova"
    raise ValueError(f"test_choice={test_choice!r}: expected one of {TEST_CHOICES}")


# -- helpers ---------------------------------------------------------------------------------------------------


def _split_to_use(scores: pd.DataFrame, settings: RankingSettings) -> str | None:
    for split in (settings.preferred_split, settings.fallback_split):
        rows = scores[scores["split_kind"] == split]
        if np.isfinite(rows[settings.primary_metric].to_numpy(float)).any():
            return split
    return None


def _values_per_flavor(rows: pd.DataFrame, metric: str, flavors: Sequence[str], align: bool) -> dict[str, np.ndarray]:
    """Finite values per flavor (sorted by volume id); with `align`, only volumes all scored flavors share."""
    finite = rows[np.isfinite(rows[metric].to_numpy(float))]
    per_flavor = {f: finite[finite["flavor"] == f].set_index("volume_id")[metric] for f in flavors}
    per_flavor = {f: s for f, s in per_flavor.items() if len(s)}
    if align and per_flavor:
        common = sorted(set.intersection(*(set(s.index) for s in per_flavor.values())))
        return {f: s.loc[common].to_numpy(float) for f, s in per_flavor.items()}
    return {f: s.sort_index().to_numpy(float) for f, s in per_flavor.items()}


def _run_omnibus(pg, data: pd.DataFrame, omnibus: str) -> float:
    if omnibus == "anova":
        return float(_column(pg.anova(data, dv="value", between="flavor"), "p_unc"))
    if omnibus == "welch_anova":
        return float(_column(pg.welch_anova(data, dv="value", between="flavor"), "p_unc"))
    return float(_column(pg.kruskal(data, dv="value", between="flavor"), "p_unc"))


def _run_posthoc(data: pd.DataFrame, flavors: Sequence[str], posthoc: str,
                 p_adjust: str) -> dict[tuple[str, str], float]:
    """Post-hoc p per pair, keyed by the pair in the flavors' order."""
    import pingouin as pg

    order = {f: i for i, f in enumerate(flavors)}
    pairs = {}
    if posthoc == "dunn":
        import scikit_posthocs as sp

        matrix = sp.posthoc_dunn(data, val_col="value", group_col="flavor", p_adjust=p_adjust)
        for i, a in enumerate(flavors):
            for b in flavors[i + 1:]:
                pairs[(a, b)] = _nan_to_one(float(matrix.loc[a, b]))
        return pairs
    table = (pg.pairwise_tukey(data, dv="value", between="flavor") if posthoc == "tukey"
             else pg.pairwise_gameshowell(data, dv="value", between="flavor"))
    p_column = _column_name(table, "p_tukey" if posthoc == "tukey" else "pval")
    for _, row in table.iterrows():
        a, b = sorted((row["A"], row["B"]), key=order.__getitem__)
        pairs[(a, b)] = _nan_to_one(float(row[p_column]))
    return dict(sorted(pairs.items(), key=lambda item: (order[item[0][0]], order[item[0][1]])))


def _mean_ranks(arrays: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean rank of each flavor's values in the pooled ranking (Dunn's location; ties get average ranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate(list(arrays.values())))
    out, start = {}, 0
    for f, a in arrays.items():
        out[f] = float(ranks[start:start + len(a)].mean())
        start += len(a)
    return out


def _winner_first(a: str, b: str, location: Mapping[str, float], higher_is_better: bool) -> tuple[str, str]:
    return (a, b) if _better(location[a], location[b], higher_is_better) else (b, a)


def _better(x: float, y: float, higher_is_better: bool) -> bool:
    """x strictly better than y; a missing value (NaN) is worse than any value."""
    if math.isnan(x):
        return False
    if math.isnan(y):
        return True
    return x > y if higher_is_better else x < y


def _priority_key(f: str, total, mean_primary, mean_secondary, settings: RankingSettings):
    sign_p = -1.0 if HIGHER_IS_BETTER[settings.primary_metric] else 1.0
    sign_s = -1.0 if HIGHER_IS_BETTER[settings.secondary_metric] else 1.0
    p, s = mean_primary[f], mean_secondary[f]
    return (-total[f], math.inf if math.isnan(p) else sign_p * p, math.inf if math.isnan(s) else sign_s * s,
            settings.flavors.index(f))


def _what_decided(order: Sequence[str], primary: SignificanceTest, primary_points, secondary, total,
                  mean_primary, mean_secondary) -> tuple[str, bool]:
    """Which step settled the first flavor, and whether the secondary metric changed or settled it."""
    first = order[0]
    best_total = max(total.values())
    tied = [f for f, p in total.items() if p == best_total]
    if len(tied) > 1:
        if any(mean_primary[f] != mean_primary[first] for f in tied):
            return TIE_BREAK_PRIMARY_MEAN, False
        runner_up = next(f for f in order if f in tied and f != first)
        if _better(mean_secondary[first], mean_secondary[runner_up], True) or _better(
                mean_secondary[first], mean_secondary[runner_up], False):
            return TIE_BREAK_SECONDARY_MEAN, True
        return TIE_BREAK_FLAVOR_ORDER, False
    best_primary = max(primary_points.values())
    primary_top = [f for f, p in primary_points.items() if p == best_primary]
    if secondary is not None and primary_top != [first]:
        return (SECONDARY_SIGNIFICANCE if secondary.wins else SECONDARY_MEAN), True
    return (PRIMARY_SIGNIFICANCE if primary.wins else PRIMARY_MEAN), False


def _column(frame: pd.DataFrame, name: str):
    """The first row's value of a pingouin result column."""
    return frame[_column_name(frame, name)].iloc[0]


def _column_name(frame: pd.DataFrame, name: str) -> str:
    """pingouin renamed p-unc / p-val / p-tukey to p_unc / pval / p_tukey between versions; accept both."""
    aliases = {"p_unc": ("p_unc", "p-unc"), "pval": ("pval", "p-val", "p_val"), "p_tukey": ("p_tukey", "p-tukey")}
    for candidate in aliases.get(name, (name,)):
        if candidate in frame.columns:
            return candidate
    raise KeyError(f"pingouin result has no column {name!r} (columns: {list(frame.columns)})")


def _mean(a) -> float:
    return float(np.mean(a)) if a is not None and len(a) else math.nan


def _nan_to_one(p: float) -> float:
    return 1.0 if math.isnan(p) else p


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
