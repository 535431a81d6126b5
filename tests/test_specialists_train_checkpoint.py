"""A training that ends without its final checkpoint is a failed job, never a model.

nnU-Net's training is replaced here by a function that returns without writing anything (what a trainer does that
exits early, or a file system that lost the write): the wrapper must raise naming the group, the missing file and
the log, write no marker (Snakemake then sees the job failed and keeps nothing), and must not take a checkpoint left
by an earlier planning of the same dataset for this training's result.
"""

import json
import os
from pathlib import Path

import pytest

import cadsflow.specialists.train as train
from cadsflow.specialists.nnunet import NETWORK_FROM_TRAINER, NnunetDirs, nnunet_env, read_network_record
from cadsflow.specialists.presets import load_preset
from cadsflow.specialists.train import CHECKPOINT_NAME, TrainingError, read_marker, train_specialist


class FakeTrainer:
    """What the replaced training returns: the trainer class (it defines no network, so none is assumed)."""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    dirs = NnunetDirs(tmp_path / "raw", tmp_path / "pre", tmp_path / "res")
    for key, value in nnunet_env(dirs, base={}).items():
        monkeypatch.setenv(key, value)
    preset = load_preset("smoke")
    planned = tmp_path / "551.planned"
    planned.write_text(json.dumps({"dataset": "Dataset551_Organs", "plans": preset.plans}))
    fold_dir = dirs.model_dir("Dataset551_Organs", preset) / f"fold_{preset.fold}"
    fold_dir.mkdir(parents=True)
    calls = []
    monkeypatch.setattr(train, "run_nnunet_training", lambda group, p: calls.append((group, p.name)) or FakeTrainer)
    return dirs, preset, planned, fold_dir, calls


def test_a_training_that_leaves_no_final_checkpoint_fails_naming_group_file_and_log(tmp_path, setup):
    dirs, preset, planned, fold_dir, calls = setup
    marker, log = tmp_path / "551.done", tmp_path / "train.log"
    with pytest.raises(TrainingError, match=rf"group 551: .* left no .*{CHECKPOINT_NAME}; see .*train\.log"):
        train_specialist(551, planned, preset, dirs, marker, log)
    assert calls == [(551, "smoke")]  # the training ran
    assert not marker.exists()


def test_a_final_checkpoint_older_than_the_planning_is_removed_and_not_taken_for_the_result(tmp_path, setup):
    dirs, preset, planned, fold_dir, calls = setup
    stale = fold_dir / CHECKPOINT_NAME
    stale.write_bytes(b"an earlier dataset's model")
    planned_at = planned.stat().st_mtime
    os.utime(stale, (planned_at - 60, planned_at - 60))  # written a minute before this planning
    marker = tmp_path / "551.done"
    with pytest.raises(TrainingError, match="left no"):
        train_specialist(551, planned, preset, dirs, marker, tmp_path / "train.log")
    assert not stale.exists() and not marker.exists()


def test_a_checkpoint_written_by_the_training_gives_a_marker_naming_it(tmp_path, setup, monkeypatch):
    dirs, preset, planned, fold_dir, calls = setup
    monkeypatch.setattr(train, "run_nnunet_training",
                        lambda group, p: (fold_dir / CHECKPOINT_NAME).write_bytes(b"weights") and FakeTrainer)
    marker = tmp_path / "551.done"
    record = train_specialist(551, planned, preset, dirs, marker, tmp_path / "train.log")
    assert read_marker(marker) == record
    assert record["checkpoint"] == str((fold_dir / CHECKPOINT_NAME).resolve())
    assert record["model_dir"] == str(fold_dir.parent.resolve()) and record["fold"] == preset.fold
    # beside the checkpoint: which trainer trained it, and that only the trainer can build its network
    assert read_network_record(fold_dir) == {"trainer": "FakeTrainer", "network": NETWORK_FROM_TRAINER}


def test_a_marker_names_its_model_relative_to_itself_so_a_moved_run_still_finds_it(tmp_path, setup, monkeypatch):
    dirs, preset, planned, fold_dir, calls = setup
    monkeypatch.setattr(train, "run_nnunet_training",
                        lambda group, p: (fold_dir / CHECKPOINT_NAME).write_bytes(b"weights") and FakeTrainer)
    train_specialist(551, planned, preset, dirs, tmp_path / "551.done", tmp_path / "train.log")
    on_disk = json.loads((tmp_path / "551.done").read_text())
    assert not os.path.isabs(on_disk["model_dir"]) and not os.path.isabs(on_disk["checkpoint"])
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    tmp_path.rename(moved)  # the whole run elsewhere: a copied scratch, an archive
    record = read_marker(moved / "551.done")
    assert record["checkpoint"] == str(moved / fold_dir.relative_to(tmp_path) / CHECKPOINT_NAME)
    assert Path(record["checkpoint"]).read_bytes() == b"weights"


def test_an_older_marker_with_absolute_paths_is_read_as_it_is(tmp_path):
    marker = tmp_path / "551.done"
    marker.write_text(json.dumps({"model_dir": "/data/models/Dataset551", "fold": "all"}))
    assert read_marker(marker)["model_dir"] == "/data/models/Dataset551"
