"""End to end with real nnU-Net: plan, preprocess and train the smoke specialist on a tiny constructed dataset,
then pseudo-label a shard of volumes (one model load, a corrupt member reported, a rerun redoing only the missing).
"""

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from helpers import REPO, spacing_affine, write_nifti

from cadsflow.pseudolabel.infer import FAILED, OK, SKIPPED_NO_BRAIN, load_predictor, read_report
from cadsflow.pseudolabel.postprocess import BRAIN_MIN_VOXELS, brain_label_id, keep_largest_components, load_cleanup_rules
from cadsflow.specialists.nnunet import TRAINERS_DIR, NnunetDirs, nnunet_env
from cadsflow.specialists.presets import load_preset
from cadsflow.specialists.train import plan_specialist, read_marker, train_specialist

pytestmark = pytest.mark.slow

GROUP = 551
SHAPE = (32, 32, 32)
AFFINE = spacing_affine((1.5, 1.5, 1.5))
MODEL_LOAD_LINE = "model load:"


def phantom(seed):
    """A bright ball (label 1) inside a denser shell (label 2) on noisy soft tissue, at a jittered position."""
    rng = np.random.default_rng(seed)
    centre = np.array(SHAPE) / 2 + rng.integers(-3, 4, 3)
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(np.indices(SHAPE), centre)))
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[r < 6] = 1
    labels[(r >= 6) & (r < 10)] = 2
    image = rng.normal(40, 15, SHAPE) + np.choose(labels, [0, 200, 600])
    return image.astype(np.int16), labels


def write_dataset(raw):
    folder = raw / f"Dataset{GROUP}_Tiny"
    for i in range(3):
        image, labels = phantom(i)
        write_nifti(folder / "imagesTr" / f"case{i}_0000.nii.gz", image, AFFINE)
        write_nifti(folder / "labelsTr" / f"case{i}.nii.gz", labels, AFFINE)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "spleen": 1, "kidney_right": 2},
        "numTraining": 3, "file_ending": ".nii.gz", "overwrite_image_reader_writer": "NibabelIO"}))
    return folder


def write_standardized(root, volume_id, seed=None, corrupt=False):
    folder = root / volume_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "record.json").write_text(json.dumps({"volume_id": volume_id, "status": "ok", "reason": ""}))
    if corrupt:
        (folder / "image.nii.gz").write_bytes(b"\x1f\x8b\x08 this is not a gzip stream")
    else:
        write_nifti(folder / "image.nii.gz", phantom(seed)[0], AFFINE)
    return folder


def pseudolabel(dirs, marker, volumes, out_dir, report, log, *options, group=GROUP):
    """The shard job as the pseudolabel_shard rule runs it: the CLI in its own process, nnU-Net folders in env."""
    cmd = [sys.executable, "-m", "cadsflow.pseudolabel", "--group", str(group), "--model", str(marker),
           "--volumes", *map(str, volumes), "--out-dir", str(out_dir), "--report", str(report),
           "--threads", "2", "--log", str(log), *options]
    env = nnunet_env(dirs)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "workflow_scripts"), env.get("PYTHONPATH", "")])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    dirs = NnunetDirs(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "models")
    dataset = write_dataset(dirs.raw)
    planned, marker = root / "nnUNet_preprocessed" / f"{GROUP}.planned", root / "models" / f"{GROUP}.done"
    plan_specialist(GROUP, dataset, load_preset("smoke"), dirs, planned, root / "plan.log")
    record = train_specialist(GROUP, planned, load_preset("smoke"), dirs, marker, root / "train.log")
    return root, dirs, marker, record


def test_smoke_training_leaves_a_final_checkpoint_and_a_marker_naming_it(trained):
    root, dirs, marker, record = trained
    assert read_marker(marker)["model_dir"] == record["model_dir"]
    assert record["model_dir"].endswith(f"Dataset{GROUP}_Tiny/nnUNetTrainerCadsSmoke__nnUNetPlansCadsSmoke__3d_fullres")
    assert os.path.isfile(record["checkpoint"]) and record["checkpoint"].endswith("fold_all/checkpoint_final.pth")


def test_smoke_training_uses_the_project_trainer_without_mirroring(trained):
    import torch

    checkpoint = torch.load(trained[3]["checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerCadsSmoke"
    assert checkpoint["inference_allowed_mirroring_axes"] is None
    assert checkpoint["current_epoch"] == load_preset("smoke").schedule["epochs"]


def test_shard_loads_the_model_once_keeps_good_volumes_when_one_fails_and_rerun_redoes_only_the_missing(trained):
    root, dirs, marker, _ = trained
    standardized = root / "standardized"
    volumes = [write_standardized(standardized, "vol_a", seed=10),
               write_standardized(standardized, "vol_b", corrupt=True),
               write_standardized(standardized, "vol_c", seed=11)]
    out_dir, report = root / "pseudolabels" / str(GROUP), root / "pseudolabels" / str(GROUP) / "shard_0.tsv"

    first = pseudolabel(dirs, marker, volumes, out_dir, report, root / "first.log")
    assert first.returncode == 0, first.stderr
    assert (root / "first.log").read_text().count(MODEL_LOAD_LINE) == 1  # one load for three volumes
    outcomes = {o.volume_id: o for o in read_report(report)}
    assert [outcomes[v].status for v in ("vol_a", "vol_b", "vol_c")] == [OK, FAILED, OK]
    assert "vol_b/image.nii.gz" in outcomes["vol_b"].reason
    for volume_id in ("vol_a", "vol_c"):
        written = nib.load(out_dir / f"{volume_id}.nii.gz")
        assert written.shape == SHAPE and np.allclose(written.affine, AFFINE)
        assert set(np.unique(np.asanyarray(written.dataobj))) <= {0, 1, 2}
    assert not (out_dir / "vol_b.nii.gz").exists()
    kept = {v: (out_dir / f"{v}.nii.gz").stat().st_mtime_ns for v in ("vol_a", "vol_c")}

    write_standardized(standardized, "vol_b", seed=12)  # the broken volume is repaired
    second = pseudolabel(dirs, marker, volumes, out_dir, report, root / "second.log")
    assert second.returncode == 0, second.stderr
    assert (root / "second.log").read_text().count(MODEL_LOAD_LINE) == 1
    assert [o.status for o in read_report(report)] == [OK, OK, OK]
    assert {v: (out_dir / f"{v}.nii.gz").stat().st_mtime_ns for v in kept} == kept  # not predicted again
    assert (out_dir / "vol_b.nii.gz").is_file()

    third = pseudolabel(dirs, marker, volumes, out_dir, report, root / "third.log")
    assert third.returncode == 0, third.stderr
    assert (root / "third.log").read_text().count(MODEL_LOAD_LINE) == 0  # nothing missing: no model load


def test_a_failed_volume_fails_the_job_when_asked_to_after_its_shard_mates_are_written(trained):
    root, dirs, marker, _ = trained
    standardized = root / "strict"
    volumes = [write_standardized(standardized, "bad", corrupt=True), write_standardized(standardized, "good", seed=3)]
    out_dir = root / "strict_out"
    result = pseudolabel(dirs, marker, volumes, out_dir, out_dir / "shard_0.tsv", root / "strict.log",
                         "--fail-on-volume-error")
    assert result.returncode == 1
    assert (out_dir / "good.nii.gz").is_file()
    assert "volume bad failed" in (root / "strict.log").read_text()


def test_pseudolabel_equals_nnunets_own_prediction_of_the_same_file(trained, monkeypatch):
    """Our in-memory path (nibabel arrays in SimpleITK axis order) gives what nnU-Net's file-based path gives."""
    root, dirs, marker, record = trained
    volume = write_standardized(root / "same", "vol_same", seed=21)
    out_dir = root / "same_out"
    assert pseudolabel(dirs, marker, [volume], out_dir, out_dir / "shard_0.tsv", root / "same.log").returncode == 0
    ours = np.asanyarray(nib.load(out_dir / "vol_same.nii.gz").dataobj)

    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))  # nnU-Net looks the trainer up by name
    predictor = load_predictor(record["model_dir"], "all", "cpu")
    (root / "reference").mkdir()
    predictor.predict_from_files_sequential([[str(volume / "image.nii.gz")]], [str(root / "reference" / "vol_same")],
                                            save_probabilities=False, overwrite=True)
    reference = np.asanyarray(nib.load(root / "reference" / "vol_same.nii.gz").dataobj)
    assert reference.any()
    assert np.array_equal(ours, keep_largest_components(reference, load_cleanup_rules(GROUP)))


def test_head_group_shard_predicts_where_the_brain_passes_and_empties_where_it_does_not(trained):
    """The 551 model stands in for a head specialist: only the gating and wiring are under test here."""
    root, dirs, marker, _ = trained
    volumes = [write_standardized(root / "head", "with_brain", seed=31),
               write_standardized(root / "head", "without_brain", seed=32)]
    for volume_id, n_brain in (("with_brain", BRAIN_MIN_VOXELS), ("without_brain", BRAIN_MIN_VOXELS - 1)):
        brain = np.zeros(SHAPE, dtype=np.uint8)
        brain.reshape(-1)[:n_brain] = brain_label_id()
        write_nifti(root / "head" / "553" / f"{volume_id}.nii.gz", brain, AFFINE)
    out_dir = root / "head" / "558"
    result = pseudolabel(dirs, marker, volumes, out_dir, out_dir / "shard_0.tsv", root / "head.log",
                         "--brain-dir", str(root / "head" / "553"), group=558)
    assert result.returncode == 0, result.stderr
    assert [o.status for o in read_report(out_dir / "shard_0.tsv")] == [OK, SKIPPED_NO_BRAIN]
    assert np.asanyarray(nib.load(out_dir / "with_brain.nii.gz").dataobj).any()  # the box covers this small volume
    assert not np.asanyarray(nib.load(out_dir / "without_brain.nii.gz").dataobj).any()
    assert (root / "head.log").read_text().count(MODEL_LOAD_LINE) == 1
