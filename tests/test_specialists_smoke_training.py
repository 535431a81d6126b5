"""End to end with real nnU-Net: plan, preprocess and train the smoke specialist on a tiny constructed dataset,
then pseudo-label a shard of volumes (one model load, a corrupt member reported). A rerun that Snakemake starts
predicts every member; a job that resumes an interrupted run of its shard (its `<report>.running` marker left
behind) keeps exactly the maps whose header fingerprint still matches, so it re-predicts the missing ones and
those whose image, group-553 brain map or model checkpoint changed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import REPO, spacing_affine, write_nifti

from cadsflow.pseudolabel.cpu_predictor import CpuPredictor
from cadsflow.pseudolabel.infer import (FAILED, OK, SKIPPED_NO_BRAIN, load_predictor, predict_array, read_report,
                                        running_marker)
from cadsflow.pseudolabel.postprocess import BRAIN_MIN_VOXELS, brain_label_id, keep_largest_components, load_cleanup_rules
from cadsflow.specialists.nnunet import (NETWORK_FROM_PLANS, NETWORK_RECORD, TRAINERS_DIR, NnunetDirs, nnunet_env,
                                        read_network_record)
from cadsflow.specialists.train import read_marker

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
    write_learning_presets(root / "presets.yaml")
    dirs = NnunetDirs(root / "nnUNet_raw", root / "nnUNet_preprocessed", root / "models")
    dataset = write_dataset(dirs.raw)
    planned, marker = root / "nnUNet_preprocessed" / f"{GROUP}.planned", root / "models" / f"{GROUP}.done"
    specialist_step(dirs, "plan", "--dataset", str(dataset), "--marker", str(planned), "--log", str(root / "plan.log"))
    specialist_step(dirs, "train", "--planned", str(planned), "--marker", str(marker), "--log", str(root / "train.log"))
    return root, dirs, marker, read_marker(marker)


# The smoke preset is plumbing (config/presets.yaml: one epoch of a narrow network at 4.5 mm predicts background on
# these phantoms); the tests below compare predictions, so they train the smoke trainer a little longer at 3 mm with
# nnU-Net's default network: enough to segment the ball and shell of `phantom`.
LEARNING_SMOKE = {"schedule": {"epochs": 2, "iterations_per_epoch": 5, "val_iterations_per_epoch": 1},
                  "target_spacing_mm": [3.0, 3.0, 3.0], "network": {"base_features": None, "max_features": None}}
PRESETS_FILE = "presets.yaml"  # in the fixture's folder


def write_learning_presets(path):
    import yaml

    presets = yaml.safe_load((REPO / "config" / "presets.yaml").read_text())
    presets["smoke"].update(LEARNING_SMOKE)
    path.write_text(yaml.safe_dump(presets, sort_keys=False))


def specialist_step(dirs, step, *args):
    """A specialist job as the rules run it: `python -m cadsflow.specialists` in its own process (nnU-Net runs in it)."""
    presets = Path(dirs.raw).parent / PRESETS_FILE
    cmd = [sys.executable, "-m", "cadsflow.specialists", step, "--group", str(GROUP), "--preset", "smoke",
           "--presets-file", str(presets),
           "--nnunet-raw", str(dirs.raw), "--nnunet-preprocessed", str(dirs.preprocessed),
           "--nnunet-results", str(dirs.results), "--threads", "2", *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "workflow_scripts"), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_smoke_training_leaves_a_final_checkpoint_and_a_marker_naming_it(trained):
    root, dirs, marker, record = trained
    assert read_marker(marker)["model_dir"] == record["model_dir"]
    assert record["model_dir"].endswith(f"Dataset{GROUP}_Tiny/nnUNetTrainerCadsSmoke__nnUNetPlansCadsSmoke__3d_fullres")
    assert os.path.isfile(record["checkpoint"]) and record["checkpoint"].endswith("fold_all/checkpoint_final.pth")


def test_a_seeded_training_of_the_same_data_gives_the_same_weights(trained):
    """The smoke preset seeds Python's, NumPy's and torch's generators before training (`seed: 0`): a second
    training of the same preprocessed data into another results folder gives the same weights, tensor for tensor."""
    root, dirs, marker, record = trained
    again = NnunetDirs(dirs.raw, dirs.preprocessed, root / "models_again")
    planned = root / "nnUNet_preprocessed" / f"{GROUP}.planned"
    second = root / "models_again" / f"{GROUP}.done"
    specialist_step(again, "train", "--planned", str(planned), "--marker", str(second),
                    "--log", str(root / "train_again.log"))
    first = torch.load(record["checkpoint"], map_location="cpu", weights_only=False)["network_weights"]
    repeat = torch.load(read_marker(second)["checkpoint"], map_location="cpu", weights_only=False)["network_weights"]
    assert first.keys() == repeat.keys() and all(torch.equal(first[k], repeat[k]) for k in first)


def test_smoke_training_uses_the_project_trainer_without_mirroring(trained):
    import torch

    checkpoint = torch.load(trained[3]["checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerCadsSmoke"
    assert checkpoint["inference_allowed_mirroring_axes"] is None
    assert checkpoint["current_epoch"] == LEARNING_SMOKE["schedule"]["epochs"]


def test_shard_loads_the_model_once_keeps_good_volumes_when_one_fails_and_a_resumed_run_redoes_the_missing(trained):
    root, dirs, marker, _ = trained
    standardized = root / "standardized"
    volumes = [write_standardized(standardized, "vol_a", seed=10),
               write_standardized(standardized, "vol_b", corrupt=True),
               write_standardized(standardized, "vol_c", seed=11)]
    # the rule's layout: the shard's declared folder of maps beside its report
    out_dir, report = root / "pseudolabels" / str(GROUP) / "shard_0", root / "pseudolabels" / str(GROUP) / "shard_0.tsv"

    first = pseudolabel(dirs, marker, volumes, out_dir, report, root / "first.log")
    assert first.returncode == 0, first.stderr
    assert (root / "first.log").read_text().count(MODEL_LOAD_LINE) == 1  # one load for three volumes
    outcomes = {o.volume_id: o for o in read_report(report)}
    assert [outcomes[v].status for v in ("vol_a", "vol_b", "vol_c")] == [OK, FAILED, OK]
    assert "vol_b/image.nii.gz" in outcomes["vol_b"].reason
    for volume_id in ("vol_a", "vol_c"):
        written = nib.load(out_dir / f"{volume_id}.nii.gz")
        assert written.shape == SHAPE and np.allclose(written.affine, AFFINE)
        values = np.asanyarray(written.dataobj)
        assert set(np.unique(values)) <= {0, 1, 2} and values.any()  # an empty map is not a prediction
    assert not (out_dir / "vol_b.nii.gz").exists()
    kept = {v: (out_dir / f"{v}.nii.gz").stat().st_mtime_ns for v in ("vol_a", "vol_c")}

    write_standardized(standardized, "vol_b", seed=12)  # the broken volume is repaired
    running_marker(report).write_text("running\n")  # and the job resumes a run of this shard that was killed
    second = pseudolabel(dirs, marker, volumes, out_dir, report, root / "second.log")
    assert second.returncode == 0, second.stderr
    assert (root / "second.log").read_text().count(MODEL_LOAD_LINE) == 1
    assert [o.status for o in read_report(report)] == [OK, OK, OK]
    assert {v: (out_dir / f"{v}.nii.gz").stat().st_mtime_ns for v in kept} == kept  # not predicted again
    assert (out_dir / "vol_b.nii.gz").is_file() and not running_marker(report).exists()

    third = pseudolabel(dirs, marker, volumes, out_dir, report, root / "third.log")  # Snakemake reran the shard
    assert third.returncode == 0, third.stderr
    assert (root / "third.log").read_text().count(MODEL_LOAD_LINE) == 1
    assert all((out_dir / f"{v}.nii.gz").stat().st_mtime_ns != kept[v] for v in kept)  # every member redone


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
    predictor = nnunets_own_predictor(record["model_dir"])  # nnU-Net's own loading and trainer lookup
    ours_loaded = load_predictor(record["model_dir"], "all", "cpu")
    assert (ours_loaded.trainer_name, ours_loaded.allowed_mirroring_axes, type(ours_loaded.network)) == (
        predictor.trainer_name, predictor.allowed_mirroring_axes, type(predictor.network))
    assert ours_loaded.configuration_manager.configuration == predictor.configuration_manager.configuration
    ours_weights, weights = ours_loaded.network.state_dict(), predictor.network.state_dict()
    assert ours_weights.keys() == weights.keys() and all(torch.equal(ours_weights[k], weights[k]) for k in weights)
    (root / "reference").mkdir()
    predictor.predict_from_files_sequential([[str(volume / "image.nii.gz")]], [str(root / "reference" / "vol_same")],
                                            save_probabilities=False, overwrite=True)
    reference = np.asanyarray(nib.load(root / "reference" / "vol_same.nii.gz").dataobj)
    assert reference.any()
    assert np.array_equal(ours, keep_largest_components(reference, load_cleanup_rules(GROUP)))


def nnunets_own_predictor(model_dir):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=("all",))
    return predictor


def test_cpu_predictor_is_nnunets_model_without_its_inference_module(trained, monkeypatch):
    """Training records that the smoke trainer builds its network from the plans; CPU inference with `nearest`
    labels then loads the same network and weights without nnU-Net's inference module or the trainer class and
    predicts the same labels as an nnUNetPredictor of the same model. A record naming another trainer than the
    checkpoint's, or none (a model trained elsewhere), loads through nnU-Net."""
    root, dirs, marker, record = trained
    fold_dir = Path(record["model_dir"]) / "fold_all"
    assert read_network_record(fold_dir) == {"trainer": "nnUNetTrainerCadsSmoke", "network": NETWORK_FROM_PLANS}
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
    light = load_predictor(record["model_dir"], "all", "cpu", label_resampling="nearest")
    full = load_predictor(record["model_dir"], "all", "cpu", label_resampling="probabilities")
    assert isinstance(light, CpuPredictor) and not isinstance(full, CpuPredictor)
    assert (light.trainer_name, light.allowed_mirroring_axes, type(light.network)) == (
        full.trainer_name, full.allowed_mirroring_axes, type(full.network))
    light_weights, weights = light.network.state_dict(), full.network.state_dict()
    assert light_weights.keys() == weights.keys() and all(torch.equal(light_weights[k], weights[k]) for k in weights)
    image = phantom(41)[0].astype(np.float32).transpose(2, 1, 0)[None]
    labels = predict_array(light, image, [1.5, 1.5, 1.5], "nearest")
    assert labels.any() and np.array_equal(labels, predict_array(full, image, [1.5, 1.5, 1.5], "nearest"))
    with pytest.raises(ValueError, match="probabilities"):
        predict_array(light, image, [1.5, 1.5, 1.5], "probabilities")

    probe = ("import sys; from cadsflow.pseudolabel.infer import load_predictor; "
             f"p = load_predictor({record['model_dir']!r}, 'all', 'cpu', label_resampling='nearest'); "
             "print(type(p).__name__, 'torch._dynamo' in sys.modules, 'seaborn' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow_scripts")}
    printed = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert printed.stdout.split() == ["CpuPredictor", "False", "False"], printed.stderr

    saved = (fold_dir / NETWORK_RECORD).read_text()
    try:
        (fold_dir / NETWORK_RECORD).write_text(json.dumps({"trainer": "SomeOtherTrainer", "network": "plans"}))
        assert not isinstance(load_predictor(record["model_dir"], "all", "cpu", label_resampling="nearest"),
                              CpuPredictor)
        (fold_dir / NETWORK_RECORD).unlink()
        assert not isinstance(load_predictor(record["model_dir"], "all", "cpu", label_resampling="nearest"),
                              CpuPredictor)
    finally:
        (fold_dir / NETWORK_RECORD).write_text(saved)


def test_a_model_load_reads_the_checkpoint_once_also_when_the_light_loader_declines(trained, monkeypatch):
    """load_predictor reads the fold once (cadsflow.pseudolabel.trained_fold): one torch.load whether the CPU
    loader takes the model or, its record naming another trainer, hands the same files to nnU-Net's predictor."""
    root, dirs, marker, record = trained
    fold_dir = Path(record["model_dir"]) / "fold_all"
    monkeypatch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args[0]) or real_load(*args, **kwargs))
    assert isinstance(load_predictor(record["model_dir"], "all", "cpu", label_resampling="nearest"), CpuPredictor)
    assert len(loads) == 1
    saved = (fold_dir / NETWORK_RECORD).read_text()
    try:
        (fold_dir / NETWORK_RECORD).write_text(json.dumps({"trainer": "SomeOtherTrainer", "network": "plans"}))
        assert not isinstance(load_predictor(record["model_dir"], "all", "cpu", label_resampling="nearest"),
                              CpuPredictor)
    finally:
        (fold_dir / NETWORK_RECORD).write_text(saved)
    assert len(loads) == 2


LEGACY_TRAINER = """
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from cads_trainers import nnUNetTrainerCadsSmoke


class nnUNetTrainerCadsLegacy(nnUNetTrainerCadsSmoke):
    @staticmethod
    def build_network_architecture(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                                   num_input_channels, num_output_channels, enable_deep_supervision=True):
        return get_network_from_plans(architecture_class_name, arch_init_kwargs, arch_init_kwargs_req_import,
                                      num_input_channels, num_output_channels, allow_init=True,
                                      deep_supervision=enable_deep_supervision)
"""


def test_a_trainer_with_nnunets_old_network_signature_builds_the_same_network(trained, monkeypatch, tmp_path):
    """A trainer whose build_network_architecture takes the architecture (nnU-Net's old signature) is called with it,
    as nnU-Net's initialize_from_trained_model_folder calls it; the network equals the plans' own."""
    from dataclasses import replace

    from cadsflow.pseudolabel.cpu_predictor import plans_network
    from cadsflow.pseudolabel.infer import trainer_network
    from cadsflow.pseudolabel.trained_fold import read_trained_fold

    root, dirs, marker, record = trained
    (tmp_path / "legacy_trainer.py").write_text(LEGACY_TRAINER)
    monkeypatch.setenv("nnUNet_extTrainer", os.pathsep.join([str(tmp_path), str(TRAINERS_DIR)]))
    monkeypatch.syspath_prepend(str(TRAINERS_DIR))  # the legacy module imports its parent trainer module by name
    fold = read_trained_fold(record["model_dir"], "all", "checkpoint_final.pth")
    legacy = replace(fold, checkpoint={**fold.checkpoint, "trainer_name": "nnUNetTrainerCadsLegacy"})
    built, expected = legacy.network(trainer_network), fold.network(plans_network)
    assert type(built) is type(expected)
    built_weights, weights = built.state_dict(), expected.state_dict()
    assert built_weights.keys() == weights.keys() and all(torch.equal(built_weights[k], weights[k]) for k in weights)
    assert not built.decoder.deep_supervision


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


def _later_than(path, *outputs):
    """Give `path` a modification time after every output's, whatever the file system clock's tick."""
    newest = max(o.stat().st_mtime for o in outputs)
    os.utime(path, (newest + 10, newest + 10))


def _brain_map(path, n_brain, offset=0):
    brain = np.zeros(SHAPE, dtype=np.uint8)
    brain.reshape(-1)[offset:offset + n_brain] = brain_label_id()
    write_nifti(path, brain, AFFINE)


def _mtimes(out_dir, volume_ids):
    return {v: (out_dir / f"{v}.nii.gz").stat().st_mtime_ns for v in volume_ids}


def test_resumed_run_re_predicts_exactly_the_volumes_whose_image_or_brain_map_changed(trained):
    """Head group 558 (the 551 model stands in): one volume gets a new image, one a new group-553 brain map."""
    root, dirs, marker, _ = trained
    ids = ("new_image", "new_brain", "unchanged")
    folder = root / "rerun_inputs"
    volumes = [write_standardized(folder, v, seed=50 + i) for i, v in enumerate(ids)]
    for v in ids:
        _brain_map(folder / "553" / f"{v}.nii.gz", BRAIN_MIN_VOXELS)
    out_dir = folder / "558"
    args = (out_dir, out_dir / "shard_0.tsv")
    first = pseudolabel(dirs, marker, volumes, *args, root / "rerun1.log", "--brain-dir", str(folder / "553"), group=558)
    assert first.returncode == 0, first.stderr
    before = _mtimes(out_dir, ids)

    write_standardized(folder, "new_image", seed=60)  # another scan under the same id
    _later_than(folder / "new_image" / "image.nii.gz", *(out_dir / f"{v}.nii.gz" for v in ids))
    _brain_map(folder / "553" / "new_brain.nii.gz", BRAIN_MIN_VOXELS, offset=SHAPE[1] * SHAPE[2])  # brain moved
    _later_than(folder / "553" / "new_brain.nii.gz", *(out_dir / f"{v}.nii.gz" for v in ids))
    running_marker(out_dir / "shard_0.tsv").write_text("running\n")  # resume: only matching fingerprints are kept
    second = pseudolabel(dirs, marker, volumes, *args, root / "rerun2.log", "--brain-dir", str(folder / "553"),
                         group=558)
    assert second.returncode == 0, second.stderr
    after = _mtimes(out_dir, ids)
    assert {v for v in ids if after[v] != before[v]} == {"new_image", "new_brain"}
    assert (root / "rerun2.log").read_text().count(MODEL_LOAD_LINE) == 1
    assert [o.status for o in read_report(out_dir / "shard_0.tsv")] == [OK, OK, OK]


def test_resumed_run_re_predicts_every_volume_after_the_model_is_retrained_in_place(trained):
    import shutil

    import torch

    root, dirs, _, record = trained
    model_dir = root / "retrained" / "model"
    shutil.copytree(record["model_dir"], model_dir)  # a private copy: the other tests keep the original
    marker = root / "retrained" / f"{GROUP}.done"
    marker.write_text(json.dumps({**read_marker(trained[2]), "model_dir": str(model_dir)}))
    volumes = [write_standardized(root / "retrained" / "std", v, seed=70 + i) for i, v in enumerate(("r1", "r2"))]
    out_dir = root / "retrained" / "out"
    first = pseudolabel(dirs, marker, volumes, out_dir, out_dir / "shard_0.tsv", root / "retrained1.log")
    assert first.returncode == 0, first.stderr
    before = _mtimes(out_dir, ("r1", "r2"))

    checkpoint = model_dir / "fold_all" / "checkpoint_final.pth"  # a retraining rewrites the weights in place
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state["network_weights"] = {k: (v * 1.01 if v.is_floating_point() else v)
                                for k, v in state["network_weights"].items()}
    torch.save(state, checkpoint)
    _later_than(checkpoint, *(out_dir / f"{v}.nii.gz" for v in ("r1", "r2")))
    running_marker(out_dir / "shard_0.tsv").write_text("running\n")  # resume: only matching fingerprints are kept
    second = pseudolabel(dirs, marker, volumes, out_dir, out_dir / "shard_0.tsv", root / "retrained2.log")
    assert second.returncode == 0, second.stderr
    after = _mtimes(out_dir, ("r1", "r2"))
    assert all(after[v] != before[v] for v in ("r1", "r2"))
    assert (root / "retrained2.log").read_text().count(MODEL_LOAD_LINE) == 1
