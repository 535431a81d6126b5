"""Test volumes -> score tables: every evaluation class of a volume's source, for the model and a baseline.

Flow: read the reference and each system's prediction (same grid required), apply the source's alignment (case
exclusion, annotated slices, classes), score all classes in one pass (metrics.py), then the paper's
false-negative rules (volumes.py). Rows: volume_id, source, system, structure, status, dice, nsd, hd, hd95,
ref_volume_ml, pred_volume_ml, reference_volume_ml.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.evaluation.alignment import (
    SourceAlignment,
    annotated_slices,
    load_alignment,
    resolve_alignment,
    restrict_to_slices,
)
from cadsflow.evaluation.baseline import load_baseline_mapping, to_unified
from cadsflow.evaluation.metrics import (
    NSD_TOLERANCE_MM,
    bounding_box_diagonal_mm,
    integer_labels,
    remap_to_classes,
    score_label_maps,
)
from cadsflow.evaluation.statistics import BASELINE, MODEL
from cadsflow.evaluation.volumes import (
    apply_paper_rules,
    compute_reference_volumes,
    load_reference_volumes,
    write_reference_volumes,
)
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
    convert: Mapping[str, Callable[[np.ndarray], np.ndarray]] | None = None,
) -> list[dict]:
    """Score each system's prediction of one volume against its reference.

    `predictions` maps system name (e.g. "model", "baseline") to a label map in unified global ids on the
    reference's grid. `covered` optionally limits a system to the structures it can predict (a baseline's
    mutual structures); classes outside are not scored for it. `convert` optionally maps a system's label map
    into unified ids first (a baseline in its own labels).
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
        layers = _read_prediction(path, space)
        if convert and system in convert:
            layers = {key: (convert[system](data), aff, where) for key, (data, aff, where) in layers.items()}
        raw = {}
        spec = system_alignment.class_spec(space)
        for key, (prediction, pred_affine, pred_path) in _layered(layers, spec, space).items():
            _check_same_grid(reference_path, reference.shape, affine, pred_path, prediction.shape, pred_affine)
            ref, pred, grid_spacing = reference, prediction, spacing
            slices = annotated_slices(reference, alignment)
            if slices is not None:
                (ref, pred), grid_spacing = restrict_to_slices(
                    [reference, prediction], slices, alignment.slice_axis, spacing
                )
                ref = np.where(ref == alignment.unannotated_value, 0, ref)
            classes = {name: spec[name] for name in key}
            raw.update(score_label_maps(ref, pred, grid_spacing, classes, tolerance_mm))
        voxel_ml = float(np.prod(grid_spacing)) / 1000.0
        diagonal = bounding_box_diagonal_mm(reference.shape, spacing)
        for c in system_alignment.classes:
            table_ml = _class_reference_volume(c, reference_volumes)
            result = apply_paper_rules(raw[c.name], voxel_ml, table_ml, diagonal)
            rows.append(
                _row(volume_id, source, system, c.name, result.status, result.dice, result.nsd, result.hd,
                     result.hd95, result.ref_volume_ml, result.pred_volume_ml, result.reference_volume_ml)
            )  # fmt: skip
    return rows


@dataclass(frozen=True)
class VolumeToScore:
    """One volume of an evaluation batch: its reference (a label map, or a standardized volume's folder whose
    label.nii.gz is used), its source (alignment key), the model's prediction and optionally a baseline's
    prediction in the baseline's own labels."""

    volume_id: str
    source: str
    reference: str
    prediction: str
    baseline: str = ""


def run_batch(
    volumes: Sequence[VolumeToScore],
    out_path: str | Path,
    alignment_path: str | Path,
    registry_path: str | Path | None = None,
    reference_volumes_path: str | Path | None = None,
    baseline_mapping_path: str | Path | None = None,
    tolerance_mm: float = NSD_TOLERANCE_MM,
    label_space_path: str | Path | None = None,
) -> list[dict]:
    """What the evaluate_batch rule does: load the configuration once, score each volume, write one table.

    A baseline prediction is mapped onto the unified structures in memory (baseline.to_unified) and scored on
    the structures its mapping covers. A standardized folder without a label map (a quarantined volume) adds no
    rows; the log says so.
    """
    space = load_label_space(label_space_path) if label_space_path else load_label_space()
    config = load_alignment(alignment_path)
    registry = _registry(registry_path, space)
    table = load_reference_volumes(reference_volumes_path) if reference_volumes_path else {}
    mapping = load_baseline_mapping(baseline_mapping_path, space) if baseline_mapping_path else None
    rows = []
    for item in volumes:
        reference = Path(item.reference)
        if reference.is_dir():
            reference = reference / "label.nii.gz"
            if not reference.exists():
                log.warning(
                    "%s: no standardized label map in %s (quarantined?): not scored", item.volume_id, reference.parent
                )
                continue
        predictions, covered, convert = {MODEL: item.prediction}, {}, {}
        if item.baseline:
            if mapping is None:
                raise ValueError(f"{item.baseline}: a baseline prediction needs a baseline mapping table")
            predictions[BASELINE] = item.baseline
            covered[BASELINE] = mapping.covered_structures
            convert[BASELINE] = lambda labels, m=mapping: to_unified(labels, m, space)
        alignment = resolve_alignment(item.source, config, registry, space)
        scored = evaluate_volume(item.volume_id, item.source, reference, predictions, alignment, table, covered,
                                 tolerance_mm, space, convert)  # fmt: skip
        log.info("%s (%s): %d rows", item.volume_id, item.source, len(scored))
        rows += scored
    write_scores(rows, out_path)
    return rows


def cohort_reference_volumes(
    references: Sequence[tuple[str | Path, str]],
    out_path: str | Path,
    alignment_path: str | Path,
    registry_path: str | Path | None = None,
    statistic: str = "mean",
    label_space_path: str | Path | None = None,
) -> None:
    """Reference volume table (volumes.py) from a cohort's references: per class, mean volume where present.

    `references` are (label map or standardized directory, source) pairs; classes follow each source's
    alignment, so a merged class (e.g. kidneys) gets its own entry.
    """
    space = load_label_space(label_space_path) if label_space_path else load_label_space()
    config = load_alignment(alignment_path)
    registry = _registry(registry_path, space)
    per_volume = []
    for reference, source in references:
        path = Path(reference)
        path = path / "label.nii.gz" if path.is_dir() else path
        if not path.exists():
            log.warning("%s: no label map, skipped", path)
            continue
        alignment = resolve_alignment(source, config, registry, space)
        labels, affine = _read_labels(path)
        spacing = _spacing(affine)
        slices = annotated_slices(labels, alignment)
        if slices is not None:
            (labels,), spacing = restrict_to_slices([labels], slices, alignment.slice_axis, spacing)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        counts = np.bincount(remap_to_classes(labels, [c.reference_values for c in alignment.classes]).ravel(),
                             minlength=len(alignment.classes) + 1)  # fmt: skip
        per_volume.append({c.name: counts[k] * voxel_ml for k, c in enumerate(alignment.classes, start=1)})
    rows = compute_reference_volumes(per_volume, statistic=statistic, source=f"cohort ({len(per_volume)} volumes)")
    write_reference_volumes(rows, out_path)


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


def _class_reference_volume(evaluation_class, table: Mapping[str, float]) -> float | None:
    """The table's entry for the class, else the sum of its structures' (None if any is unknown)."""
    if evaluation_class.name in table:
        return table[evaluation_class.name]
    values = [table.get(s) for s in evaluation_class.prediction_structures]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return float(sum(values))


GROUP_TOKEN = "{group}"


def _read_prediction(path, space: LabelSpace) -> dict:
    """A prediction as layers: one whole-body label map (key None), or, for a path with '{group}', one map per
    group file that exists (group label ids converted to global ids). Groups overlap by design (body regions of
    559 cover organs of 551), so a multi-group prediction is never flattened into one map.
    """
    path = str(path)
    if GROUP_TOKEN not in path:
        data, affine = _read_labels(path)
        return {None: (data, affine, path)}
    layers = {}
    for group in space.groups:
        group_path = path.replace(GROUP_TOKEN, str(group))
        if not Path(group_path).exists():
            continue
        data, affine = _read_labels(group_path)
        lookup = np.zeros(max(int(data.max()), len(space.group(group))) + 1, dtype=np.int32)
        for structure in space.group(group):
            lookup[structure.label_id] = structure.global_id
        layers[group] = (lookup[data], affine, group_path)
    if not layers:
        raise EvaluationInputError(f"{path}: no group label map found for any group {space.groups}")
    return layers


def _layered(layers: dict, spec: dict, space: LabelSpace) -> dict:
    """Which layer scores which classes: a class is scored on the layer of its predicted structures' group; a
    class whose group has no layer is scored on an empty map (a miss), like a whole-body map without it."""
    if None in layers:
        return {tuple(spec): layers[None]}
    by_global = {s.global_id: s.group for s in space.structures}
    any_layer = next(iter(layers.values()))
    assigned: dict = {}
    for name, (_, predicted) in spec.items():
        groups = {by_global[g] for g in predicted}
        group = min(groups)  # classes are built from one group's structures (unions like kidneys, lung lobes)
        assigned.setdefault(group, []).append(name)
    out = {}
    for group, names in assigned.items():
        data, affine, path = layers.get(group) or (np.zeros_like(any_layer[0]), any_layer[1], any_layer[2])
        out[tuple(names)] = (data, affine, path)
    return out


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
    try:
        data = integer_labels(data)
    except ValueError as exc:
        raise EvaluationInputError(f"{path}: {exc}") from None
    return data, np.asarray(img.affine, dtype=float)


def _registry(path, space):
    if not path:
        return None
    from cadsflow.sources import load_registry

    return load_registry(path, space)


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
