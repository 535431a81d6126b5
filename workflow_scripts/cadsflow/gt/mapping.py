"""A source's label map -> one group's label map (ids 1..n = label_id_in_group), with provenance.

What trains a structure is only what the source labels *exactly*. Everything else the source says about a group's
voxels is uncertain, and becomes nnU-Net's `ignore` label (id n+1, the highest, named "ignore" in dataset.json):
voxels marked ignore give no loss, so the model is neither taught "background" nor the wrong structure there.

| source value kind                       | voxels in a group's map                                    |
|-----------------------------------------|------------------------------------------------------------|
| structure (exact), target in the group  | the target's label_id_in_group                             |
| structure (exact), target elsewhere     | 0: known to be another structure                           |
| union with a target in the group        | ignore: e.g. "kidneys" cannot teach kidney_left vs right   |
| lesion_of a target in the group         | ignore: whether a lesion counts as the organ is definition |
| union / lesion_of with no target there  | 0: known to be another structure                           |
| unannotated (SAROS 255)                 | ignore in every group: nobody looked                       |
| ignore (no unified counterpart)         | ignore in every group: a class we cannot place (L6, uterus)|
| 0 and structures the source never labels| 0: the source's background                                 |

The last row is the partial-label caveat: a source that labels only some of a group's structures teaches the others
as background. The paper trains each group from sources that cover it (TotalSegmentator for groups 1-5); the
dataset builder reports each source's coverage of its group (nnunet_dataset.coverage_table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cadsflow.gt.provenance import ProvenanceRow
from cadsflow.labels import LabelSpace
from cadsflow.sources import LabelValue, RegistryError, Source, parse_label_value

IGNORE_NAME = "ignore"  # nnU-Net v2: a label named "ignore" with the highest id marks unknown voxels
MAIN_LABEL_SET = "main"
MAX_SOURCE_VALUE = 65535  # label values are non-negative integers; larger ones mean a broken label file


class MappingError(ValueError):
    """A label map does not match its source's mapping; the message names the volume/file and the values."""


@dataclass(frozen=True)
class LabelSet:
    """One label file of a source: the main one (label.nii.gz) or an extra set on the same images.

    Extra sets are registry entries under `extra_label_sets: {name: {label_values: ..., mapping_status: ...}}`
    (e.g. the CADS team's OAR annotations on the VISCERAL Gold Corpus); the standardized volume carries them as
    label_<name>.nii.gz.
    """

    name: str
    label_values: dict[int, LabelValue]
    mapping_status: str
    file_name: str

    def require_mapping(self, source_name: str) -> None:
        if self.mapping_status != "complete":
            raise RegistryError(
                f"source {source_name}, label set {self.name}: its label mapping is marked "
                f"'{self.mapping_status}' (TODO: transcribe the source's label table into the registry); "
                "refusing to guess"
            )


def label_sets(source: Source, space: LabelSpace) -> dict[str, LabelSet]:
    """The source's label sets by name; the main set first."""
    sets = {MAIN_LABEL_SET: LabelSet(MAIN_LABEL_SET, dict(source.label_values), source.mapping_status, "label.nii.gz")}
    for name, entry in (source.extra.get("extra_label_sets") or {}).items():
        where = f"source {source.name!r}, extra label set {name!r}: "
        entry = entry or {}
        status = str(entry.get("mapping_status", "complete"))
        if status not in ("complete", "todo"):
            raise RegistryError(f"{where}mapping_status must be 'complete' or 'todo', not {status!r}")
        raw = entry.get("label_values") or {}
        values = {int(v): parse_label_value(where, int(v), spec, space) for v, spec in raw.items()}
        if 0 in values:
            raise RegistryError(f"{where}label value 0 is background and cannot be mapped")
        sets[str(name)] = LabelSet(str(name), values, status, f"label_{name}.nii.gz")
    return sets


def ignore_label(group: int, space: LabelSpace) -> int:
    """The id of `ignore` in a group's label map: one above the group's highest structure id."""
    return len(space.group(group)) + 1


def exact_groups(label_values: dict[int, LabelValue], space: LabelSpace) -> tuple[int, ...]:
    """Groups in which the mapping labels at least one structure exactly (those get a group label map)."""
    return tuple(sorted({space.by_name(v.targets[0]).group for v in label_values.values() if v.kind == "structure"}))


def value_counts(labels: np.ndarray, where: str) -> np.ndarray:
    """Voxel count per label value (index = value); rejects negative or absurdly large values."""
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.array_equal(labels, np.round(labels)):
            labels = labels.astype(np.int64)
        else:
            raise MappingError(f"{where}: label map has non-integer values (dtype {labels.dtype})")
    lo, hi = int(labels.min(initial=0)), int(labels.max(initial=0))
    if lo < 0 or hi > MAX_SOURCE_VALUE:
        raise MappingError(f"{where}: label values must lie in 0..{MAX_SOURCE_VALUE}, found {lo}..{hi}")
    return np.bincount(labels.ravel(), minlength=hi + 1)


def check_known_values(counts: np.ndarray, label_values: dict[int, LabelValue], where: str) -> None:
    present = {int(v) for v in np.flatnonzero(counts)}
    unknown = sorted(present - {0} - set(label_values))
    if unknown:
        raise MappingError(
            f"{where}: label values {unknown} are not in the source's mapping (known: {sorted(label_values)}); "
            "add them to the registry"
        )


def map_to_group(
    labels: np.ndarray,
    label_values: dict[int, LabelValue],
    group: int,
    space: LabelSpace,
    where: str,
    exact_origin: str = "source_gt",
    counts: np.ndarray | None = None,
) -> tuple[np.ndarray, list[ProvenanceRow]]:
    """Map a source label map to `group`'s label map (uint8) and say where each structure came from."""
    counts = value_counts(labels, where) if counts is None else counts
    check_known_values(counts, label_values, where)
    members = space.group_label_map(group)
    ignore = ignore_label(group, space)
    lut = np.zeros(len(counts), dtype=np.uint8)
    rows: list[ProvenanceRow] = []
    for value, spec in sorted(label_values.items()):
        n = int(counts[value]) if value < len(counts) else 0
        if n == 0:
            continue
        in_group = [t for t in spec.targets if t in members]
        if spec.kind == "structure" and in_group:
            lut[value] = members[in_group[0]]
            rows.append(ProvenanceRow(in_group[0], group, exact_origin, value, n))
        elif spec.kind in ("union", "lesion_of") and in_group:
            lut[value] = ignore
            origin = "mapped_union" if spec.kind == "union" else "lesion"
            rows.extend(ProvenanceRow(t, group, origin, value, n) for t in in_group)
        elif spec.kind in ("unannotated", "ignore"):
            lut[value] = ignore
            origin = "unannotated" if spec.kind == "unannotated" else "no_unified_counterpart"
            rows.append(ProvenanceRow(IGNORE_NAME, group, origin, value, n))
    index = labels if labels.dtype.kind in "iu" else labels.astype(np.int64)
    return lut[index], rows
