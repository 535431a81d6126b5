"""Test volumes -> score tables: every evaluation class of a volume's source, for the model and a baseline.

Flow: read the reference and each system's prediction (same grid required), apply the source's alignment (case
exclusion, annotated slices, classes), score all classes in one pass (metrics.py), then the false-negative rules
(volumes.py; `false_negative_rule` "authors" by default, "paper_text" as an option). A volume whose source carries
several label files (registry `extra_label_sets`: label_<set>.nii.gz next to label.nii.gz in the standardized
folder, or files named in VolumeToScore.extra_references) is scored once per label file, as the dataset
"<source>:<set>" (Table 1's "VISCERAL Gold Corpus-Extra", "HaN-Seg Extra Brain Labels").
Rows: volume_id, source (the dataset), system, structure, status, dice, nsd, hd, hd95, ref_volume_ml,
pred_volume_ml, reference_volume_ml.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cadsflow.evaluation.alignment import (
    LABEL_SET_SEPARATOR,
    SourceAlignment,
    annotated_slices,
    load_alignment,
    resolve_alignment,
    restrict_to_slices,
)
from cadsflow.evaluation.baseline import (
    BaselineError,
    BaselineMapping,
    baseline_task_files,
    load_baseline_mapping,
    to_unified,
)
from cadsflow.evaluation.metrics import (
    NSD_TOLERANCE_MM,
    bounding_box_diagonal_mm,
    integer_labels,
    remap_to_classes,
    score_label_maps,
)
from cadsflow.evaluation.statistics import BASELINE, MODEL
from cadsflow.evaluation.volumes import (
    DEFAULT_FALSE_NEGATIVE_RULE,
    FALSE_NEGATIVE_RULES,
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
MAIN_LABEL_FILE = "label.nii.gz"
GROUP_TOKEN = "{group}"
log = logging.getLogger(__name__)


class EvaluationInputError(ValueError):
    """An input volume is unusable; the message names the file and the problem."""


@dataclass(frozen=True)
class PredictionLayers:
    """A system's prediction of one volume as label maps in unified global ids: one whole-body map (key None), one
    per group, or one per baseline task. `layer_of` names the map a structure is scored on; `covered` limits the
    structures the system is scored on (None: all)."""

    maps: dict
    layer_of: Callable[[str], object]
    covered: frozenset[str] | None = None


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
    readers: Mapping[str, Callable[[str], PredictionLayers]] | None = None,
    false_negative_rule: str = DEFAULT_FALSE_NEGATIVE_RULE,
) -> list[dict]:
    """Score each system's prediction of one volume against its reference.

    `predictions` maps system name (e.g. "model", "baseline") to a label map in unified global ids on the
    reference's grid (a path with "{group}": one map per group in group label ids). `covered` optionally limits a
    system to the structures it can predict (a baseline's mutual structures); classes outside are not scored for
    it. `readers` optionally reads a system's prediction its own way (a baseline in its own labels, per task).
    """
    if false_negative_rule not in FALSE_NEGATIVE_RULES:
        raise ValueError(f"false_negative_rule must be one of {FALSE_NEGATIVE_RULES}, got {false_negative_rule!r}")
    space = label_space or load_label_space()
    reference, affine = _read_labels(reference_path)
    spacing = _spacing(affine)
    rows = []
    excluded_by = sorted(set(alignment.exclude_cases_with_values) & set(np.unique(reference).tolist()))
    excluded = bool(excluded_by) or alignment.excludes_case(volume_id)

    for system, path in predictions.items():
        system_alignment = alignment
        if covered and covered.get(system) is not None:
            system_alignment = alignment.restricted_to(covered[system])
        if excluded:
            why = f"reference holds values {excluded_by}" if excluded_by else "case is on the exclusion list"
            log.info("%s (%s): excluded from scoring, %s", volume_id, source, why)
            rows += [_row(volume_id, source, system, c.name, EXCLUDED_CASE) for c in system_alignment.classes]
            continue
        read = (readers or {}).get(system) or (lambda p: read_prediction(p, space))
        layers = read(str(path))
        if layers.covered is not None:
            system_alignment = system_alignment.restricted_to(layers.covered)
        raw = _score_layers(reference, affine, reference_path, layers, system_alignment, space, tolerance_mm)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        diagonal = bounding_box_diagonal_mm(reference.shape, spacing)
        for c in system_alignment.classes:
            table_ml = _class_reference_volume(c, reference_volumes)
            result = apply_paper_rules(raw[c.name], voxel_ml, table_ml, diagonal, false_negative_rule)
            rows.append(
                _row(volume_id, source, system, c.name, result.status, result.dice, result.nsd, result.hd,
                     result.hd95, result.ref_volume_ml, result.pred_volume_ml, result.reference_volume_ml)
            )  # fmt: skip
    return rows


@dataclass(frozen=True)
class VolumeToScore:
    """One volume of an evaluation batch: its reference (a label map, or a standardized volume's folder whose
    label.nii.gz and label_<set>.nii.gz files are used), its source (alignment key), the model's prediction,
    optionally a baseline's prediction in the baseline's own labels (a path with "{task}": one file per task),
    optionally more reference files by label set name (e.g. {"brain_atlas": ".../group_557.nii.gz"}), and
    optionally further systems' predictions read like the model's, by system name (e.g. {"specialists":
    ".../pseudolabels/{group}/shard_<k>/<id>.nii.gz"}: config evaluation.comparisons, the shard filled in by the
    rules)."""

    volume_id: str
    source: str
    reference: str
    prediction: str
    baseline: str = ""
    extra_references: Mapping[str, str] = field(default_factory=dict)
    comparisons: Mapping[str, str] = field(default_factory=dict)


def run_batch(
    volumes: Sequence[VolumeToScore],
    out_path: str | Path,
    alignment_path: str | Path,
    registry_path: str | Path | None = None,
    reference_volumes_path: str | Path | None = None,
    baseline_mapping_path: str | Path | None = None,
    tolerance_mm: float = NSD_TOLERANCE_MM,
    label_space_path: str | Path | None = None,
    false_negative_rule: str = DEFAULT_FALSE_NEGATIVE_RULE,
) -> list[dict]:
    """What the evaluate_batch rule does: load the configuration once, score each volume, write one table.

    Each volume's comparison systems (VolumeToScore.comparisons) are scored like the model, as systems of their own
    name, so the report can compare the model with them.

    A baseline prediction is mapped onto the unified structures in memory (baseline.to_unified), task by task,
    and scored on the structures its present tasks cover. A standardized folder without a label map (a
    quarantined volume) adds no rows; the log says so.
    """
    space = load_label_space(label_space_path) if label_space_path else load_label_space()
    config = load_alignment(alignment_path)
    registry = _registry(registry_path, space)
    table = load_reference_volumes(reference_volumes_path) if reference_volumes_path else {}
    mapping = load_baseline_mapping(baseline_mapping_path, space) if baseline_mapping_path else None
    rows = []
    for item in volumes:
        references = label_set_references(item.reference, item.source, registry, space, item.extra_references)
        if references is None:
            log.warning("%s: no standardized label map in %s (quarantined?): not scored", item.volume_id,
                        item.reference)
            continue
        reserved = sorted({MODEL, BASELINE} & set(item.comparisons))
        if reserved:
            raise ValueError(f"{item.volume_id}: comparison systems may not be named {reserved} (reserved)")
        predictions, readers = {MODEL: item.prediction, **item.comparisons}, {}
        if item.baseline:
            if mapping is None:
                raise ValueError(f"{item.baseline}: a baseline prediction needs a baseline mapping table")
            predictions[BASELINE] = item.baseline
            readers[BASELINE] = baseline_reader(mapping, space)
        for dataset, reference in references:
            alignment = resolve_alignment(dataset, config, registry, space)
            scored = evaluate_volume(item.volume_id, dataset, reference, predictions, alignment, table, None,
                                     tolerance_mm, space, readers, false_negative_rule)  # fmt: skip
            log.info("%s (%s): %d rows", item.volume_id, dataset, len(scored))
            rows += scored
    write_scores(rows, out_path)
    return rows


def label_set_references(
    reference: str | Path,
    source: str,
    registry: Mapping | None,
    space: LabelSpace,
    extra_references: Mapping[str, str] | None = None,
) -> list[tuple[str, str]] | None:
    """(dataset, reference file) pairs of one volume: the main label map as `source`, each further label file as
    "<source>:<set>". None when a standardized folder holds no main label map (a quarantined volume).

    In a standardized folder, label_<set>.nii.gz is read for each extra label set the registry names for the source;
    `extra_references` adds files made elsewhere (the factory's atlas labels). A named extra file must exist.
    """
    path = Path(reference)
    pairs = []
    if path.is_dir():
        if not (path / MAIN_LABEL_FILE).exists():
            return None
        pairs.append((source, str(path / MAIN_LABEL_FILE)))
        for label_set in _registry_extra_sets(source, registry, space):
            candidate = path / f"label_{label_set}.nii.gz"
            if candidate.exists():
                pairs.append((f"{source}{LABEL_SET_SEPARATOR}{label_set}", str(candidate)))
    else:
        pairs.append((source, str(path)))
    for label_set, file in (extra_references or {}).items():
        if not Path(file).exists():
            raise EvaluationInputError(f"{file}: reference of label set {label_set!r} of {reference} not found")
        pairs.append((f"{source}{LABEL_SET_SEPARATOR}{label_set}", str(file)))
    return pairs


def read_prediction(path, space: LabelSpace) -> PredictionLayers:
    """A prediction as layers: one whole-body label map (key None), or, for a path with '{group}', one map per
    group file that exists (group label ids converted to global ids). Groups overlap by design (body regions of
    559 cover organs of 551), so a multi-group prediction is never flattened into one map; a class is scored on
    the map of its structures' group, and on an empty map (a miss) when that group has no file.
    """
    path = str(path)
    if GROUP_TOKEN not in path:
        data, affine = _read_labels(path)
        return PredictionLayers({None: (data, affine, path)}, lambda structure: None)
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
    return PredictionLayers(layers, lambda structure: space.by_name(structure).group)


def baseline_reader(mapping: BaselineMapping, space: LabelSpace) -> Callable[[str], PredictionLayers]:
    """Read a baseline prediction task by task into unified ids; it covers the structures of the tasks present."""

    def read(path: str) -> PredictionLayers:
        files = baseline_task_files(path, mapping)
        if not files:
            raise EvaluationInputError(f"{path}: no baseline prediction file for any task {list(mapping.tasks)}")
        maps = {}
        for task, file in files.items():
            data, affine = _read_labels(file)
            try:
                maps[task] = (to_unified(data, mapping, space, task), affine, file)
            except BaselineError as exc:
                raise EvaluationInputError(f"{file}: {exc}") from None
        return PredictionLayers(maps, mapping.task_of, mapping.covered_by(files))

    return read


def cohort_reference_volumes(
    references: Sequence[tuple[str | Path, str]],
    out_path: str | Path,
    alignment_path: str | Path,
    registry_path: str | Path | None = None,
    statistic: str = "mean",
    label_space_path: str | Path | None = None,
) -> None:
    """Reference volume table (volumes.py) from a cohort's references: per class, mean volume where present.

    `references` are (label map or standardized directory, source) pairs; classes follow each source's (and each
    of its label sets') alignment, so a merged class (e.g. kidneys) gets its own entry. Unannotated slices hold no
    class voxel, so sparse references need no slice selection here.
    """
    space = load_label_space(label_space_path) if label_space_path else load_label_space()
    config = load_alignment(alignment_path)
    registry = _registry(registry_path, space)
    per_volume = []
    for reference, source in references:
        path = Path(reference)
        pairs = label_set_references(path, source, registry, space) if path.is_dir() or path.exists() else None
        if not pairs:
            log.warning("%s: no label map, skipped", path)
            continue
        for dataset, file in pairs:
            alignment = resolve_alignment(dataset, config, registry, space)
            labels, affine = _read_labels(file)
            voxel_ml = float(np.prod(_spacing(affine))) / 1000.0
            classes = [c.reference_values for c in alignment.classes]
            counts = np.bincount(remap_to_classes(labels, classes).ravel(), minlength=len(classes) + 1)
            per_volume.append({c.name: counts[k] * voxel_ml for k, c in enumerate(alignment.classes, start=1)})
    rows = compute_reference_volumes(per_volume, statistic=statistic, source=f"cohort ({len(per_volume)} label maps)")
    write_reference_volumes(rows, out_path)


def write_scores(rows: list[dict], path: str | Path) -> None:
    """Write score rows as TSV (atomically); floats with 6 decimals, NaN as empty, inf as 'inf'."""
    from cadsflow.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SCORE_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format_value(row.get(k)) for k in SCORE_COLUMNS})


# -- helpers ---------------------------------------------------------------------------------------------------


def _row(volume_id, source, system, structure, status, dice=math.nan, nsd=math.nan, hd=math.nan, hd95=math.nan,
         ref_ml=math.nan, pred_ml=math.nan, table_ml=math.nan) -> dict:  # fmt: skip
    return dict(
        volume_id=volume_id, source=source, system=system, structure=structure, status=status, dice=dice, nsd=nsd,
        hd=hd, hd95=hd95, ref_volume_ml=ref_ml, pred_volume_ml=pred_ml, reference_volume_ml=table_ml,
    )  # fmt: skip


def format_value(value) -> str:
    """A score table cell: floats with 6 decimals, NaN and None empty, infinities spelled out."""
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


def _score_layers(reference, affine, reference_path, layers: PredictionLayers, alignment: SourceAlignment,
                  space: LabelSpace, tolerance_mm: float) -> dict:
    """Raw scores of every class, each on its layer; classes of slice-stripped groups on the annotated slices."""
    spacing = _spacing(affine)
    spec = alignment.class_spec(space)
    by_layer: dict = {}
    for c in alignment.classes:
        by_layer.setdefault(layers.layer_of(c.prediction_structures[0]), []).append(c)
    slices = annotated_slices(reference, alignment)
    unannotated = alignment.unannotated_value
    ref_full = reference if unannotated is None else np.where(reference == unannotated, 0, reference)
    raw = {}
    for key, classes in by_layer.items():
        if key in layers.maps:
            prediction, pred_affine, pred_path = layers.maps[key]
        else:  # the system has no map for these classes: scored as misses on an empty map
            prediction, pred_affine, pred_path = np.zeros(reference.shape, np.uint8), affine, str(reference_path)
        _check_same_grid(reference_path, reference.shape, affine, pred_path, prediction.shape, pred_affine)
        stripped = [c for c in classes if slices is not None and alignment.strips_slices_for(_class_group(c, space))]
        whole = [c for c in classes if c not in stripped]
        if whole:
            raw.update(score_label_maps(ref_full, prediction, spacing, {c.name: spec[c.name] for c in whole},
                                        tolerance_mm))  # fmt: skip
        if stripped:
            (ref, pred), grid_spacing = restrict_to_slices([ref_full, prediction], slices, alignment.slice_axis,
                                                            spacing)  # fmt: skip
            raw.update(score_label_maps(ref, pred, grid_spacing, {c.name: spec[c.name] for c in stripped},
                                        tolerance_mm))  # fmt: skip
    return raw


def _class_group(evaluation_class, space: LabelSpace) -> int:
    return min(space.by_name(s).group for s in evaluation_class.prediction_structures)


def _registry_extra_sets(source: str, registry, space: LabelSpace) -> list[str]:
    if registry is None or source not in registry:
        return []
    from cadsflow.gt.mapping import MAIN_LABEL_SET, label_sets

    return [name for name in label_sets(registry[source], space) if name != MAIN_LABEL_SET]


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
