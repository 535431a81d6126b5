"""Label-count tables: per volume, the voxel count of each of a group's structures in its label map.

Both the oversampling weights (a structure occurs in a volume when its count is > 0) and the head groups' training
subsets (brain voxels, structures present) are decided on these tables, so the label maps are read once per group.
A table is a DataFrame indexed by volume id with one integer column per structure of the group, in label-id order;
on disk a TSV (`volume_id` then the structure names). Label maps are in the group's own label ids (0 = background).

Two ways to build one: read the label maps (label_count_table), or sum the assembly stage's provenance tables
(label_count_table_from_provenance: columns volume_id, group, structure, n_voxels; a structure's rows add up to its
voxels; a line without a structure, a quarantined volume's or an empty map's, adds nothing), which at 22,000 volumes
saves reading every assembled map again.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from cadsflow.atomic import atomic_path
from cadsflow.imageio import read_volume
from cadsflow.labels import LabelSpace, load_label_space

INDEX = "volume_id"
NIFTI_SUFFIXES = (".nii.gz", ".nii")
PROVENANCE_COLUMNS = ("volume_id", "group", "structure", "n_voxels")  # cadsflow.assembly.provenance's columns


class LabelCountError(ValueError):
    """A label map or a count table does not fit its group; the message names the file and the problem."""


def label_count_table(label_maps: Iterable[str | Path] | Mapping[str, str | Path], group: int,
                      space: LabelSpace | None = None) -> pd.DataFrame:
    """Count every structure of `group` in each label map; volume ids come from the file names (or the mapping)."""
    paths = dict(label_maps) if isinstance(label_maps, Mapping) else _by_volume_id(label_maps)
    label_ids = (space or load_label_space()).group_label_map(group)
    rows = {volume_id: count_labels(read_volume(path).data, label_ids, where=str(path))
            for volume_id, path in sorted(paths.items())}
    return _frame(rows, list(label_ids))


def label_count_table_from_provenance(tables: Iterable[str | Path], group: int, volumes: Iterable[str],
                                      space: LabelSpace | None = None) -> pd.DataFrame:
    """Voxel counts of `group`'s structures in `volumes`, summed from provenance tables (a volume without rows: 0)."""
    names = list((space or load_label_space()).group_label_map(group))
    rows = {volume_id: dict.fromkeys(names, 0) for volume_id in volumes}
    for path in tables:
        for line, row in _provenance_rows(Path(path)):
            if row["volume_id"] not in rows or row["group"] != str(group):
                continue
            if not row["structure"]:  # a volume's quarantine or empty-map line: it names no structure
                if row["n_voxels"] not in ("", "0"):
                    raise LabelCountError(f"{path}:{line}: a line without a structure has {row['n_voxels']} voxels")
                continue
            if row["structure"] not in rows[row["volume_id"]]:
                raise LabelCountError(f"{path}:{line}: {row['structure']!r} is not a structure of group {group}")
            try:
                rows[row["volume_id"]][row["structure"]] += int(row["n_voxels"])
            except ValueError:
                raise LabelCountError(f"{path}:{line}: n_voxels {row['n_voxels']!r} is not an integer") from None
    return _frame(dict(sorted(rows.items())), names)


def count_labels(label_map: np.ndarray, label_ids: Mapping[str, int], where: str = "label map") -> dict[str, int]:
    """Voxels of each structure (name -> label id) in one label map; a value outside 0..max id is an error."""
    values = np.asarray(label_map)
    if values.size and (not np.issubdtype(values.dtype, np.integer)):
        rounded = np.rint(values)
        if not np.array_equal(rounded, values):
            raise LabelCountError(f"{where}: label map holds non-integer values")
        values = rounded.astype(np.int64)
    top = max(label_ids.values(), default=0)
    if values.size and (values.min() < 0 or values.max() > top):
        found = sorted(int(v) for v in np.unique(values) if v < 0 or v > top)
        raise LabelCountError(f"{where}: label values {found} are outside the group's ids 0..{top}")
    counts = np.bincount(values.ravel().astype(np.int64), minlength=top + 1)
    return {name: int(counts[label_id]) for name, label_id in label_ids.items()}


def write_count_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a label-count table as TSV (volume_id, then one column per structure), atomically."""
    with atomic_path(path) as tmp:
        table.rename_axis(INDEX).to_csv(tmp, sep="\t")


def read_count_table(path: str | Path, group: int | None = None, space: LabelSpace | None = None) -> pd.DataFrame:
    """Read a table written by write_count_table; with `group`, check that its columns are that group's structures."""
    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t", dtype={INDEX: str}).set_index(INDEX)
    except (OSError, ValueError, KeyError) as exc:
        raise LabelCountError(f"{path}: cannot read a label-count table ({exc})") from None
    if group is not None:
        expected = list((space or load_label_space()).group_label_map(group))
        if list(table.columns) != expected:
            raise LabelCountError(f"{path}: columns are not group {group}'s structures in label-id order "
                                  f"(missing {sorted(set(expected) - set(table.columns))}, "
                                  f"unexpected {sorted(set(table.columns) - set(expected))})")
    if table.index.duplicated().any():
        raise LabelCountError(f"{path}: volume ids listed twice: {sorted(set(table.index[table.index.duplicated()]))}")
    if not all(np.issubdtype(t, np.integer) for t in table.dtypes) or (table.to_numpy() < 0).any():
        raise LabelCountError(f"{path}: voxel counts must be non-negative integers")
    return table


def volume_id_of(path: str | Path) -> str:
    """The volume id a label map is named after: <volume_id>.nii.gz (the factory's label-map naming)."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise LabelCountError(f"{path}: expected a label map named <volume_id>.nii.gz")


def read_volume_list(path: str | Path) -> list[str]:
    """Volume ids, one per line (what `python -m cadsflow.final subset` writes); blank lines are skipped."""
    try:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise LabelCountError(f"{path}: cannot read the volume list ({exc})") from None


def _provenance_rows(path: Path):
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            missing = [c for c in PROVENANCE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise LabelCountError(f"{path}: not a provenance table (missing columns {missing})")
            yield from enumerate(reader, start=2)
    except OSError as exc:
        raise LabelCountError(f"{path}: cannot read the provenance table ({exc})") from None


def _by_volume_id(paths: Iterable[str | Path]) -> dict[str, Path]:
    by_id: dict[str, Path] = {}
    for path in paths:
        volume_id = volume_id_of(path)
        if volume_id in by_id:
            raise LabelCountError(f"{path}: volume {volume_id} also has the label map {by_id[volume_id]}")
        by_id[volume_id] = Path(path)
    return by_id


def _frame(rows: dict[str, dict[str, int]], columns: list[str]) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(rows, orient="index", columns=columns).astype(np.int64)
    table.index = table.index.astype(str)
    return table.rename_axis(INDEX)
