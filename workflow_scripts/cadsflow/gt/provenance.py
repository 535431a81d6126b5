"""Provenance of label maps: per volume, one row per structure (and per unknown region) saying where it came from.

Columns: structure, group, origin, source_value, n_voxels.
- source_gt: an exact structure copied from the source's label file (in the group map under its own id)
- interpolated: an exact structure of a sparse source, made dense between annotated slices (in the group map)
- registered: a brain-tissue label warped from the atlas by registration (in the group map)
- mapped_union: the source labels several unified structures as one value (e.g. both kidneys); NOT in the group
  map as the structure: those voxels are `ignore` there. n_voxels counts the whole union.
- lesion: a lesion inside the structure (KiTS tumour/cyst, LiTS lesion); `ignore` in the group map
- unannotated / no_unified_counterpart: rows with structure `ignore`: voxels nobody labelled, or a class with no
  unified counterpart; `ignore` in the group map

Later stages read this to let GT override pseudo-labels only where the GT is exact (origin in EXACT_ORIGINS).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from cadsflow.atomic import atomic_path

COLUMNS = ("structure", "group", "origin", "source_value", "n_voxels")
EXACT_ORIGINS = ("source_gt", "interpolated", "registered")
COARSE_ORIGINS = ("mapped_union", "lesion", "unannotated", "no_unified_counterpart")
ORIGINS = EXACT_ORIGINS + COARSE_ORIGINS


@dataclass(frozen=True)
class ProvenanceRow:
    structure: str
    group: int
    origin: str
    source_value: int  # the value in the source's (or atlas') label map
    n_voxels: int

    def __post_init__(self):
        if self.origin not in ORIGINS:
            raise ValueError(f"unknown provenance origin {self.origin!r}; expected one of {ORIGINS}")


def write_provenance(rows: list[ProvenanceRow], path: str | Path) -> None:
    """Write the rows (sorted by group, structure, value) atomically as a TSV."""
    ordered = sorted(rows, key=lambda r: (r.group, r.structure, r.source_value, r.origin))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in ordered:
            writer.writerow([r.structure, r.group, r.origin, r.source_value, r.n_voxels])


def read_provenance(path: str | Path) -> list[ProvenanceRow]:
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: expected provenance columns {COLUMNS}, found {reader.fieldnames}")
        return [
            ProvenanceRow(r["structure"], int(r["group"]), r["origin"], int(r["source_value"]), int(r["n_voxels"]))
            for r in reader
        ]
