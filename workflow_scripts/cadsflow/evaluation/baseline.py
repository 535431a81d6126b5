"""Another system's predictions in the unified label space, so that both systems are scored on the same structures.

A baseline's label table is data: config/baselines/<name>.tsv with columns task (optional; default "total"),
baseline_value, baseline_name, cads_name (empty when the class has no CADS counterpart) and note. A baseline may
predict with several tasks (models), one label map per task and volume: TotalSegmentator's `total` task covers 104
CADS structures, its `heartchambers_highres`, `face`, `head_glands_cavities` and `brain_structures` tasks the heart
chambers, pulmonary artery, face, glands, optic nerves and brainstem: the 118 structures the authors compare (all
167 minus `totalseg_exclude_to_compare` of murong-xu/CADS dataset_utils/bodyparts_labelmaps.py). Within a task,
several baseline classes may map onto one CADS structure (their voxels merge); unmapped classes become background.
A structure is mapped by one task only, so each structure is scored on its task's map (tasks overlap: `total`'s
heart holds the chambers). The structures a baseline covers are the "mutual" structures of the comparison (paper
Results, Table A.8).

Class ids per task are TotalSegmentator's `class_map` (wasserth/TotalSegmentator, totalsegmentator/map_to_binary.py).
A baseline prediction path names the volume's file; with a "{task}" in it, one file per task (those that exist
are read); without, the file is the table's first task.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.evaluation.metrics import integer_labels
from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.paths import CONFIG_DIR
from cadsflow.textio import tsv_rows

BASELINES_DIR = CONFIG_DIR / "baselines"
MAPPING_COLUMNS = ("baseline_value", "baseline_name", "cads_name")
DEFAULT_TASK = "total"  # a table without a task column describes one task
TASK_TOKEN = "{task}"


class BaselineError(ValueError):
    """A baseline mapping or prediction is unusable; the message names the file and the problem."""


@dataclass(frozen=True)
class TaskMapping:
    """One task (model) of a baseline: its label values, their names and the CADS structures they map onto."""

    task: str
    value_to_structure: dict[int, str]  # mapped baseline values only
    baseline_names: dict[int, str]  # every baseline value of the task

    def lookup_table(self, label_space: LabelSpace, top: int) -> np.ndarray:
        """Baseline value -> unified global id (0 for unmapped), for values 0..max(top, largest mapped value)."""
        size = max([top, *self.value_to_structure]) + 1
        lut = np.zeros(size, dtype=np.uint8 if len(label_space.structures) < 256 else np.uint16)
        for value, structure in self.value_to_structure.items():
            lut[value] = label_space.by_name(structure).global_id
        return lut


@dataclass(frozen=True)
class BaselineMapping:
    name: str
    path: str
    tasks: dict[str, TaskMapping]  # in table order; the first is the primary task

    @property
    def primary_task(self) -> str:
        return next(iter(self.tasks))

    @property
    def value_to_structure(self) -> dict[int, str]:
        """The primary task's mapped values."""
        return self.tasks[self.primary_task].value_to_structure

    @property
    def baseline_names(self) -> dict[int, str]:
        """The primary task's class names."""
        return self.tasks[self.primary_task].baseline_names

    @property
    def covered_structures(self) -> frozenset[str]:
        """Every CADS structure some task maps onto."""
        return self.covered_by(self.tasks)

    def covered_by(self, tasks) -> frozenset[str]:
        """The CADS structures that the given tasks map onto."""
        return frozenset(s for t in tasks for s in self.tasks[t].value_to_structure.values())

    def task_of(self, structure: str) -> str | None:
        """The task that predicts a CADS structure (None if no task maps it)."""
        return next((t for t, m in self.tasks.items() if structure in m.value_to_structure.values()), None)

    def lookup_table(self, label_space: LabelSpace, top: int) -> np.ndarray:
        return self.tasks[self.primary_task].lookup_table(label_space, top)


def baseline_mapping_path(name: str) -> Path:
    return BASELINES_DIR / f"{name}.tsv"


def load_baseline_mapping(path: str | Path, label_space: LabelSpace | None = None) -> BaselineMapping:
    """Read and check a mapping table: values unique per task, CADS names known, each structure from one task."""
    path = Path(path)
    space = label_space or load_label_space()
    rows = tsv_rows(path, MAPPING_COLUMNS, "the baseline mapping", BaselineError)
    mapped: dict[str, dict[int, str]] = {}
    names: dict[str, dict[int, str]] = {}
    owner: dict[str, str] = {}
    for line_no, row in rows:
        task = (row.get("task") or DEFAULT_TASK).strip()
        try:
            value = int(row["baseline_value"])
        except ValueError:
            raise BaselineError(
                f"{path}:{line_no}: baseline_value {row['baseline_value']!r} is not an integer"
            ) from None
        task_names = names.setdefault(task, {})
        mapped.setdefault(task, {})
        if value <= 0 or value in task_names:
            raise BaselineError(
                f"{path}:{line_no}: baseline value {value} of task {task!r} is not positive or appears twice"
            )
        task_names[value] = row["baseline_name"].strip()
        target = (row["cads_name"] or "").strip()
        if target:
            try:
                space.by_name(target)
            except KeyError:
                raise BaselineError(f"{path}:{line_no}: {target!r} is not a unified structure name") from None
            if owner.setdefault(target, task) != task:
                raise BaselineError(
                    f"{path}:{line_no}: {target!r} is mapped by tasks {owner[target]!r} and {task!r}; map each "
                    "structure from one task"
                )
            mapped[task][value] = target
    if not names:
        raise BaselineError(f"{path}: the mapping lists no baseline class")
    tasks = {t: TaskMapping(t, mapped[t], names[t]) for t in names}
    return BaselineMapping(path.stem, str(path), tasks)


def to_unified(
    labels: np.ndarray, mapping: BaselineMapping, label_space: LabelSpace | None = None, task: str | None = None
) -> np.ndarray:
    """One task's baseline label map with unified global ids (unmapped classes become background)."""
    space = label_space or load_label_space()
    task = task or mapping.primary_task
    if task not in mapping.tasks:
        raise BaselineError(f"{mapping.path}: no task {task!r} (tasks: {list(mapping.tasks)})")
    table = mapping.tasks[task]
    try:
        labels = integer_labels(labels)
    except ValueError as exc:
        raise BaselineError(f"{mapping.path}: baseline {exc}") from None
    top = int(labels.max()) if labels.size else 0
    unknown = sorted(set(np.unique(labels).tolist()) - set(table.baseline_names) - {0})
    if unknown:
        raise BaselineError(
            f"baseline label map holds values {unknown[:10]} that {mapping.path} does not list for task {task!r}: "
            "wrong baseline table or task?"
        )
    return table.lookup_table(space, top)[labels]


def baseline_task_files(path: str | Path, mapping: BaselineMapping) -> dict[str, str]:
    """The existing files of one volume's baseline prediction, by task (see module docstring)."""
    path = str(path)
    if TASK_TOKEN not in path:
        return {mapping.primary_task: path}
    files = {task: path.replace(TASK_TOKEN, task) for task in mapping.tasks}
    return {task: f for task, f in files.items() if Path(f).exists()}


def import_baseline(
    in_path: str | Path,
    out_path: str | Path,
    mapping: BaselineMapping,
    label_space: LabelSpace | None = None,
    task: str | None = None,
) -> None:
    """Read one task's baseline prediction (NIfTI), map it to unified ids and write it atomically on the same grid."""
    import nibabel as nib

    from cadsflow.atomic import atomic_path

    try:
        img = nib.load(str(in_path))
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise BaselineError(f"{in_path}: cannot read the baseline prediction ({type(exc).__name__}: {exc})") from exc
    try:
        unified = to_unified(data, mapping, label_space, task)
    except BaselineError as exc:
        raise BaselineError(f"{in_path}: {exc}") from None
    out = nib.Nifti1Image(unified, img.affine)
    out.set_data_dtype(unified.dtype)
    with atomic_path(out_path) as tmp:
        nib.save(out, str(tmp))
