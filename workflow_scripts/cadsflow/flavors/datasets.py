"""The flavors' training sets as nnU-Net raw datasets (Online Methods 2.3), and the scaled images they share.

Images. Every flavor model sees images scaled from their 5th to 95th percentile to [0, 1] (Online Methods 6.1;
cadsflow.flavors.intensity). They are written once per standardize batch (`write_flavor_images`), beside an index
(`index.tsv`: volume_id, source, split, status, reason) that says which volumes of the batch have one (status ok)
and which split each belongs to, and every flavor dataset links them (27 datasets at 22,022 volumes never rescale a
CT twice). Quarantined or failed volumes of the standardized record get no image, only their index row.

Training sets, per group (names from config/flavors.yaml `flavors`; what each means is `TRAINING_SETS`):

- GT: the specialist's dataset (the gt stage's export: its cases, its label maps with `ignore` where a label is
  unknown, its dataset.json), with the scaled images;
- Pseudo: every volume whose pseudo-label of the group is `ok` in the shard reports (head groups: the brain gate
  passed; quarantined and failed volumes are not ok) and whose split is not the held-out one (the validation and
  test split). With `gt_root` given (config flavors.pseudo_gt_override), a volume's own ground-truth map of the
  group replaces the pseudo-label for the structures that map annotates exactly (`override_with_ground_truth`);
- Shape: Pseudo minus the volumes shape QC excluded (results/shape_qc/{group}/excluded.tsv).

A dataset folder holds imagesTr/ and labelsTr/ (hard links where nothing changes; a merged map is written),
dataset.json, `cads_cases.tsv` (case, volume_id, source, labels: gt | pseudo | pseudo+gt) and `cads_gt_share.tsv`
(per structure: training volumes holding it, how many of those took it from ground truth, the share), which the
ranking reads for the assembly's tie-break (Online Methods 2.5: "structures with higher proportions of GT
annotations in their respective training data"). The parts are built under a temporary folder and moved into
place, dataset.json last.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.atomic import atomic_dir, atomic_path
from cadsflow.gt.mapping import ignore_label
from cadsflow.gt.nnunet_dataset import FILE_ENDING, DatasetError, dataset_json, dataset_parts, link_or_copy
from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.layout import MapIndex, job_folder, map_path

INDEX_NAME = "index.tsv"  # beside the scaled images of a batch
INDEX_COLUMNS = ("volume_id", "source", "split", "status", "reason")
CASES_NAME = "cads_cases.tsv"
CASES_COLUMNS = ("case", "volume_id", "source", "labels")
GT_SHARE_NAME = "cads_gt_share.tsv"
GT_SHARE_COLUMNS = ("structure", "n_volumes_with_structure", "n_from_gt", "gt_share")
OK = "ok"  # the status of a usable standardized volume and of a usable pseudo-label (cadsflow.pseudolabel.infer.OK)

GROUND_TRUTH, PSEUDO, SHAPE = "ground_truth", "pseudo", "shape"
# Which training set each configured flavor name builds (Online Methods 2.3: GT-, Pseudo- and Shape-flavor)
TRAINING_SETS = {"GT": GROUND_TRUTH, "Pseudo": PSEUDO, "Shape": SHAPE}
# How a case's label map was made (cads_cases.tsv `labels`)
FROM_GT, FROM_PSEUDO, FROM_PSEUDO_AND_GT = "gt", "pseudo", "pseudo+gt"
PARTS = ("imagesTr", "labelsTr", CASES_NAME, GT_SHARE_NAME, "dataset.json")  # moved into place in this order

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScaledImage:
    """One row of a batch's image index, with where its scaled image is (None unless status is ok)."""

    volume_id: str
    source: str
    split: str
    status: str
    reason: str
    batch: str  # the standardize batch (the name of the index's folder)
    image: Path | None


@dataclass(frozen=True)
class Case:
    """One training case of a flavor dataset."""

    volume_id: str
    source: str
    image: Path  # the scaled image
    label: Path  # the group map: the specialist's ground truth (GT) or the pseudo-label (Pseudo, Shape)
    label_kind: str  # FROM_GT or FROM_PSEUDO: what `label` is
    gt_map: Path | None = None  # the volume's own ground truth, replacing the pseudo-label's structures it annotates

    @property
    def labels(self) -> str:
        """How the case's training label map is made (cads_cases.tsv `labels`)."""
        return FROM_PSEUDO_AND_GT if self.gt_map is not None else self.label_kind


@dataclass(frozen=True)
class Selection:
    """The cases of a training set and what left the others out (the message when none is left)."""

    cases: list[Case]
    left_out: dict[str, int]

    def why_empty(self) -> str:
        parts = [f"{n} {why}" for why, n in self.left_out.items() if n]
        return "; ".join(parts) if parts else "no candidate volume at all"


# -- images -------------------------------------------------------------------------------------------------------


def write_flavor_images(standardized_batch: str | Path, out_dir: str | Path,
                        percentiles: tuple[float, float]) -> list[ScaledImage]:
    """Scale every ok volume of a standardized batch folder into `out_dir` (<volume_id>.nii.gz) and write the
    batch's index; the folder appears complete or not at all (built under a temporary name)."""
    from cadsflow.flavors.intensity import write_scaled_image

    standardized_batch, out_dir = Path(standardized_batch), Path(out_dir)
    rows = []
    with atomic_dir(out_dir) as tmp:
        for volume_dir in sorted(p for p in standardized_batch.iterdir() if p.is_dir()):
            record = _read_json(volume_dir / "record.json", f"volume {volume_dir.name}")
            status = str(record.get("status", ""))
            row = ScaledImage(volume_dir.name, str(record.get("source", "")), str(record.get("split", "")), status,
                              _one_line(str(record.get("reason") or "")), out_dir.name, None)
            if status == OK:
                write_scaled_image(volume_dir / "image.nii.gz", tmp / f"{row.volume_id}{FILE_ENDING}", percentiles)
                row = dataclasses.replace(row, image=out_dir / f"{row.volume_id}{FILE_ENDING}")
            else:
                log.info("%s: standardized status %r (%s); no scaled image", row.volume_id, status, row.reason)
            rows.append(row)
        _write_tsv(tmp / INDEX_NAME, INDEX_COLUMNS, [[getattr(r, k) for k in INDEX_COLUMNS] for r in rows])
    return rows


def read_image_index(image_dirs: Iterable[str | Path]) -> dict[str, ScaledImage]:
    """volume_id -> its row, over the index of every given batch folder (results/flavors/images/{batch})."""
    out: dict[str, ScaledImage] = {}
    for folder in map(Path, image_dirs):
        for r in _read_tsv(folder / INDEX_NAME, INDEX_COLUMNS):
            image = folder / f"{r['volume_id']}{FILE_ENDING}" if r["status"] == OK else None
            out[r["volume_id"]] = ScaledImage(r["volume_id"], r["source"], r["split"], r["status"], r["reason"],
                                              folder.name, image)
    return out


# -- training sets ------------------------------------------------------------------------------------------------


def ground_truth_cases(specialist_dataset: str | Path, images: dict[str, ScaledImage]) -> Selection:
    """The specialist's cases (its cads_cases.tsv), with the specialist's label maps and the scaled images."""
    specialist_dataset = Path(specialist_dataset)
    cases = []
    for r in _read_tsv(specialist_dataset / CASES_NAME, ("case", "volume_id", "source")):
        image = _scaled_image(images, r["volume_id"], f"{specialist_dataset.name} (the specialist's dataset)")
        cases.append(Case(r["volume_id"], r["source"], image,
                          specialist_dataset / "labelsTr" / f"{r['case']}{FILE_ENDING}", FROM_GT))
    return Selection(cases, {})


def pseudo_cases(group: int, reports: Iterable[str | Path], pseudo_dir: str | Path | Iterable[str | Path] | None,
                 images: dict[str, ScaledImage], held_out_split: str, gt_root: str | Path | None = None) -> Selection:
    """Every volume whose pseudo-label of `group` is ok and whose split is not `held_out_split`, in report order.

    A report's maps are in the shard's folder beside it (cadsflow.layout.job_folder: shard_k.tsv -> shard_k/);
    `pseudo_dir`, a folder or folders of maps, overrides that (found through one cadsflow.layout.MapIndex).
    With `gt_root` (results/gt: <batch>/<volume_id>/group_<G>.nii.gz), a volume with a ground-truth map of the group
    carries it as `gt_map` (the export overrides the pseudo-label with it)."""
    from cadsflow.pseudolabel.infer import read_report

    index = MapIndex.of(pseudo_dir)
    cases, not_ok, held_out = [], 0, 0
    for report in map(Path, reports):
        for outcome in read_report(report):
            if outcome.status != OK:
                not_ok += 1
                continue
            image = _scaled_image(images, outcome.volume_id, f"pseudo-label report {report}")
            scaled = images[outcome.volume_id]
            if scaled.split == held_out_split:
                held_out += 1
                continue
            gt_map = None if gt_root is None else _ground_truth_map(Path(gt_root), scaled, group)
            cases.append(Case(outcome.volume_id, scaled.source, image,
                              _pseudo_map(index, report, outcome.volume_id), FROM_PSEUDO, gt_map))
    return Selection(cases, {"pseudo-labels not ok (quarantined, failed, gated out)": not_ok,
                             f"volumes of the held-out split {held_out_split!r}": held_out})


def _pseudo_map(index: MapIndex | None, report: Path, volume_id: str) -> Path:
    return map_path(job_folder(report), volume_id) if index is None else index.path(volume_id)


def shape_cases(pseudo: Selection, excluded_table: str | Path) -> Selection:
    """The Pseudo set minus the volumes of shape QC's exclusion table (column volume_id)."""
    excluded = {r["volume_id"] for r in _read_tsv(excluded_table, ("volume_id",))}
    kept = [c for c in pseudo.cases if c.volume_id not in excluded]
    return Selection(kept, {**pseudo.left_out,
                            f"excluded by shape QC ({excluded_table})": len(pseudo.cases) - len(kept)})


def select_cases(training_set: str, group: int, images: dict[str, ScaledImage], *,
                 specialist_dataset: str | Path | None = None, reports: Iterable[str | Path] = (),
                 pseudo_dir: str | Path | Iterable[str | Path] | None = None, held_out_split: str = "test",
                 gt_root: str | Path | None = None, excluded: str | Path | None = None) -> Selection:
    """The cases of one of TRAINING_SETS' values; raise naming the missing input when the set needs one.
    Pseudo-label maps are read from the shard folders beside `reports` unless `pseudo_dir` names folders."""
    reports = list(reports)
    needs = {GROUND_TRUTH: {"specialist_dataset": specialist_dataset},
             PSEUDO: {"reports": reports or None},
             SHAPE: {"reports": reports or None, "excluded": excluded}}
    if training_set not in needs:
        raise DatasetError(f"unknown training set {training_set!r}; expected one of {sorted(needs)}")
    missing = [k for k, v in needs[training_set].items() if v is None]
    if missing:
        raise DatasetError(f"group {group}: the {training_set} training set needs {', '.join(missing)}")
    if training_set == GROUND_TRUTH:
        return ground_truth_cases(specialist_dataset, images)
    pseudo = pseudo_cases(group, reports, pseudo_dir, images, held_out_split, gt_root)
    return pseudo if training_set == PSEUDO else shape_cases(pseudo, excluded)


# -- the dataset folder -------------------------------------------------------------------------------------------


def write_flavor_dataset(group: int, flavor: str, selection: Selection, dataset_dir: str | Path,
                         specialist_dataset_json: str | Path | None = None, space: LabelSpace | None = None) -> dict:
    """Write the flavor's nnU-Net raw dataset folder from the selected cases; return its dataset.json.

    dataset.json: the specialist's (GT: same labels, `ignore` included, same numTraining) when given, else the
    group's labels without `ignore` (pseudo-labels and the exact structures of ground truth leave no voxel unknown).
    Raises DatasetError naming group, flavor and why when no case is left."""
    space = space or load_label_space()
    dataset_dir = Path(dataset_dir)
    if not selection.cases:
        raise DatasetError(f"group {group}, flavor {flavor}: no training volume left for {dataset_dir.name} "
                           f"({selection.why_empty()}); nothing to train on")
    n_structures = len(space.group(group))
    names = {label: name for name, label in space.group_label_map(group).items()}
    present = np.zeros(n_structures + 1, dtype=np.int64)
    from_gt = np.zeros(n_structures + 1, dtype=np.int64)
    with dataset_parts(dataset_dir, PARTS) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for case in selection.cases:
            link_or_copy(case.image, tmp / "imagesTr" / f"{case.volume_id}_0000{FILE_ENDING}")
            out = tmp / "labelsTr" / f"{case.volume_id}{FILE_ENDING}"
            counts, gt_ids = _write_label(case, out, group, n_structures, space)
            present += counts[: n_structures + 1] > 0
            from_gt[gt_ids] += counts[gt_ids] > 0
        _write_tsv(tmp / CASES_NAME, CASES_COLUMNS,
                   [[c.volume_id, c.volume_id, c.source, c.labels] for c in selection.cases])
        _write_tsv(tmp / GT_SHARE_NAME, GT_SHARE_COLUMNS,
                   [[names[i], present[i], from_gt[i], _share(from_gt[i], present[i])]
                    for i in range(1, n_structures + 1)])
        spec = _dataset_json(group, len(selection.cases), space, specialist_dataset_json)
        (tmp / "dataset.json").write_text(json.dumps(spec, indent=1))
    log.info("group %s, flavor %s: %d training volumes (%s)", group, flavor, len(selection.cases),
             ", ".join(f"{n} {why}" for why, n in selection.left_out.items()) or "none left out")
    return spec


def override_with_ground_truth(pseudo: np.ndarray, gt: np.ndarray, n_structures: int) -> tuple[np.ndarray, list[int]]:
    """The pseudo-label with the structures that the ground-truth map labels exactly taken from the ground truth.

    A structure is annotated when its id (1..n_structures) occurs in `gt` (the gt stage writes only exact
    structures under their ids; unions, lesions and unlabelled voxels are `ignore` = n_structures + 1). For each
    annotated structure its pseudo-label voxels become background and its ground-truth voxels take its id (over
    whatever the pseudo-label said there). Voxels that are `ignore` in the ground truth keep the pseudo-label, and so
    do the structures it does not annotate. Returns the map and the annotated ids.
    """
    if pseudo.shape != gt.shape:
        raise DatasetError(f"pseudo-label shape {pseudo.shape} differs from the ground truth's {gt.shape}")
    ids = [int(i) for i in np.unique(gt) if 1 <= i <= n_structures]
    out = pseudo.copy()
    out[np.isin(pseudo, ids)] = 0
    annotated = np.isin(gt, ids)
    out[annotated] = gt[annotated]
    return out, ids


def read_gt_share(path: str | Path) -> list[dict[str, str]]:
    """A dataset's cads_gt_share.tsv, as rows of strings (structure, n_volumes_with_structure, n_from_gt, gt_share)."""
    return _read_tsv(path, GT_SHARE_COLUMNS)


# -- helpers ------------------------------------------------------------------------------------------------------


def _write_label(case: Case, out: Path, group: int, n_structures: int, space: LabelSpace):
    """Link or (with a ground-truth override) write the case's label map; its voxel counts per id and the ids that
    came from ground truth."""
    from cadsflow.imageio import read_volume, save_nifti

    where = f"group {group}, volume {case.volume_id}"
    label = read_volume(case.label)
    data = np.asarray(label.data)
    allowed = n_structures + 1 if case.label_kind == FROM_GT else n_structures  # GT maps may hold `ignore`
    if data.dtype.kind not in "iu" or (data.size and (int(data.min()) < 0 or int(data.max()) > allowed)):
        raise DatasetError(f"{where}: {case.label} holds values outside 0..{allowed} (dtype {data.dtype})")
    if case.gt_map is None:
        link_or_copy(case.label, out)
        counts = np.bincount(data.ravel(), minlength=n_structures + 2)
        ids = list(range(1, n_structures + 1)) if case.label_kind == FROM_GT else []
        return counts, ids
    gt = read_volume(case.gt_map)
    if gt.data.shape != data.shape or not np.allclose(gt.affine, label.affine, atol=1e-3):
        raise DatasetError(f"{where}: ground truth {case.gt_map} (shape {gt.data.shape}) is not on the "
                           f"pseudo-label's grid {case.label} (shape {data.shape})")
    merged, ids = override_with_ground_truth(data.astype(np.uint8), np.asarray(gt.data).astype(np.uint8),
                                             n_structures)
    save_nifti(merged, label.affine, out)
    return np.bincount(merged.ravel(), minlength=n_structures + 2), ids


def _dataset_json(group: int, n: int, space: LabelSpace, specialist_json) -> dict:
    if specialist_json is None:
        return dataset_json(group, space, n, with_ignore=False)
    spec = _read_json(Path(specialist_json), "the specialist's dataset")
    if spec.get("numTraining") != n:
        raise DatasetError(f"{specialist_json}: numTraining {spec.get('numTraining')} but its cads_cases.tsv lists "
                           f"{n} cases; rerun the gt stage's export")
    if "ignore" in spec.get("labels", {}) and spec["labels"]["ignore"] != ignore_label(group, space):
        raise DatasetError(f"{specialist_json}: ignore label {spec['labels']['ignore']} differs from the label "
                           f"space's {ignore_label(group, space)}")
    return spec


def _ground_truth_map(gt_root: Path, scaled: ScaledImage, group: int) -> Path | None:
    """The volume's ground-truth map of the group when the gt stage made one (its record says ok and the group)."""
    folder = gt_root / scaled.batch / scaled.volume_id
    record_path = folder / "record.json"
    if not record_path.is_file():
        return None
    record = _read_json(record_path, f"volume {scaled.volume_id}")
    if record.get("status") != OK or group not in record.get("groups", []):
        return None
    path = folder / f"group_{group}{FILE_ENDING}"
    if not path.is_file():
        raise DatasetError(f"{record_path}: lists group {group} but {path.name} is missing")
    return path


def _scaled_image(images: dict[str, ScaledImage], volume_id: str, where: str) -> Path:
    scaled = images.get(volume_id)
    if scaled is None:
        raise DatasetError(f"volume {volume_id} (from {where}) is in none of the scaled-image indexes given")
    if scaled.image is None:
        raise DatasetError(f"volume {volume_id} (from {where}) has no scaled image: standardized status "
                           f"{scaled.status!r} ({scaled.reason})")
    return scaled.image


def _share(n_gt: int, n: int) -> str:
    """gt_share with four decimals; 0 when no training volume holds the structure."""
    return f"{n_gt / n:.4f}" if n else "0"


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the record of {what} ({exc})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: the record of {what} is not a JSON object")
    return data


def _read_tsv(path: str | Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise DatasetError(f"{path}: missing columns {missing} (has {reader.fieldnames})")
            return list(reader)
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None


def _write_tsv(path: Path, columns, rows) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def _one_line(text: str) -> str:
    return " ".join(text.split())
