"""The training wrapper's checks before nnU-Net runs, and the marker it leaves for pseudo-labeling."""

import json

import pytest

from cadsflow.specialists.nnunet import NnunetDirs
from cadsflow.specialists.presets import load_preset
from cadsflow.specialists.train import TrainingError, plan_specialist, read_marker, train_specialist


def dirs(root):
    return NnunetDirs(root / "raw", root / "pre", root / "res")


def test_planning_refuses_a_dataset_folder_of_another_group(tmp_path):
    folder = tmp_path / "raw" / "Dataset552_Vertebrae"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text("{}")
    with pytest.raises(TrainingError, match="Dataset552_Vertebrae.*Dataset551_"):
        plan_specialist(551, folder, load_preset("smoke"), dirs(tmp_path), tmp_path / "m", tmp_path / "log")


def test_planning_refuses_a_dataset_outside_nnunet_raw(tmp_path):
    folder = tmp_path / "elsewhere" / "Dataset551_Organs"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text("{}")
    with pytest.raises(TrainingError, match="nnUNet_raw"):
        plan_specialist(551, folder, load_preset("smoke"), dirs(tmp_path), tmp_path / "m", tmp_path / "log")


def test_planning_without_dataset_json_names_the_folder(tmp_path):
    folder = tmp_path / "raw" / "Dataset551_Organs"
    folder.mkdir(parents=True)
    with pytest.raises(TrainingError, match="Dataset551_Organs: no dataset.json"):
        plan_specialist(551, folder, load_preset("smoke"), dirs(tmp_path), tmp_path / "m", tmp_path / "log")


def test_marker_without_a_model_folder_is_rejected_naming_the_file(tmp_path):
    marker = tmp_path / "551.done"
    marker.write_text(json.dumps({"fold": "all"}))
    with pytest.raises(TrainingError, match=r"551\.done.*model_dir"):
        read_marker(marker)


def test_training_refuses_a_dataset_planned_with_other_plans(tmp_path):
    planned = tmp_path / "551.planned"
    planned.write_text(json.dumps({"dataset": "Dataset551_Organs", "plans": "nnUNetPlans"}))
    with pytest.raises(TrainingError, match="nnUNetPlans.*nnUNetPlansCadsSmoke"):
        train_specialist(551, planned, load_preset("smoke"), dirs(tmp_path), tmp_path / "m", tmp_path / "log")


def test_a_failing_nnunet_training_names_the_group_the_step_and_the_log(tmp_path, monkeypatch):
    """nnU-Net runs in the job's process: its exception becomes a TrainingError naming group, step and log."""
    folders = dirs(tmp_path)
    for key, path in (("nnUNet_raw", folders.raw), ("nnUNet_preprocessed", folders.preprocessed),
                      ("nnUNet_results", folders.results)):
        monkeypatch.setenv(key, str(path.resolve()))
    planned = tmp_path / "551.planned"  # planned, but its preprocessed dataset was deleted since
    planned.write_text(json.dumps({"dataset": "Dataset551_Gone", "plans": "nnUNetPlansCadsSmoke"}))
    log = tmp_path / "train.log"
    with pytest.raises(TrainingError, match=r"(?s)group 551: nnU-Net train failed: .*; see .*train\.log"):
        train_specialist(551, planned, load_preset("smoke"), folders, tmp_path / "551.done", log)
    assert not (tmp_path / "551.done").exists()  # no marker: Snakemake sees the job failed
    assert "### group 551: train (nnU-Net in this process)" in log.read_text()


def test_training_refuses_to_run_against_other_nnunet_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/somewhere/else")
    planned = tmp_path / "551.planned"
    planned.write_text('{"dataset": "Dataset551_X", "plans": "nnUNetPlansCadsSmoke"}')
    with pytest.raises(TrainingError, match="nnUNet_raw.*/somewhere/else"):
        train_specialist(551, planned, load_preset("smoke"), dirs(tmp_path), tmp_path / "m", tmp_path / "log")
