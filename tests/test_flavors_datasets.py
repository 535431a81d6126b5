"""The flavors' training sets (Online Methods 2.3) exported as nnU-Net raw datasets, on constructed tiny volumes.

One standardize batch of five volumes (train_gt with ground truth, train_unlabelled, test, quarantined, and one whose
head-group pseudo-label was gated out), their pseudo-label report and maps, one ground-truth map and a shape-QC
exclusion: which volumes and which voxels end up in labelsTr is known by construction.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from helpers import REPO, spacing_affine, write_nifti

from cadsflow.flavors.datasets import (
    GROUND_TRUTH,
    PSEUDO,
    SHAPE,
    DatasetError,
    override_with_ground_truth,
    read_gt_share,
    read_image_index,
    select_cases,
    write_flavor_dataset,
    write_flavor_images,
)
from cadsflow.gt.nnunet_dataset import dataset_json
from cadsflow.labels import load_label_space
from cadsflow.specialists.train import read_marker

GROUP = 559  # body regions: 10 structures, ignore = 11
N = 10
IGNORE = 11
SHAPE_ZYX = (12, 10, 8)
AFFINE = spacing_affine((1.5, 1.5, 1.5))
BATCH = "src.0000"


def ramp_ct(offset: int) -> np.ndarray:
    """A CT whose voxel values are offset + 0..959 (its percentiles are known in closed form)."""
    return (np.arange(np.prod(SHAPE_ZYX)).reshape(SHAPE_ZYX) * 1.0 + offset).astype(np.float32)


def box(*slices) -> np.ndarray:
    mask = np.zeros(SHAPE_ZYX, dtype=bool)
    mask[slices] = True
    return mask


# pseudo-label of v_gt: structure 1 in the wrong place (R1), structure 2 (R2); its ground truth: structure 1 at Q1
# (overlapping R2), `ignore` at Q3 (overlapping R2)
R1, R2 = box(slice(0, 3), slice(0, 3), slice(0, 3)), box(slice(5, 10), slice(2, 8), slice(2, 6))
Q1, Q3 = box(slice(4, 7), slice(2, 5), slice(2, 5)), box(slice(8, 11), slice(5, 9), slice(3, 6))
# pseudo-label of v_unl: structures 1 and 3
U1, U3 = box(slice(1, 4), slice(1, 4), slice(1, 4)), box(slice(6, 9), slice(6, 9), slice(4, 7))


def labels(*regions) -> np.ndarray:
    out = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    for value, mask in regions:
        out[mask] = value
    return out


@pytest.fixture
def run(tmp_path):
    """A standardized batch, its scaled images, one pseudo-label shard report with maps, ground truth, shape QC."""
    std = tmp_path / "standardized" / BATCH
    volumes = {  # volume_id: (split, standardized status, pseudo-label status)
        "v_gt": ("train_gt", "ok", "ok"),
        "v_unl": ("train_unlabelled", "ok", "ok"),
        "v_test": ("test", "ok", "ok"),
        "v_quar": ("train_unlabelled", "quarantined", "quarantined"),
        "v_nobrain": ("train_unlabelled", "ok", "skipped_no_brain"),
    }
    for i, (vid, (split, status, _)) in enumerate(volumes.items()):
        (std / vid).mkdir(parents=True)
        record = {"volume_id": vid, "source": "src", "split": split, "status": status,
                  "reason": "not a CT\n(intensity)" if status != "ok" else ""}
        (std / vid / "record.json").write_text(json.dumps(record))
        if status == "ok":
            write_nifti(std / vid / "image.nii.gz", ramp_ct(100 * i), AFFINE)
    images = tmp_path / "flavors" / "images" / BATCH
    write_flavor_images(std, images, (5.0, 95.0))
    pseudo = tmp_path / "pseudolabels" / str(GROUP) / "shard_0"  # the shard's maps, in the folder beside its report
    pseudo.mkdir(parents=True)
    with open(pseudo.with_suffix(".tsv"), "w") as handle:
        handle.write("volume_id\tstatus\treason\n")
        for vid, (_, _, pl_status) in volumes.items():
            handle.write(f"{vid}\t{pl_status}\t\n")
    write_nifti(pseudo / "v_gt.nii.gz", labels((1, R1), (2, R2)), AFFINE)
    write_nifti(pseudo / "v_unl.nii.gz", labels((1, U1), (3, U3)), AFFINE)
    write_nifti(pseudo / "v_test.nii.gz", labels((1, U1)), AFFINE)
    write_nifti(pseudo / "v_nobrain.nii.gz", labels(), AFFINE)
    gt = tmp_path / "gt" / BATCH / "v_gt"
    gt.mkdir(parents=True)
    (gt / "record.json").write_text(json.dumps({"volume_id": "v_gt", "status": "ok", "groups": [GROUP]}))
    write_nifti(gt / f"group_{GROUP}.nii.gz", labels((1, Q1), (IGNORE, Q3)), AFFINE)
    excluded = tmp_path / "shape_qc" / str(GROUP) / "excluded.tsv"
    excluded.parent.mkdir(parents=True)
    excluded.write_text("volume_id\timage_score\trank\treason\nv_unl\t3.2\t1\tworst 10%\n")
    return {"root": tmp_path, "images": read_image_index([images]), "reports": [pseudo.with_suffix(".tsv")],
            "pseudo": pseudo, "gt_root": tmp_path / "gt", "excluded": excluded, "image_dir": images}


def export(run, training_set, override=True, name="Dataset559_BodyRegions"):
    selection = select_cases(training_set, GROUP, run["images"], reports=run["reports"], held_out_split="test",
                             gt_root=run["gt_root"] if override else None,
                             excluded=run["excluded"])
    out = run["root"] / training_set / name
    spec = write_flavor_dataset(GROUP, training_set, selection, out)
    return out, spec


def tsv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def read(path):
    return np.asarray(nib.load(str(path)).dataobj)


# -- images ------------------------------------------------------------------------------------------------------


def test_each_ok_volume_is_scaled_from_its_own_5th_95th_percentile_and_quarantined_ones_get_no_image(run):
    index = {r["volume_id"]: r for r in tsv(run["image_dir"] / "index.tsv")}
    assert {v: (r["split"], r["status"]) for v, r in index.items()} == {
        "v_gt": ("train_gt", "ok"), "v_unl": ("train_unlabelled", "ok"), "v_test": ("test", "ok"),
        "v_quar": ("train_unlabelled", "quarantined"), "v_nobrain": ("train_unlabelled", "ok")}
    assert index["v_quar"]["reason"] == "not a CT (intensity)"
    assert sorted(p.name for p in run["image_dir"].glob("*.nii.gz")) == [
        "v_gt.nii.gz", "v_nobrain.nii.gz", "v_test.nii.gz", "v_unl.nii.gz"]
    # 960 values offset + 0..959: numpy's linear percentiles are offset + 47.95 and offset + 911.05
    scaled = nib.load(str(run["image_dir"] / "v_unl.nii.gz"))
    values = np.arange(960.0).reshape(SHAPE_ZYX)
    expected = np.clip((values - 47.95) / (911.05 - 47.95), 0.0, 1.0)
    assert scaled.get_data_dtype() == np.float32 and np.allclose(scaled.affine, AFFINE)
    assert np.allclose(np.asarray(scaled.dataobj), expected, atol=1e-6)
    assert run["images"]["v_quar"].image is None and run["images"]["v_gt"].batch == BATCH


# -- training sets -----------------------------------------------------------------------------------------------


def test_pseudo_set_takes_every_ok_non_test_volume_and_ground_truth_overrides_the_structures_it_annotates(run):
    out, spec = export(run, PSEUDO)
    # v_test: held out; v_quar: quarantined; v_nobrain: the head gate's skipped_no_brain is not ok
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["v_gt.nii.gz", "v_unl.nii.gz"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["v_gt_0000.nii.gz", "v_unl_0000.nii.gz"]
    assert spec["numTraining"] == 2 and "ignore" not in spec["labels"]
    assert spec == dataset_json(GROUP, load_label_space(), 2, with_ignore=False)
    # v_gt: structure 1 only where the ground truth has it (the pseudo-label's R1 is gone), structure 2 from the
    # pseudo-label except under the ground truth's structure 1; the ground truth's ignore keeps the pseudo-label
    expected = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    expected[R2] = 2
    expected[Q1] = 1
    assert np.array_equal(read(out / "labelsTr" / "v_gt.nii.gz"), expected)
    assert os.path.samefile(out / "labelsTr" / "v_unl.nii.gz", run["pseudo"] / "v_unl.nii.gz")  # unchanged: linked
    assert os.path.samefile(out / "imagesTr" / "v_gt_0000.nii.gz", run["image_dir"] / "v_gt.nii.gz")
    assert [(r["volume_id"], r["labels"]) for r in tsv(out / "cads_cases.tsv")] == [
        ("v_gt", "pseudo+gt"), ("v_unl", "pseudo")]


def test_gt_share_counts_training_volumes_per_structure_and_those_whose_label_came_from_ground_truth(run):
    out, _ = export(run, PSEUDO)
    share = {r["structure"]: (r["n_volumes_with_structure"], r["n_from_gt"], r["gt_share"])
             for r in read_gt_share(out / "cads_gt_share.tsv")}
    names = {i: n for n, i in load_label_space().group_label_map(GROUP).items()}
    assert len(share) == N
    assert share[names[1]] == ("2", "1", "0.5000")  # v_gt (ground truth) and v_unl (pseudo-label)
    assert share[names[2]] == ("1", "0", "0.0000")  # v_gt's pseudo-label
    assert share[names[3]] == ("1", "0", "0.0000")  # v_unl
    assert all(share[names[i]] == ("0", "0", "0") for i in range(4, N + 1))


def test_without_the_override_pseudo_labels_are_kept_as_they_are(run):
    out, _ = export(run, PSEUDO, override=False)
    assert os.path.samefile(out / "labelsTr" / "v_gt.nii.gz", run["pseudo"] / "v_gt.nii.gz")
    assert [r["labels"] for r in tsv(out / "cads_cases.tsv")] == ["pseudo", "pseudo"]
    share = read_gt_share(out / "cads_gt_share.tsv")
    assert sum(int(r["n_from_gt"]) for r in share) == 0


def test_shape_set_is_the_pseudo_set_minus_the_volumes_shape_qc_excluded(run):
    out, spec = export(run, SHAPE)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["v_gt.nii.gz"]
    assert spec["numTraining"] == 1
    share = {r["structure"]: r["gt_share"] for r in read_gt_share(out / "cads_gt_share.tsv")}
    assert list(share.values())[:2] == ["1.0000", "0.0000"]


def test_a_head_group_volume_gated_out_never_trains_even_without_test_or_quarantine(run):
    selection = select_cases(PSEUDO, GROUP, run["images"], reports=run["reports"], pseudo_dir=run["pseudo"],
                             held_out_split="no_such_split")
    assert [c.volume_id for c in selection.cases] == ["v_gt", "v_unl", "v_test"]
    assert selection.left_out == {"pseudo-labels not ok (quarantined, failed, gated out)": 2,
                                  "volumes of the held-out split 'no_such_split'": 0}


def test_gt_set_is_the_specialists_dataset_with_its_ignore_label_and_the_scaled_images(run):
    specialist = run["root"] / "specialist" / "Dataset559_BodyRegions"
    (specialist / "labelsTr").mkdir(parents=True)
    gt_map = run["gt_root"] / BATCH / "v_gt" / f"group_{GROUP}.nii.gz"
    os.link(gt_map, specialist / "labelsTr" / "v_gt.nii.gz")
    (specialist / "cads_cases.tsv").write_text("case\tvolume_id\tsource\texact_structures\nv_gt\tv_gt\tsrc\t"
                                               "subcutaneous_tissue\n")
    spec = dataset_json(GROUP, load_label_space(), 1, with_ignore=True)
    (specialist / "dataset.json").write_text(json.dumps(spec))
    selection = select_cases(GROUND_TRUTH, GROUP, run["images"], specialist_dataset=specialist)
    out = run["root"] / "GT" / "Dataset559_BodyRegions"
    written = write_flavor_dataset(GROUP, "GT", selection, out, specialist / "dataset.json")
    assert written == spec and written["labels"]["ignore"] == IGNORE and written["numTraining"] == 1
    assert os.path.samefile(out / "labelsTr" / "v_gt.nii.gz", gt_map)  # ignore voxels and all
    assert os.path.samefile(out / "imagesTr" / "v_gt_0000.nii.gz", run["image_dir"] / "v_gt.nii.gz")
    share = read_gt_share(out / "cads_gt_share.tsv")
    assert (share[0]["n_volumes_with_structure"], share[0]["n_from_gt"], share[0]["gt_share"]) == ("1", "1", "1.0000")


def test_a_flavor_left_without_training_volumes_fails_naming_group_flavor_and_why(run):
    run["excluded"].write_text("volume_id\timage_score\trank\treason\nv_gt\t1\t2\t\nv_unl\t3\t1\t\n")
    with pytest.raises(DatasetError, match=r"group 559, flavor shape: no training volume left for "
                                           r"Dataset559_BodyRegions \(2 pseudo-labels not ok .*; 1 volumes of the "
                                           r"held-out split 'test'; 2 excluded by shape QC"):
        export(run, SHAPE)


def test_override_rule_on_a_line_of_voxels():
    pseudo = np.array([1, 1, 2, 2, 0, 3, 1], dtype=np.uint8)
    gt = np.array([0, 2, 2, 0, 2, 11, 0], dtype=np.uint8)  # annotates structure 2; 11 = ignore
    merged, ids = override_with_ground_truth(pseudo, gt, 10)
    assert ids == [2]
    assert merged.tolist() == [1, 2, 2, 0, 2, 3, 1]


# -- nnU-Net planning of a flavor dataset -------------------------------------------------------------------------


@pytest.mark.slow
def test_planned_flavor_dataset_carries_the_flavor_configuration_with_no_normalization_and_trains(run, tmp_path):
    nnunet = tmp_path / "nnunet"
    raw = nnunet / "raw" / "Dataset559_BodyRegions"
    common = ["--group", str(GROUP), "--preset", "smoke", "--nnunet-raw", str(nnunet / "raw"),
              "--nnunet-preprocessed", str(nnunet / "pre"), "--nnunet-results", str(nnunet / "models")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")}
    cmd = [sys.executable, "-m", "cadsflow.flavors", "dataset", "--flavor", "Pseudo", "--dataset", str(raw),
           "--images", str(run["image_dir"]), "--pseudo-reports", *map(str, run["reports"]), "--gt-root",
           str(run["gt_root"]), "--marker", str(tmp_path / "planned"),
           "--log", str(tmp_path / "dataset.log"), *common]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (tmp_path / "dataset.log").read_text()[-3000:]
    planned = json.loads((tmp_path / "planned").read_text())
    assert planned["plans"] == "nnUNetPlansCadsFlavorSmoke"
    plans = json.loads((nnunet / "pre" / "Dataset559_BodyRegions" / "nnUNetPlansCadsFlavorSmoke.json").read_text())
    flavor = plans["configurations"]["3d_cads_flavor"]
    assert flavor["normalization_schemes"] == ["NoNormalization"] and flavor["inherits_from"] == "3d_fullres"
    assert flavor["architecture"]["network_class_name"].endswith("ResidualUNet")
    preprocessed = nnunet / "pre" / "Dataset559_BodyRegions" / "nnUNetPlansCadsFlavorSmoke_3d_cads_flavor"
    assert sorted(p.name.split(".")[0] for p in preprocessed.iterdir() if p.suffix == ".pkl") == ["v_gt", "v_unl"]
    assert not (nnunet / "pre" / "Dataset559_BodyRegions" / "nnUNetPlansCadsSmoke_3d_fullres").exists()
    cmd = [sys.executable, "-m", "cadsflow.flavors", "train", "--planned", str(tmp_path / "planned"), "--marker",
           str(tmp_path / "559.done"), "--log", str(tmp_path / "train.log"), *common]
    env["nnUNet_extTrainer"] = str(REPO / "workflow_scripts" / "nnunet_trainers")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, (tmp_path / "train.log").read_text()[-3000:]
    marker = read_marker(tmp_path / "559.done")  # paths stored relative to the marker, resolved
    assert (marker["trainer"], marker["configuration"], marker["fold"]) == (
        "nnUNetTrainerCadsFlavorSmoke", "3d_cads_flavor", "all")
    assert os.path.isfile(marker["checkpoint"])
    assert "nnUNetTrainerCadsFlavorSmoke__nnUNetPlansCadsFlavorSmoke__3d_cads_flavor" in marker["model_dir"]


def test_pseudo_and_shape_sets_without_shard_reports_are_refused_naming_what_is_missing(run):
    with pytest.raises(DatasetError, match=r"group 559: the pseudo training set needs reports$"):
        select_cases(PSEUDO, GROUP, run["images"], reports=[])
    with pytest.raises(DatasetError, match=r"group 559: the shape training set needs reports, excluded$"):
        select_cases(SHAPE, GROUP, run["images"], reports=())
