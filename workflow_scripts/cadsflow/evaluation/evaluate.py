"""One test volume -> one score table: every evaluation class of its source, for the model and a baseline.

Flow: read the reference and each system's prediction (same grid required), apply the source's alignment (case
exclusion, annotated slices, classes), score all classes in one pass (metrics.py), then the paper's
false-negative rules (volumes.py). Rows: volume_id, source, system, structure, status, dice, nsd, hd, hd95,
ref_volume_ml, pred_volume_ml, reference_volume_ml.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cadsflow.evaluation.alignment import SourceAlignment, annotated_slices, restrict_to_slices
from cadsflow.evaluation.metrics import NSD_TOLERANCE_MM, bounding_box_diagonal_mm, score_label_maps
from cadsflow.evaluation.volumes import apply_paper_rules
from cadsflow.labels import LabelSpace, load_label_space

SCORE_COLUMNS = (
    "volume_id", "source", "system", "structure", "status", "dice", "nsd", "hd", "hd95",
    "ref_volume_ml", "pred_volume_ml", "reference_volume_ml",
)  # fmt: skip
EXCLUDED_CASE = "excluded_case"  # Online Methods 5.2: e.g. VerSe cases with transitional vertebrae
GRID_TOLERANCE_MM = 1e-3
log = logging.getLogger(__name__)


class EvaluationInputError(ValueError):
    """An input volume is unusable; the message names the file and the problem."""


def evaluate_volume(
    volume_id: str,
    source: str,
    reference_path: str | Path,
    predictions: Mapping[str, str | Path],
    alignment: SourceAlignment,
    reference_volumes: Mapping[str, float],
    covered: Mapping[str, frozenset[str] | None] | None = None,
    tolerance_mm: float = NSD_TOLERANCE_MM,
    label_space: LabelSpace | None = None,
) -> list[dict]:
    """Score each system's prediction of one volume against its reference.

    `predictions` maps system name (e.g. "model", "baseline") to a label map in unified global ids on the
    reference's grid. `covered` optionally limits a system to the structures it can predict (a baseline's
    mutual structures); classes outside are not scored for it.
    """
    space = label_space or load_label_space()
    reference, affine = _read_labels(reference_path)
    spacing = _spacing(affine)
    rows = []
    excluded_by = sorted(set(alignment.exclude_cases_with_values) & set(np.unique(reference).tolist()))

    for system, path in predictions.items():
        system_alignment = alignment
        if covered and covered.get(system) is not None:
            system_alignment = alignment.restricted_to(covered[system])
        if excluded_by:
            log.info("%s: excluded from scoring, reference holds values %s", volume_id, excluded_by)
            rows += [_row(volume_id, source, system, c.name, EXCLUDED_CASE) for c in system_alignment.classes]
            continue
        prediction, pred_affine = _read_labels(path)
        _check_same_grid(reference_path, reference.shape, affine, path, prediction.shape, pred_affine)
        ref, pred, grid_spacing = reference, prediction, spacing
        slices = annotated_slices(reference, alignment)
        if slices is not None:
            (ref, pred), grid_spacing = restrict_to_slices([reference, prediction], slices, alignment.slice_axis, spacing)
            ref = np.where(ref == alignment.unannotated_value, 0, ref)
        raw = score_label_maps(ref, pred, grid_spacing, system_alignment.class_spec(space), tolerance_mm)
        voxel_ml = float(np.prod(grid_spacing)) / 1000.0
        diagonal = bounding_box_diagonal_mm(reference.shape, spacing)
        for c in system_alignment.classes:
            table_ml = _class_reference_volume(c.prediction_structures, reference_volumes)
            result = apply_paper_rules(raw[c.name], voxel_ml, table_ml, diagonal)
            rows.append(
                _row(volume_id, source, system, c.name, result.status, result.dice, result.nsd, result.hd,
                     result.hd95, result.ref_volume_ml, result.pred_volume_ml, result.reference_volume_ml)
            )  # fmt: skip
    return rows


def write_scores(rows: list[dict], path: str | Path) -> None:
    """Write score rows as TSV (atomically); floats with 6 decimals, NaN as empty, inf as 'inf'."""
    from cadsflow.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SCORE_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k)) for k in SCORE_COLUMNS})


# -- helpers ---------------------------------------------------------------------------------------------------


def _row(volume_id, source, system, structure, status, dice=math.nan, nsd=math.nan, hd=math.nan, hd95=math.nan,
         ref_ml=math.nan, pred_ml=math.nan, table_ml=math.nan) -> dict:  # fmt: skip
    return dict(
        volume_id=volume_id, source=source, system=system, structure=structure, status=status, dice=dice, nsd=nsd,
        hd=hd, hd95=hd95, ref_volume_ml=ref_ml, pred_volume_ml=pred_ml, reference_volume_ml=table_ml,
    )  # fmt: skip


def _format(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6f}"
    return "" if value is None else str(value)


def _class_reference_volume(structures, table: Mapping[str, float]) -> float | None:
    """A merged class's reference volume is the sum of its structures' (None if any is unknown)."""
    values = [table.get(s) for s in structures]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return float(sum(values))


def _read_labels(path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise EvaluationInputError(f"{path}: label map not found")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise EvaluationInputError(f"{path}: cannot read as a label map ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise EvaluationInputError(f"{path}: expected a 3-D label map, got shape {data.shape}")
    if data.dtype.kind not in "iu":
        rounded = np.rint(data)
        if not np.array_equal(rounded, data):
            raise EvaluationInputError(f"{path}: label map holds non-integer values")
        data = rounded.astype(np.int32)
    if data.size and data.min() < 0:
        raise EvaluationInputError(f"{path}: label map holds negative values")
    return data, np.asarray(img.affine, dtype=float)


def _spacing(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def _check_same_grid(ref_path, ref_shape, ref_affine, pred_path, pred_shape, pred_affine) -> None:
    if tuple(ref_shape) != tuple(pred_shape):
        raise EvaluationInputError(
            f"{pred_path}: prediction grid {tuple(pred_shape)} differs from the reference {ref_path} "
            f"{tuple(ref_shape)}; predictions must be on the reference's grid"
        )
    if not np.allclose(ref_affine, pred_affine, atol=GRID_TOLERANCE_MM):
        raise EvaluationInputError(
            f"{pred_path}: prediction affine differs from the reference {ref_path}'s; predictions must be on the "
            "reference's grid"
        )
