"""A group's training set as a standard nnU-Net v2 raw dataset: <nnUNet_raw>/Dataset<G>_<Name>/.

    imagesTr/<volume_id>_0000.nii.gz   the standardized CT (hard link to results/standardized/..., copy across devices)
    labelsTr/<volume_id>.nii.gz        the volume's group map (hard link to results/gt/{volume_id}/group_<G>.nii.gz)
    dataset.json                       channel_names {"0": "CT"}, labels (background 0, the group's structures by
                                       label_id_in_group, "ignore" = n+1 when any case has unknown voxels),
                                       numTraining, file_ending, overwrite_image_reader_writer
    cads_cases.tsv                     case -> volume_id, source, exact structures present (provenance of the labels
                                       is results/gt/{volume_id}/provenance.tsv)

Every structure of the group is listed in dataset.json even if no training source labels it. The reader is
NibabelIO: standardized affines keep scale and shear (Online Methods 1.2), which SimpleITK's direction cosines
cannot represent.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


from cadsflow.gt.mapping import IGNORE_NAME, ignore_label
from cadsflow.gt.provenance import COARSE_ORIGINS, EXACT_ORIGINS, read_provenance
from cadsflow.gt.training import GroupTraining
from cadsflow.labels import LabelSpace, load_label_space

FILE_ENDING = ".nii.gz"
READER_WRITER = "NibabelIO"
CHANNEL_NAMES = {"0": "CT"}

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A group dataset cannot be built; the message names the dataset, the volume and the problem."""


@dataclass(frozen=True)
class CandidateVolume:
    volume_id: str
    source: str
    standardized_dir: str
    gt_dir: str


def write_group_dataset(
    training: GroupTraining, candidates: list[CandidateVolume], dataset_dir: str | Path, space: LabelSpace | None = None
) -> dict:
    """Build the dataset folder from the candidates that have a map of this group; return dataset.json.

    The parts are built under a hidden temporary folder inside `dataset_dir` and moved into place, dataset.json
    last: downstream rules take dataset.json as the sign that the dataset is complete."""
    space = space or load_label_space()
    group = training.group
    cases = [c for c in candidates if _has_group_map(c, group)]
    if not cases:
        raise DatasetError(
            f"{training.dataset_name}: none of {len(candidates)} candidate volumes (sources "
            f"{list(training.sources)}) has a group_{group} label map; nothing to train on"
        )
    for c in candidates:
        if c not in cases:
            log.info("%s: %s has no group_%d map (see %s/record.json); left out", training.dataset_name,
                     c.volume_id, group, c.gt_dir)
    with dataset_parts(dataset_dir) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        has_ignore = False
        table = []
        for c in cases:
            label = Path(c.gt_dir) / f"group_{group}.nii.gz"
            image = Path(c.standardized_dir) / "image.nii.gz"
            link_or_copy(image, tmp / "imagesTr" / f"{c.volume_id}_0000{FILE_ENDING}")
            link_or_copy(label, tmp / "labelsTr" / f"{c.volume_id}{FILE_ENDING}")
            rows = [r for r in read_provenance(Path(c.gt_dir) / "provenance.tsv") if r.group == group and r.n_voxels]
            has_ignore |= any(r.origin in COARSE_ORIGINS for r in rows)  # provenance says so: no need to read maps
            exact = sorted({r.structure for r in rows if r.origin in EXACT_ORIGINS})
            table.append((c.volume_id, c.volume_id, c.source, exact))
        spec = dataset_json(group, space, len(cases), has_ignore)
        write_cases(table, tmp / "cads_cases.tsv")
        (tmp / "dataset.json").write_text(json.dumps(spec, indent=1))
    _log_coverage(training, table, space)
    return spec


def dataset_json(group: int, space: LabelSpace, num_training: int, with_ignore: bool) -> dict:
    labels = {"background": 0, **dict(sorted(space.group_label_map(group).items(), key=lambda kv: kv[1]))}
    if with_ignore:
        labels[IGNORE_NAME] = ignore_label(group, space)
    return {
        "channel_names": dict(CHANNEL_NAMES),
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
        "overwrite_image_reader_writer": READER_WRITER,
    }


def coverage(table, group: int, space: LabelSpace) -> dict[str, dict[str, int]]:
    """Per source: number of cases in which each of the group's structures is labelled exactly."""
    out: dict[str, dict[str, int]] = {}
    for _, _, source, structures in table:
        counts = out.setdefault(source, {name: 0 for name in space.group_label_map(group)})
        for name in structures:
            counts[name] += 1
    return out


def _has_group_map(c: CandidateVolume, group: int) -> bool:
    record_path = Path(c.gt_dir) / "record.json"
    if not record_path.is_file():
        raise DatasetError(f"volume {c.volume_id}: {record_path} missing; run the gt stage first")
    record = json.loads(record_path.read_text())
    return record.get("status") == "ok" and group in record.get("groups", [])


PARTS = ("imagesTr", "labelsTr", "cads_cases.tsv", "dataset.json")  # in the order they are moved into place


@contextmanager
def dataset_parts(dataset_dir: str | Path, parts: tuple[str, ...] = PARTS):
    """A temporary folder inside `dataset_dir` whose `parts` replace the dataset's own, in order, on success (a
    killed export leaves the previous dataset whole); shared by every stage that exports an nnU-Net dataset."""
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build.", dir=dataset_dir))
    try:
        yield tmp
        for part in parts:
            final = dataset_dir / part
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(tmp / part, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link `src` to `dst` (a copy across file systems); DatasetError naming `src` when it is missing."""
    if not src.is_file():
        raise DatasetError(f"{src}: missing; expected it for {dst.name}")
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def write_cases(table, path: Path) -> None:
    """A dataset's cads_cases.tsv: per nnU-Net case its volume, source and the structures it labels exactly."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["case", "volume_id", "source", "exact_structures"])
        for case, volume_id, source, structures in table:
            writer.writerow([case, volume_id, source, ",".join(structures)])


def _log_coverage(training: GroupTraining, table, space: LabelSpace) -> None:
    for source, counts in coverage(table, training.group, space).items():
        missing = [n for n, k in counts.items() if k == 0]
        if missing:
            log.warning(
                "%s: source %s labels none of %s; nnU-Net learns them as background from its cases",
                training.dataset_name, source, missing,
            )
