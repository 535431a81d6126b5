"""Provenance of an assembled label map: per structure, where its voxels came from and how many there are.

Columns: volume_id, group, structure, origin, n_voxels, ml.
- origin `ground_truth`: the volume's own exact ground truth (results/gt/.../provenance.tsv, EXACT_ORIGINS);
- origin = a flavor name (GT, Pseudo, Shape): that flavor model's prediction, chosen by the ranking;
- origin `rib_repair`: voxels whose label the rib refinement (Online Methods 3.2) set;
- origin `quarantined`: the volume was quarantined at standardization (or failed there): one line per group, with
  no structure, no voxels and the reason in `note`, and no map;
- origin `empty`: the assembled map holds no labelled voxel (one line, no structure), so every assembled map has
  at least one line and the card can count the volumes.

The merge takes each structure from exactly one source (one flavor or the ground truth), so a structure has one
row, plus a `rib_repair` row where the refinement changed voxels to it. The counts of a map's rows add up to its
labelled voxels; `ml` is n_voxels times the voxel volume, so the dataset card needs no image.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.atomic import atomic_path

COLUMNS = ("volume_id", "group", "structure", "origin", "n_voxels", "ml", "note")
GROUND_TRUTH = "ground_truth"
RIB_REPAIR = "rib_repair"
QUARANTINED = "quarantined"
EMPTY = "empty"


@dataclass(frozen=True)
class AssemblyRow:
    volume_id: str
    group: int
    structure: str
    origin: str  # GROUND_TRUTH, a flavor name, RIB_REPAIR, or QUARANTINED
    n_voxels: int
    ml: float
    note: str = ""  # the reason of a QUARANTINED line

    @property
    def assembled(self) -> bool:
        """A line of an assembled map (not a quarantine line)."""
        return self.origin != QUARANTINED

    @property
    def has_structure(self) -> bool:
        """A structure's voxels (not a quarantine or empty-map line)."""
        return self.origin not in (QUARANTINED, EMPTY)


def quarantine_row(volume_id: str, group: int, reason: str) -> AssemblyRow:
    """The line that says a volume has no assembled map of `group` because standardization refused it."""
    return AssemblyRow(volume_id, group, "", QUARANTINED, 0, 0.0, _one_line(reason) or QUARANTINED)


def provenance_rows(
    labels: np.ndarray,
    label_ids: Mapping[str, int],
    origin_of: Mapping[str, str],
    *,
    volume_id: str = "",
    group: int = 0,
    voxel_ml: float = 0.0,
    before_repair: np.ndarray | None = None,
) -> list[AssemblyRow]:
    """Rows for every structure present in `labels`: its source's voxels, and rib_repair voxels where the labels
    differ from `before_repair` (the map before the refinement). Every labelled voxel is counted exactly once; a
    map without labelled voxels gets one `empty` line."""
    names = {i: n for n, i in label_ids.items()}
    unknown = sorted(set(np.unique(labels).tolist()) - set(names) - {0})
    if unknown:
        raise ValueError(f"volume {volume_id!r} group {group}: label values {unknown} are not in the group's label map")
    n = max(names, default=0) + 1
    total = np.bincount(labels.ravel(), minlength=n)
    repaired = np.zeros(n, dtype=np.int64)
    if before_repair is not None:
        changed = labels != before_repair
        repaired = np.bincount(labels[changed].ravel(), minlength=n)
    rows = []
    for label_id in sorted(names):
        name = names[label_id]
        kept = int(total[label_id] - repaired[label_id])
        if kept:
            if name not in origin_of:
                raise ValueError(f"volume {volume_id!r} group {group}: structure {name!r} has voxels but no origin")
            rows.append(AssemblyRow(volume_id, group, name, origin_of[name], kept, kept * voxel_ml))
        if repaired[label_id]:
            rows.append(AssemblyRow(volume_id, group, name, RIB_REPAIR, int(repaired[label_id]),
                                    int(repaired[label_id]) * voxel_ml))
    return rows or [AssemblyRow(volume_id, group, "", EMPTY, 0, 0.0, "no labelled voxels")]


def write_provenance(rows: Iterable[AssemblyRow], path: str | Path) -> None:
    """Write the rows (sorted by volume, group, structure, origin) atomically as a TSV."""
    ordered = sorted(rows, key=lambda r: (r.volume_id, r.group, r.structure, r.origin))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in ordered:
            writer.writerow([r.volume_id, r.group, r.structure, r.origin, r.n_voxels, f"{r.ml:.6g}",
                             _one_line(r.note)])


def read_provenance(path: str | Path) -> list[AssemblyRow]:
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: expected assembly provenance columns {COLUMNS}, found {reader.fieldnames}")
        try:
            return [AssemblyRow(r["volume_id"], int(r["group"]), r["structure"], r["origin"], int(r["n_voxels"]),
                                float(r["ml"]), r["note"] or "") for r in reader]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed row ({exc})") from None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
