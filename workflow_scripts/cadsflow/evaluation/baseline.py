"""Another system's predictions in the unified label space, so that both systems are scored on the same structures.

A baseline's label table is data: config/baselines/<name>.tsv with columns baseline_value, baseline_name,
cads_name (empty when the class has no CADS counterpart) and note. Several baseline classes may map onto one CADS
structure (their voxels merge); unmapped classes become background. The structures a baseline covers are the
"mutual" structures of the comparison (paper Results, Table A.8).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.evaluation.metrics import integer_labels
from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.paths import CONFIG_DIR

BASELINES_DIR = CONFIG_DIR / "baselines"
MAPPING_COLUMNS = ("baseline_value", "baseline_name", "cads_name")


class BaselineError(ValueError):
    """A baseline mapping or prediction is unusable; the message names the file and the problem."""


@dataclass(frozen=True)
class BaselineMapping:
    name: str
    path: str
    value_to_structure: dict[int, str]  # mapped baseline values only
    baseline_names: dict[int, str]  # every baseline value

    @property
    def covered_structures(self) -> frozenset[str]:
        return frozenset(self.value_to_structure.values())

    def lookup_table(self, label_space: LabelSpace, top: int) -> np.ndarray:
        """Baseline value -> unified global id (0 for unmapped), for values 0..max(top, largest mapped value)."""
        size = max([top, *self.value_to_structure]) + 1
        lut = np.zeros(size, dtype=np.uint8 if len(label_space.structures) < 256 else np.uint16)
        for value, structure in self.value_to_structure.items():
            lut[value] = label_space.by_name(structure).global_id
        return lut


def baseline_mapping_path(name: str) -> Path:
    return BASELINES_DIR / f"{name}.tsv"


def load_baseline_mapping(path: str | Path, label_space: LabelSpace | None = None) -> BaselineMapping:
    """Read and check a mapping table: values unique, CADS names known."""
    path = Path(path)
    space = label_space or load_label_space()
    try:
        handle = open(path, newline="")
    except FileNotFoundError:
        raise BaselineError(f"{path}: baseline mapping not found") from None
    with handle:
        reader = csv.DictReader(handle, delimiter="\t")
        missing = [c for c in MAPPING_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise BaselineError(f"{path}: missing columns {missing}")
        mapped, names = {}, {}
        for line_no, row in enumerate(reader, start=2):
            try:
                value = int(row["baseline_value"])
            except ValueError:
                raise BaselineError(
                    f"{path}:{line_no}: baseline_value {row['baseline_value']!r} is not an integer"
                ) from None
            if value <= 0 or value in names:
                raise BaselineError(f"{path}:{line_no}: baseline value {value} is not positive or appears twice")
            names[value] = row["baseline_name"].strip()
            target = (row["cads_name"] or "").strip()
            if target:
                try:
                    space.by_name(target)
                except KeyError:
                    raise BaselineError(f"{path}:{line_no}: {target!r} is not a unified structure name") from None
                mapped[value] = target
    return BaselineMapping(path.stem, str(path), mapped, names)


def to_unified(labels: np.ndarray, mapping: BaselineMapping, label_space: LabelSpace | None = None) -> np.ndarray:
    """A baseline label map with unified global ids (unmapped classes become background)."""
    space = label_space or load_label_space()
    try:
        labels = integer_labels(labels)
    except ValueError as exc:
        raise BaselineError(f"{mapping.path}: baseline {exc}") from None
    top = int(labels.max()) if labels.size else 0
    unknown = sorted(set(np.unique(labels).tolist()) - set(mapping.baseline_names) - {0})
    if unknown:
        raise BaselineError(
            f"baseline label map holds values {unknown[:10]} that {mapping.path} does not list: wrong baseline table?"
        )
    return mapping.lookup_table(space, top)[labels]


def import_baseline(
    in_path: str | Path, out_path: str | Path, mapping: BaselineMapping, label_space: LabelSpace | None = None
) -> None:
    """Read a baseline prediction (NIfTI), map it to unified ids and write it atomically on the same grid."""
    import nibabel as nib

    from cadsflow.atomic import atomic_path

    try:
        img = nib.load(str(in_path))
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise BaselineError(f"{in_path}: cannot read the baseline prediction ({type(exc).__name__}: {exc})") from exc
    try:
        unified = to_unified(data, mapping, label_space)
    except BaselineError as exc:
        raise BaselineError(f"{in_path}: {exc}") from None
    out = nib.Nifti1Image(unified, img.affine)
    out.set_data_dtype(unified.dtype)
    with atomic_path(out_path) as tmp:
        nib.save(out, str(tmp))
