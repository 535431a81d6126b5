"""From structure scores to one score per image, and the worst fraction of a group's images excluded.

Combining a volume's structure scores (``combine``). Raw HD90 values cannot be averaged across structures: a liver's
typical HD90 is several times a kidney's, so a mean in mm would be the liver's verdict. Both methods here first put
each structure on its own scale, over the group's scored images (each structure's column of the score table):
- ``mean_robust_z`` (default): per structure, the robust z-score (hd90 - median) / max(1.4826 * MAD, floor),
  cut at 0 below (a structure reconstructed better than usual must not cancel a bad one), then the mean over the
  image's scored structures. The floor (``robust_z_floor_mm``, one voxel) keeps a structure whose HD90 barely
  varies from turning voxel-level jitter into large z-scores.
- ``max_robust_z``: the same z-scores, the image's largest (only its worst structure counts).
- ``mean_rank``: per structure, the percentile rank of the image's HD90 (average rank of ties / count), then the
  mean over the image's scored structures.
Why the robust z is the default: the QC must catch an image whose one structure is grossly wrong (a shifted,
swapped, truncated or missing organ) as well as images that are wrong everywhere. A percentile rank is bounded:
one catastrophic structure adds at most 1 to a sum of n ranks, about as much as ordinary scatter over the other
n - 1 structures, so with 12 structures such an image hardly moves up (workflow_scripts/benchmarks/bench_shape_qc.py prints both).
The robust z keeps the size of the error in units of the structure's own typical spread: a catastrophe counts as
one, and a structure that is large in mm does not dominate either. Both are robust to the outliers they look for
(median and MAD, ranks), so the statistics can come from the scored images themselves.

Which images are excluded. ``exclude_fraction`` of all images in the table (nearest whole number, halves up; the
paper: 10%, so the Shape flavor keeps ~0.9 of the Pseudo flavor's images, Table A.4) are excluded, worst first:
- volumes whose scoring failed (unreadable or invalid pseudo-labels) rank first: nothing vouches for them, and they
  are excluded even beyond the quota;
- then images by decreasing image score (ties by volume id, so the cut is deterministic);
- an empty pseudo-label (no structure of the group: nothing to judge) gets no image score and is never excluded
  by the shape QC, though it counts toward the total the quota is taken from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cadsflow.atomic import atomic_path
from cadsflow.shape_qc.score_table import ABSENT, FAILED, SCORED_STATUSES, WHOLE_VOLUME, read_scores, write_scores

EXCLUSION_COLUMNS = ("volume_id", "image_score", "rank", "reason")
IMAGE_COLUMNS = ("volume_id", "image_score", "rank", "state", "worst_structure", "worst_hd90_mm", "worst_status",
                 "n_scored", "excluded", "reason")
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution x 1.4826 = its standard deviation
SCORED, FAILED_STATE, UNSCORED = "scored", "failed", "unscored"


# name: (how each structure's column is normalised, how an image's normalised scores are reduced)
COMBINE_METHODS = {
    "mean_robust_z": ("robust_z", "mean"),
    "max_robust_z": ("robust_z", "max"),
    "mean_rank": ("rank", "mean"),
}


def structure_contributions(scores: pd.DataFrame, combine: str, floor_mm: float) -> pd.DataFrame:
    """Image x structure table of each structure's normalised score (NaN where the structure has none)."""
    if combine not in COMBINE_METHODS:
        raise ValueError(f"unknown combine method {combine!r}: expected one of {sorted(COMBINE_METHODS)}")
    scored = scores[scores["status"].isin(SCORED_STATUSES) & (scores["structure"] != WHOLE_VOLUME)]
    hd = scored.pivot_table(index="volume_id", columns="structure", values="hd90_mm", aggfunc="first")
    if COMBINE_METHODS[combine][0] == "rank":
        return hd.rank(axis=0, method="average") / hd.count(axis=0)
    median = hd.median(axis=0)
    mad = (hd - median).abs().median(axis=0)
    spread = np.maximum(MAD_TO_SIGMA * mad, floor_mm)
    return ((hd - median) / spread).clip(lower=0.0)


def image_scores(scores: pd.DataFrame, combine: str = "mean_robust_z", floor_mm: float = 1.5,
                 fraction: float = 0.10) -> pd.DataFrame:
    """One row per volume of the score table (IMAGE_COLUMNS): its image score, rank (1 = worst) and whether the
    worst `fraction` excludes it, with the reason. No scores (every volume of the group gated out, say): no rows."""
    if scores.empty:
        return pd.DataFrame(columns=list(IMAGE_COLUMNS))
    contributions = structure_contributions(scores, combine, floor_mm)
    volumes = list(dict.fromkeys(scores["volume_id"]))
    failed = _whole_volume_reasons(scores, FAILED)
    unscored = _whole_volume_reasons(scores, ABSENT)
    records = {(v, s): (hd, status) for v, s, hd, status in
               zip(scores["volume_id"], scores["structure"], scores["hd90_mm"], scores["status"])}
    counted = contributions.notna().sum(axis=1)
    contributions = contributions[counted > 0]
    reduced = contributions.max(axis=1) if COMBINE_METHODS[combine][1] == "max" else contributions.mean(axis=1)
    summary = {v: (float(r), str(w), int(c)) for v, r, w, c in zip(
        contributions.index, reduced, contributions.fillna(-np.inf).idxmax(axis=1), counted[counted > 0])}
    rows = []
    for volume_id in volumes:
        row = {"volume_id": volume_id, "image_score": np.nan, "state": UNSCORED, "worst_structure": "",
               "worst_hd90_mm": np.nan, "worst_status": "", "n_scored": 0, "reason": ""}
        if volume_id in failed:
            row.update(image_score=math.inf, state=FAILED_STATE, reason=f"scoring failed: {failed[volume_id]}")
        elif volume_id in summary:
            score, worst, count = summary[volume_id]
            worst_hd, worst_status = records[(volume_id, worst)]
            row.update(image_score=score, state=SCORED, worst_structure=worst, worst_hd90_mm=float(worst_hd),
                       worst_status=str(worst_status), n_scored=count)
        else:
            row["reason"] = unscored.get(volume_id, "no structure with a score")
        rows.append(row)
    table = pd.DataFrame(rows)
    return _ranked(table, fraction, combine)


def excluded(images: pd.DataFrame) -> pd.DataFrame:
    """The excluded rows of an image table, worst first, as EXCLUSION_COLUMNS."""
    if images.empty:
        return pd.DataFrame(columns=list(EXCLUSION_COLUMNS))
    out = images[images["excluded"].astype(bool)].sort_values("rank")
    return out[list(EXCLUSION_COLUMNS)].reset_index(drop=True)


def exclusion_count(n_images: int, fraction: float) -> int:
    """How many of n images the quota excludes: the nearest whole number to fraction x n, halves up."""
    return int(math.floor(fraction * n_images + 0.5))


def write_exclusions(score_paths: Sequence[str | Path], out: str | Path, fraction: float = 0.10,
                     combine: str = "mean_robust_z", floor_mm: float = 1.5,
                     images_out: str | Path | None = None, merged_out: str | Path | None = None) -> pd.DataFrame:
    """Read a group's score tables (its shards), write its exclusion table; optionally also every image's row
    (images_out) and the shards' scores as one table (merged_out)."""
    scores = read_scores(score_paths)
    images = image_scores(scores, combine, floor_mm, fraction)
    write_table(excluded(images), out)
    if merged_out is not None:
        write_scores(scores, merged_out)
    if images_out is not None:
        write_table(images, images_out)
    return images


def write_table(table: pd.DataFrame, out: str | Path) -> None:
    with atomic_path(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f", na_rep="")


# -- helpers ---------------------------------------------------------------------------------------------------


def _whole_volume_reasons(scores: pd.DataFrame, status: str) -> dict[str, str]:
    whole = scores[(scores["structure"] == WHOLE_VOLUME) & (scores["status"] == status)]
    return dict(zip(whole["volume_id"], whole["reason"]))


def _ranked(table: pd.DataFrame, fraction: float, combine: str) -> pd.DataFrame:
    """Rank images worst first (failed, then by score; ties by id), mark the quota, write the reasons."""
    if table.empty:
        return pd.DataFrame(columns=list(IMAGE_COLUMNS))
    rankable = table[table["state"] != UNSCORED].copy()
    rankable["_key"] = -rankable["image_score"]
    rankable = rankable.sort_values(["_key", "volume_id"], kind="mergesort")
    table["rank"] = pd.Series(dtype="Int64")
    table.loc[rankable.index, "rank"] = np.arange(1, len(rankable) + 1)
    quota = exclusion_count(len(table), fraction)
    n_failed = int((table["state"] == FAILED_STATE).sum())
    cut = max(quota, n_failed)
    table["excluded"] = table["rank"].notna() & (table["rank"] <= cut)
    table["excluded"] = table["excluded"].astype(bool)
    n_total = len(table)
    chosen = table["excluded"] & (table["state"] == SCORED)
    table.loc[chosen, "reason"] = [
        f"image score {score:.3f} ({combine}) ranks {int(rank)} of {n_total}, in the worst {fraction:.0%}; worst "
        f"structure {structure} (hd90 {hd:.1f} mm, {status})"
        for score, rank, structure, hd, status in table.loc[chosen, ["image_score", "rank", "worst_structure",
                                                                     "worst_hd90_mm", "worst_status"]].itertuples(
            index=False)]
    return table[list(IMAGE_COLUMNS)]
