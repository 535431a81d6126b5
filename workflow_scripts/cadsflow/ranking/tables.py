"""The ranking's files: the long score table it reads, the priority table it writes, and its settings.

Score table (TSV, one or several files): one row per structure, flavor and validation volume, columns
``structure, group, flavor, volume_id, split_kind, dice, hd95`` (the metric columns are the settings' primary and
secondary metrics), optionally ``status``: when present, only the rows whose status counts for the paper's
statistics (cadsflow.evaluation.volumes.AGGREGATED_STATUSES: scored, false_negative) are used, as everywhere in
the evaluation. ``split_kind`` is ``ID`` or ``OOD``; ``flavor`` one of the configured flavors. Non-finite metric
values (NaN, inf) are not scores and are left out.

Priority table (``results/ranking/priority.tsv``): one row per group and structure, with the priority order
(``first``, ``second``, ``third``) and the decision trail: which split was used, n and means per flavor, the
assumption tests' p-values, the omnibus and post-hoc tests with their p-values, the significant pairs, the points
of each step, whether the secondary metric (HD95) was consulted and whether it decided, and a note for
degenerate cases. See cadsflow.ranking.algorithm for the rule.

Structures without any validation score (no validation volume annotates them) still get a row when the caller
names the structures to rank (``structures``): with nothing to compare, the order is the configured flavor order
(GT, Pseudo, Shape: the model trained on human-verified labels only comes first), ``decided_by`` is ``no_scores``
and the note says why. Optionally the table carries each flavor's share of ground truth among the training labels
of the structure (``gt_share_<flavor>``, from the flavor datasets' cads_gt_share.tsv) and the first flavor's as
``gt_share`` (the assembly's tie-break); NaN where unknown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from cadsflow.atomic import atomic_path
from cadsflow.evaluation.volumes import AGGREGATED_STATUSES
from cadsflow.paths import CONFIG_DIR
from cadsflow.ranking.algorithm import Decision, RankingSettings, SignificanceTest, rank_structure
from cadsflow.textio import read_yaml_mapping, tsv_rows

FLAVORS_YAML = CONFIG_DIR / "flavors.yaml"
KEY_COLUMNS = ("structure", "group", "flavor", "volume_id", "split_kind")
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth")
UNSCORED_NOTE = "no validation volume annotates it: configured flavor order"
GT_SHARE_COLUMNS = ("structure", "gt_share")  # what is read of a flavor dataset's cads_gt_share.tsv
GtShares = Mapping[tuple[str, str, str], float]  # (group, structure, flavor) -> share of ground truth
_SETTINGS_KEYS = {"alpha", "primary_metric", "secondary_metric", "preferred_split", "fallback_split", "test_choice",
                  "posthoc", "dunn_p_adjust", "min_n", "align_volumes", "secondary_mean_rank_points"}


def rank_scores(paths: Sequence[str | Path], out: str | Path, settings: RankingSettings | None = None,
                structures: Mapping[str, Sequence[str]] | None = None,
                gt_share: GtShares | None = None) -> list[Decision]:
    """Read the score tables, rank every (group, structure), write the priority table; return the decisions.

    `structures` (group -> structure names) adds a row for each structure without scores; `gt_share` fills the
    ground-truth share columns (module docstring).
    """
    settings = settings or load_ranking_settings()
    decisions = rank_table(read_scores(paths, settings), settings, structures)
    write_priority(decisions, out, settings, gt_share)
    return decisions


def rank_table(scores: pd.DataFrame, settings: RankingSettings,
               structures: Mapping[str, Sequence[str]] | None = None) -> list[Decision]:
    """Algorithm 1 for every (group, structure) of a validated score table and of `structures`, in sorted order."""
    groups = {(str(g), str(s)): rows for (g, s), rows in scores.groupby(["group", "structure"], sort=False)}
    wanted = {(str(g), str(s)) for g, names in (structures or {}).items() for s in names}
    decisions = []
    for group, structure in sorted(set(groups) | wanted):
        rows = groups.get((group, structure))
        if rows is None:
            decision = rank_structure(scores.iloc[0:0], settings, group, structure)
            decisions.append(replace(decision, note=UNSCORED_NOTE))
        else:
            decisions.append(rank_structure(rows, settings, group, structure))
    return decisions


def read_scores(paths: Iterable[str | Path], settings: RankingSettings) -> pd.DataFrame:
    """Concatenate and validate score tables; errors name the file and what is wrong in it."""
    frames = [_read_one(Path(p), settings) for p in paths]
    if not frames:
        raise ValueError("no score tables given to the ranking")
    scores = pd.concat(frames, ignore_index=True)
    keys = ["group", "structure", "flavor", "split_kind", "volume_id"]
    duplicated = scores[scores.duplicated(keys, keep=False)]
    if len(duplicated):
        first = duplicated.iloc[0]
        same = duplicated[(duplicated[keys] == first[keys]).all(axis=1)]
        raise ValueError(f"{', '.join(dict.fromkeys(same['_file']))}: volume {first['volume_id']} is scored more "
                         f"than once for {first['structure']} (group {first['group']}, flavor {first['flavor']}, "
                         f"{first['split_kind']})")
    return scores.drop(columns="_file")


def write_priority(decisions: Sequence[Decision], out: str | Path, settings: RankingSettings,
                   gt_share: GtShares | None = None) -> None:
    """Write the priority table atomically (columns: module docstring)."""
    table = priority_frame(decisions, settings, gt_share)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="NaN")


def priority_frame(decisions: Sequence[Decision], settings: RankingSettings,
                   gt_share: GtShares | None = None) -> pd.DataFrame:
    """The priority table as a DataFrame of strings, one row per decision."""
    rows = [_row(d, settings, gt_share or {}) for d in decisions]
    return pd.DataFrame(rows, columns=priority_columns(settings))


def priority_columns(settings: RankingSettings) -> list[str]:
    flavors, p, s = settings.flavors, settings.primary_metric, settings.secondary_metric
    return [
        "group", "structure", *ORDINALS[:len(flavors)], "split_kind",
        *(f"n_{f}" for f in flavors), *(f"mean_{p}_{f}" for f in flavors), *(f"mean_{s}_{f}" for f in flavors),
        *_test_columns(p), *(f"points_{p}_{f}" for f in flavors),
        f"{s}_consulted", f"{s}_flavors", *_test_columns(s), *(f"points_total_{f}" for f in flavors),
        "decided_by", f"{s}_decided", "note", "gt_share", *(f"gt_share_{f}" for f in flavors),
    ]


def read_priority(path: str | Path) -> pd.DataFrame:
    """Read a priority table back (strings; numbers parsed where the caller needs them)."""
    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise ValueError(f"{path}: cannot read priority table ({exc})") from None


def read_gt_shares(tables: Iterable[tuple[str, str, str | Path]]) -> dict[tuple[str, str, str], float]:
    """(group, structure, flavor) -> gt_share from (flavor, group, cads_gt_share.tsv path) triples."""
    shares = {}
    for flavor, group, path in tables:
        for line, row in tsv_rows(path, GT_SHARE_COLUMNS, "the ground-truth share table"):
            try:
                shares[str(group), row["structure"], flavor] = float(row["gt_share"]) if row["gt_share"] else math.nan
            except ValueError:
                raise ValueError(f"{path}:{line}: gt_share of {row['structure']} is not a number: "
                                 f"{row['gt_share']!r}") from None
    return shares


def load_ranking_settings(path: str | Path = FLAVORS_YAML) -> RankingSettings:
    """RankingSettings from the ``flavors`` list and the ``ranking`` section of config/flavors.yaml."""
    data = read_yaml_mapping(path, "the flavor settings")
    section = data.get("ranking")
    if not isinstance(section, dict):
        raise ValueError(f"{path}: expected a mapping 'ranking'")
    unknown = set(section) - _SETTINGS_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) in 'ranking': {', '.join(sorted(unknown))}")
    kwargs = dict(section)
    if "flavors" in data:
        kwargs["flavors"] = tuple(data["flavors"])
    try:
        return RankingSettings(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


# -- helpers ---------------------------------------------------------------------------------------------------


def _read_one(path: Path, settings: RankingSettings) -> pd.DataFrame:
    metrics = (settings.primary_metric, settings.secondary_metric)
    try:
        frame = pd.read_csv(path, sep="\t", dtype={c: str for c in KEY_COLUMNS})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: cannot read score table ({exc})") from None
    missing = [c for c in (*KEY_COLUMNS, *metrics) if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: score table lacks column(s) {', '.join(missing)}")
    if "status" in frame.columns:
        frame = frame[frame["status"].isin(AGGREGATED_STATUSES)]
    bad_flavors = sorted(set(frame["flavor"]) - set(settings.flavors))
    if bad_flavors:
        raise ValueError(f"{path}: unknown flavor(s) {', '.join(map(str, bad_flavors))} "
                         f"(expected {', '.join(settings.flavors)})")
    splits = {settings.preferred_split, settings.fallback_split}
    bad_splits = sorted(set(frame["split_kind"]) - splits)
    if bad_splits:
        raise ValueError(f"{path}: unknown split_kind(s) {', '.join(map(str, bad_splits))} "
                         f"(expected {' or '.join(sorted(splits))})")
    for metric in metrics:
        values = pd.to_numeric(frame[metric], errors="coerce")
        unreadable = frame[metric].notna() & values.isna()
        if unreadable.any():
            raise ValueError(f"{path}: {metric} is not a number for volume "
                             f"{frame.loc[unreadable, 'volume_id'].iloc[0]}: {frame.loc[unreadable, metric].iloc[0]!r}")
        frame[metric] = values.astype(float)
    frame = frame[list(KEY_COLUMNS) + list(metrics)].copy()
    frame["_file"] = str(path)
    return frame


def _row(d: Decision, settings: RankingSettings, gt_share: GtShares) -> dict[str, str]:
    flavors, p, s = settings.flavors, settings.primary_metric, settings.secondary_metric
    row = {"group": d.group, "structure": d.structure, "split_kind": d.split_kind,
           "decided_by": d.decided_by, f"{s}_decided": _bool(d.secondary_decided), "note": _join(d.note, *(
               t.note for t in (d.primary, d.secondary) if t is not None and t.note))}
    row.update({ORDINALS[i]: f for i, f in enumerate(d.order)})
    for f in flavors:
        row[f"n_{f}"] = str(d.n[f])
        row[f"mean_{p}_{f}"] = _num(d.mean_primary[f])
        row[f"mean_{s}_{f}"] = _num(d.mean_secondary[f])
        row[f"points_{p}_{f}"] = str(d.primary_points[f])
        row[f"points_total_{f}"] = str(d.total_points[f])
    row.update(_test_fields(p, d.primary))
    row.update(_test_fields(s, d.secondary))
    row[f"{s}_consulted"] = _bool(d.secondary is not None)
    row[f"{s}_flavors"] = ",".join(d.secondary.flavors) if d.secondary is not None else ""
    for f in flavors:
        row[f"gt_share_{f}"] = _num(gt_share.get((d.group, d.structure, f), math.nan))
    row["gt_share"] = row[f"gt_share_{d.order[0]}"]
    return row


def _test_columns(metric: str) -> list[str]:
    return [f"{metric}_{c}" for c in ("shapiro_p", "levene_p", "test", "p", "posthoc", "pair_p", "significant")]


def _test_fields(metric: str, t: SignificanceTest | None) -> dict[str, str]:
    if t is None:
        return {c: "" for c in _test_columns(metric)}
    return {
        f"{metric}_shapiro_p": ";".join(f"{f}={_num(p)}" for f, p in t.shapiro_p.items()),
        f"{metric}_levene_p": _num(t.levene_p),
        f"{metric}_test": t.omnibus,
        f"{metric}_p": _num(t.omnibus_p),
        f"{metric}_posthoc": t.posthoc,
        f"{metric}_pair_p": ";".join(f"{a}-{b}={_num(p)}" for (a, b), p in t.pair_p.items()),
        f"{metric}_significant": ";".join(f"{a}>{b}" for a, b in t.wins),
    }


def _num(x: float) -> str:
    return "NaN" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.6g}"


def _bool(x: bool) -> str:
    return "true" if x else "false"


def _join(*parts: str) -> str:
    return "; ".join(dict.fromkeys(p for p in parts if p))

