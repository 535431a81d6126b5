"""Reference volumes per structure and the false-negative penalty and exclusion rules (Online Methods 5.1).

Two readings of the rules, chosen by `rule` (config evaluation.false_negative_rule):

- ``authors`` (default): what the authors' code computed the paper's tables with (murong-xu/CADS,
  cads/utils/compute_metrics.py with the tolerance TOL_MISSING_VOLLUME_PERCENTAGE = 0.1 of
  cads/dataset_utils/mappings.py). Only a structure the prediction *misses* is examined: it is ignored
  ("excluded_small") when its reference volume is <= 10% of the structure's reference volume statistic, and
  penalised otherwise ("false_negative": Dice = NSD = 0, HD = HD95 = the diagonal of the image's bounding box in
  mm). A structure the prediction holds is always scored, however small its reference.
- ``paper_text``: the Online Methods 5.1 wording. A structure present in the reference is excluded when its volume
  is under 10% of the statistic, whether predicted or not; a missed one is a false negative only above 90% of it;
  a missed one between 10% and 90% is "missed_partial" (neither penalised nor scored, kept out of the statistics).

In both, a structure absent from the reference is "absent" (both empty; no score, not a perfect one) or
"false_positive" (Dice = NSD = 0, HD = HD95 = the diagonal penalty, reported but not part of the statistics: the
authors' tables were made without FP penalties).

The paper's rule speaks of the organ's *average* volume and points to Table A.5, which lists *median* volumes (in
voxels of the 1.5 mm isotropic CADS grid, as their magnitudes show: liver 430,341 x 3.375 mm^3 = 1.45 L); the
authors' code reads a median too (organ_volume_clipped_median.pkl in scripts/eval_splits.py).
config/reference_volumes.tsv ships those medians converted to mL. ``compute_reference_volumes`` builds the same
table (mean over the volumes containing the structure, as the text says) from any cohort's reference labels; the
workflow can use either (config evaluation.reference_volumes).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.evaluation.metrics import RawScores
from cadsflow.textio import tsv_rows

FN_MIN_VOLUME_FRACTION = 0.90  # Online Methods 5.1: missed and > 90% of the average volume -> true false negative
EXCLUDE_BELOW_VOLUME_FRACTION = 0.10  # Online Methods 5.1: reference volume < 10% of the average -> excluded
# murong-xu/CADS dataset_utils/mappings.py TOL_MISSING_VOLLUME_PERCENTAGE; compute_metrics.py ignores a missed
# structure when `volume <= avg_organ_volume * 0.1`
AUTHORS_MISSED_IGNORE_FRACTION = 0.1
AUTHORS_RULE = "authors"
PAPER_TEXT_RULE = "paper_text"
FALSE_NEGATIVE_RULES = (AUTHORS_RULE, PAPER_TEXT_RULE)
DEFAULT_FALSE_NEGATIVE_RULE = AUTHORS_RULE  # the code produced the paper's tables

SCORED = "scored"
FALSE_NEGATIVE = "false_negative"
EXCLUDED_SMALL = "excluded_small"
MISSED_PARTIAL = "missed_partial"
FALSE_POSITIVE = "false_positive"
ABSENT = "absent"
STATUSES = (SCORED, FALSE_NEGATIVE, EXCLUDED_SMALL, MISSED_PARTIAL, FALSE_POSITIVE, ABSENT)
AGGREGATED_STATUSES = (SCORED, FALSE_NEGATIVE)  # what the paper's statistics are computed on

REFERENCE_VOLUME_COLUMNS = ("name", "occurrence", "reference_volume_ml", "statistic", "source")


@dataclass(frozen=True)
class StructureResult:
    status: str
    dice: float
    nsd: float
    hd: float
    hd95: float
    ref_volume_ml: float
    pred_volume_ml: float
    reference_volume_ml: float  # the table's statistic for this structure (NaN if unknown)


def apply_paper_rules(
    raw: RawScores,
    voxel_ml: float,
    reference_volume_ml: float | None,
    diagonal_mm: float,
    rule: str = DEFAULT_FALSE_NEGATIVE_RULE,
) -> StructureResult:
    """Turn raw metrics into the reported values and a status under `rule` (see module docstring).

    `reference_volume_ml` None or NaN means no statistic is known: nothing is excluded and every miss is a false
    negative.
    """
    if rule not in FALSE_NEGATIVE_RULES:
        raise ValueError(f"false-negative rule must be one of {FALSE_NEGATIVE_RULES}, got {rule!r}")
    ref_ml = raw.ref_voxels * voxel_ml
    pred_ml = raw.pred_voxels * voxel_ml
    known = reference_volume_ml is not None and math.isfinite(reference_volume_ml) and reference_volume_ml > 0
    table_ml = float(reference_volume_ml) if known else float("nan")
    nan = float("nan")

    def result(status, dice, nsd, hd, hd95):
        return StructureResult(status, dice, nsd, hd, hd95, ref_ml, pred_ml, table_ml)

    if raw.ref_voxels == 0:
        if raw.pred_voxels == 0:
            return result(ABSENT, nan, nan, nan, nan)
        return result(FALSE_POSITIVE, 0.0, 0.0, diagonal_mm, diagonal_mm)
    if rule == AUTHORS_RULE:
        if raw.pred_voxels > 0:
            return result(SCORED, raw.dice, raw.nsd, raw.hd, raw.hd95)
        if known and ref_ml <= AUTHORS_MISSED_IGNORE_FRACTION * table_ml:
            return result(EXCLUDED_SMALL, nan, nan, nan, nan)
        return result(FALSE_NEGATIVE, 0.0, 0.0, diagonal_mm, diagonal_mm)
    if known and ref_ml < EXCLUDE_BELOW_VOLUME_FRACTION * table_ml:
        return result(EXCLUDED_SMALL, nan, nan, nan, nan)
    if raw.pred_voxels == 0:
        if not known or ref_ml > FN_MIN_VOLUME_FRACTION * table_ml:
            return result(FALSE_NEGATIVE, 0.0, 0.0, diagonal_mm, diagonal_mm)
        return result(MISSED_PARTIAL, nan, nan, nan, nan)
    return result(SCORED, raw.dice, raw.nsd, raw.hd, raw.hd95)


def load_reference_volumes(path: str | Path) -> dict[str, float]:
    """name -> reference volume (mL) from a table with columns name and reference_volume_ml."""
    table = {}
    for line_no, row in tsv_rows(path, ("name", "reference_volume_ml"), "the reference volume table"):
        try:
            table[row["name"]] = float(row["reference_volume_ml"])
        except (TypeError, ValueError):
            raise ValueError(
                f"{path}:{line_no}: reference_volume_ml {row['reference_volume_ml']!r} is not a number"
            ) from None
    return table


def compute_reference_volumes(
    volumes_ml: Iterable[Mapping[str, float]], statistic: str = "mean", source: str = "cohort"
) -> list[dict]:
    """Per structure: occurrence and the mean (or median) volume over the volumes that contain it.

    `volumes_ml` yields, per reference label map, structure name -> volume in mL (0 or missing = absent); see
    ``structure_volumes_ml``. Returns rows with REFERENCE_VOLUME_COLUMNS, sorted by name order of first appearance.
    """
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    present: dict[str, list[float]] = {}
    for volume in volumes_ml:
        for name, ml in volume.items():
            if ml > 0:
                present.setdefault(name, []).append(float(ml))
    reduce = np.mean if statistic == "mean" else np.median
    return [
        {
            "name": name,
            "occurrence": len(values),
            "reference_volume_ml": float(reduce(values)),
            "statistic": statistic,
            "source": source,
        }
        for name, values in present.items()
    ]


def structure_volumes_ml(labels: np.ndarray, voxel_ml: float, label_ids: Mapping[str, int]) -> dict[str, float]:
    """Volume in mL of every named label in one label map (one bincount pass)."""
    labels = np.asarray(labels)
    if labels.size and labels.min() < 0:
        raise ValueError("label map holds negative values")
    top = max([int(labels.max()) if labels.size else 0, *label_ids.values()])
    counts = np.bincount(labels.ravel().astype(np.int64, copy=False), minlength=top + 1)
    return {name: float(counts[i]) * voxel_ml for name, i in label_ids.items()}


def write_reference_volumes(rows: list[dict], path: str | Path) -> None:
    from cadsflow.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=REFERENCE_VOLUME_COLUMNS, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "reference_volume_ml": f"{row['reference_volume_ml']:.4f}"})
