"""cads-predict end to end on the shared example CT (issue 15's acceptance), with tiny real models.

Models: groups 553 (which gates the head groups) and 559, trained with the smoke preset, cut to TRAINING_SCHEDULE,
on phantom CTs in one process (`python -m cadsflow.specialists plan|train`, the factory's own jobs). They are
plumbing, not anatomy: the tests compare outputs with each other and with independent computations, never with the
truth. So that a barely trained model never answers "background" everywhere (which would make every comparison
vacuous), the background logit of its output layers is lowered by BACKGROUND_LOGIT_SHIFT after training.

Inputs: the example CT as NIfTI, as a DICOM series stored the DICOM way round (LPS voxel order), and as a JPEG 2000
lossless series; an MR-like volume and a truncated file. A batch (cadsflow.predict.pipeline.predict_batch, what the
Snakemake rule runs) predicts the NIfTI and the plain series in-process with one load per model; the JPEG 2000
series goes through the console script's main() in this process (its exit status through a real process is
tests/test_predict_units.py's).
"""

import json
import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from helpers import REPO, SHARED, write_nifti
from test_predict_dicom import dciodvfy_errors, write_ct_series

from cadsflow.imageio import read_volume
from cadsflow.labels import load_label_space

pytestmark = pytest.mark.slow

EXAMPLE_CT = SHARED / "data" / "totalseg_example" / "example_ct_sm.nii.gz"
GROUPS = (553, 559)
TRAINING_REGIONS = ("torso", "head", "torso")  # phantom fields of view (cadsflow.phantom.REGIONS); seeds 0, 1, 2
PHANTOM_SPACING = (4.5, 4.5, 4.5)  # the smoke preset's target spacing: nnU-Net resamples nothing
TRAINING_SCHEDULE = {"epochs": 1, "iterations_per_epoch": 2, "val_iterations_per_epoch": 1}  # smoke's, shorter
BACKGROUND_LOGIT_SHIFT = 10.0  # far above the logit spread of a two-iteration model: every voxel gets a structure
FLIP_XY = (slice(None, None, -1), slice(None, None, -1), slice(None))  # RAS-stored <-> LPS-stored voxel order

if not EXAMPLE_CT.is_file():
    pytest.skip(f"the shared example CT {EXAMPLE_CT} is absent (../shared not mounted)", allow_module_level=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Markers of tiny specialists for GROUPS under <root>/specialists/models/, as a factory run leaves them."""
    import yaml

    from cadsflow.specialists.presets import PRESETS_YAML

    root = tmp_path_factory.mktemp("predict_models")
    raw, steps = root / "nnUNet_raw", []
    presets = yaml.safe_load(PRESETS_YAML.read_text())
    (root / "presets.yaml").write_text(yaml.safe_dump({"tiny": {**presets["smoke"], "schedule": TRAINING_SCHEDULE}}))
    for group in GROUPS:
        dataset = write_phantom_dataset(raw, group)
        common = ["--group", str(group), "--preset", "tiny", "--presets-file", str(root / "presets.yaml"),
                  "--nnunet-raw", str(raw),
                  "--nnunet-preprocessed", str(root / "nnUNet_preprocessed"),
                  "--nnunet-results", str(root / "nnUNet_results"), "--threads", "2"]
        planned = root / "planned" / f"{group}.planned"
        steps.append(["plan", "--dataset", str(dataset), "--marker", str(planned), "--log", str(root / "plan.log"),
                      *common])
        steps.append(["train", "--planned", str(planned), "--marker", str(root / "specialists" / "models" /
                      f"{group}.done"), "--log", str(root / "train.log"), *common])
    # One process for all steps (each a job's entry, cadsflow.specialists.__main__); every planning before the first
    # training, whose environment (no augmentation workers) nnU-Net's planner cannot run in.
    steps = [s for s in steps if s[0] == "plan"] + [s for s in steps if s[0] == "train"]
    code = f"from cadsflow.specialists.__main__ import main\nfor argv in {steps!r}:\n    assert main(argv) == 0\n"
    result = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for group in GROUPS:
        lower_background_logit(root / "specialists" / "models" / f"{group}.done")
    return root


def lower_background_logit(marker):
    """Shift the background bias of every output (segmentation) layer of the marker's checkpoint down."""
    import torch

    from cadsflow.specialists.train import read_marker

    checkpoint = read_marker(marker)["checkpoint"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    biases = [k for k in state["network_weights"] if k.startswith("decoder.seg_layers.") and k.endswith(".bias")]
    assert biases, f"{checkpoint}: no output layer found"
    for key in biases:
        state["network_weights"][key][0] -= BACKGROUND_LOGIT_SHIFT
    torch.save(state, checkpoint)


def write_phantom_dataset(raw, group):
    """Dataset<G>_Tiny: phantom CTs at the smoke spacing with the group's labels (gt's dataset.json)."""
    from cadsflow.gt.nnunet_dataset import dataset_json
    from cadsflow.phantom import make_grid, make_phantom

    space = load_label_space()
    folder = raw / f"Dataset{group}_Tiny"
    for seed, region in enumerate(TRAINING_REGIONS):
        grid = make_grid(region, spacing=PHANTOM_SPACING)
        image, masks = make_phantom(grid, seed)
        labels = np.zeros(grid.shape, dtype=np.uint8)
        for name, label_id in space.group_label_map(group).items():
            if name in masks:
                labels[masks[name]] = label_id
        write_nifti(folder / "imagesTr" / f"case{seed}_0000.nii.gz", image, grid.affine)
        write_nifti(folder / "labelsTr" / f"case{seed}.nii.gz", labels, grid.affine)
    (folder / "dataset.json").write_text(json.dumps(dataset_json(group, space, len(TRAINING_REGIONS), False)))
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_inputs")
    ct = nib.load(EXAMPLE_CT)
    data = np.asanyarray(ct.dataobj)
    write_ct_series(data, ct.affine, root / "series_plain")
    write_ct_series(data, ct.affine, root / "series_j2k", jpeg2000=True)
    mr = np.random.default_rng(0).integers(0, 1800, (64, 64, 24)).astype(np.int16)
    write_nifti(root / "mr_t1.nii.gz", mr, ct.affine)
    whole = EXAMPLE_CT.read_bytes()
    (root / "truncated.nii.gz").write_bytes(whole[: len(whole) // 3])
    return root


@pytest.fixture(scope="module")
def batch(models, inputs, tmp_path_factory):
    """The batch job's function in this process: NIfTI, plain series, MR, truncated; one load per model."""
    import torch

    from cadsflow.predict.pipeline import PredictSettings, predict_batch
    from cadsflow.specialists.nnunet import TRAINERS_DIR

    out = tmp_path_factory.mktemp("predict_batch")
    settings = PredictSettings(groups=GROUPS, fast=True, dicom_seg=True, statistics=True, preview=True)
    volumes = [("nifti", str(EXAMPLE_CT)), ("dicom", str(inputs / "series_plain")),
               ("mr", str(inputs / "mr_t1.nii.gz")), ("truncated", str(inputs / "truncated.nii.gz"))]
    torch.set_num_threads(2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
        outcomes = predict_batch(volumes, out / "volumes", models, settings, out / "report.tsv")
    return out, {o.volume_id: o for o in outcomes}


@pytest.fixture(scope="module")
def cli_j2k(models, inputs, batch, tmp_path_factory):
    """The console script's main() on the JPEG 2000 series, every output asked for (after the batch: torch and
    nnU-Net are imported once)."""
    import contextlib
    import io

    from cadsflow.predict.__main__ import EXIT_OK, main

    out = tmp_path_factory.mktemp("predict_cli") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main([str(inputs / "series_j2k"), "-o", str(out), "--models", str(models), "--groups",
                     ",".join(map(str, GROUPS)), "--fast", "--dicom-seg", "--statistics", "--preview",
                     "--threads", "2"])
    assert code == EXIT_OK
    return out, stdout.getvalue()


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "workflow_scripts"),
                                                        os.environ.get("PYTHONPATH", "")]))


def labels(folder, name):
    image = nib.load(folder / name)
    return np.asanyarray(image.dataobj), image.affine


MAPS = ("group_553.nii.gz", "group_559.nii.gz", "combined.nii.gz")


def test_outputs_lie_on_the_nifti_inputs_exact_grid(batch):
    out, _ = batch
    example = nib.load(EXAMPLE_CT)
    for name in MAPS:
        data, affine = labels(out / "volumes" / "nifti", name)
        assert data.shape == example.shape and np.array_equal(affine, example.affine)


def test_outputs_lie_on_the_dicom_inputs_exact_grid(batch, cli_j2k, inputs):
    for folder, series in ((batch[0] / "volumes" / "dicom", "series_plain"), (cli_j2k[0], "series_j2k")):
        volume = read_volume(inputs / series)
        for name in MAPS:
            data, affine = labels(folder, name)
            assert data.shape == volume.data.shape
            np.testing.assert_allclose(affine, volume.affine, atol=1e-4)  # NIfTI keeps the affine as float32


def test_nifti_and_dicom_inputs_of_the_same_ct_give_the_same_labels(batch, cli_j2k):
    nifti_dir, dicom_dir = batch[0] / "volumes" / "nifti", batch[0] / "volumes" / "dicom"
    for name in MAPS:
        nifti, _ = labels(nifti_dir, name)
        assert nifti.any(), f"{name}: the tiny models predicted nothing; the comparison would be empty"
        for folder in (dicom_dir, cli_j2k[0]):
            assert np.array_equal(labels(folder, name)[0][FLIP_XY], nifti), f"{folder / name}"


def test_the_dicom_seg_reads_back_with_the_structures_labels_and_snomed_codes(cli_j2k, inputs):
    import highdicom as hd

    from test_predict_dicom import _table_rows

    out, _ = cli_j2k
    combined, _ = labels(out, "combined.nii.gz")
    space = load_label_space()
    by_id = {s.global_id: s for s in space.structures}
    present = [by_id[int(i)] for i in np.unique(combined) if i]
    seg = hd.seg.segread(out / "segmentations.dcm")
    table = _table_rows()
    described = [seg.get_segment_description(n) for n in seg.segment_numbers]
    assert [d.segment_label for d in described] == [table[s.name]["display_name"] for s in present]
    assert [d.segmented_property_type.value for d in described] == [table[s.name]["type_code"] for s in present]
    assert [d.segmented_property_category.value for d in described] == [
        table[s.name]["category_code_sct"] for s in present]
    source_series = {uids[1] for uids in seg.get_source_image_uids()}
    import pydicom

    assert source_series == {pydicom.dcmread(next((inputs / "series_j2k").iterdir())).SeriesInstanceUID}


def test_the_dicom_seg_pixels_equal_the_combined_map_on_every_source_slice(cli_j2k, inputs):
    import highdicom as hd

    from cadsflow.predict.dicomseg import read_source_images, source_slice_indices

    out, _ = cli_j2k
    combined, _ = labels(out, "combined.nii.gz")
    seg = hd.seg.segread(out / "segmentations.dcm")
    global_of_segment = np.array([0] + [int(v) for v in np.unique(combined) if v])
    sources = read_source_images(inputs / "series_j2k")
    volume = read_volume(inputs / "series_j2k")
    for ds, k in zip(sources, source_slice_indices(sources, volume.affine, volume.data.shape)):
        pixels = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True,
                                                   ignore_spatial_locations=True)[0]
        assert np.array_equal(global_of_segment[pixels], combined[:, :, k].T)


def test_dciodvfy_reports_no_error_for_the_example_dicom_seg(cli_j2k):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed")
    assert dciodvfy_errors(cli_j2k[0] / "segmentations.dcm") == []


def test_a_nifti_input_gets_no_dicom_seg_and_a_note_saying_why(batch):
    out, outcomes = batch
    folder = out / "volumes" / "nifti"
    assert not (folder / "segmentations.dcm").exists()
    note = json.loads((folder / "run.json").read_text())["notes"]
    assert len(note) == 1 and "the input is a NIfTI file" in note[0]
    assert "the input is a NIfTI file" in outcomes["nifti"].reason


def test_statistics_are_the_volumes_and_intensities_of_the_written_maps(batch):
    folder = batch[0] / "volumes" / "nifti"
    stats = json.loads((folder / "statistics.json").read_text())
    example = nib.load(EXAMPLE_CT)
    image = np.asanyarray(example.dataobj).astype(np.float64)
    voxel_ml = float(np.prod(example.header.get_zooms())) / 1000.0
    space = load_label_space()
    for group in GROUPS:
        group_map, _ = labels(folder, f"group_{group}.nii.gz")
        for s in space.group(group):
            row, mask = stats["structures"][s.name], group_map == s.label_id
            assert row["voxels"] == int(mask.sum())
            assert row["volume_ml"] == pytest.approx(mask.sum() * voxel_ml)
            if mask.any():
                assert row["mean_hu"] == pytest.approx(image[mask].mean())
                assert row["median_hu"] == float(np.median(image[mask]))
            else:
                assert row["mean_hu"] is None and row["median_hu"] is None


def test_batch_refuses_the_mr_and_the_truncated_file_and_writes_nothing_for_them(batch):
    out, outcomes = batch
    assert {v: o.status for v, o in outcomes.items()} == {"nifti": "ok", "dicom": "ok", "mr": "refused",
                                                          "truncated": "refused"}
    assert "look like MR" in outcomes["mr"].reason and "unreadable" in outcomes["truncated"].reason
    assert sorted(p.name for p in (out / "volumes").iterdir()) == ["dicom", "nifti"]
    report = (out / "report.tsv").read_text().splitlines()
    assert report[0] == "volume_id\tstatus\treason\tseconds" and [r.split("\t")[1] for r in report[1:]] == [
        "ok", "ok", "refused", "refused"]


def test_the_console_script_prints_the_seconds_of_every_step(cli_j2k):
    out, stdout = cli_j2k
    line = next(line for line in stdout.splitlines() if line.startswith("series_j2k: "))
    for step in ("validate", "standardize", "load 553", "predict 553", "load 559", "predict 559", "restore",
                 "combine", "write", "dicom-seg", "statistics", "preview"):
        assert f"{step} " in line and " s" in line
    run = json.loads((out / "run.json").read_text())
    assert list(run["seconds"])[:3] == ["validate", "standardize", "load 553"]  # 553 runs first
    assert run["inference"] == {"device": "cpu", "fast": True, "tile_step_size": 1.0, "label_resampling": "nearest"}
    assert sorted(p.name for p in out.iterdir()) == sorted(run["outputs"] + ["run.json"])


def test_predict_gives_the_factorys_own_pseudo_label_restored_to_the_input_grid(models, batch, tmp_path):
    """Group 559 through the factory's shard job (standardize_volume, then predict_shard with the same settings)
    equals cads-predict's group_559 map once restored with the standardization record."""
    from cadsflow.pseudolabel.infer import predict_shard
    from cadsflow.pseudolabel.postprocess import load_cleanup_rules
    from cadsflow.specialists.nnunet import TRAINERS_DIR
    from cadsflow.specialists.train import read_marker
    from cadsflow.standardize import restore_label, standardize_volume

    record = standardize_volume("example", str(EXAMPLE_CT), "", tmp_path / "std" / "example")
    marker = read_marker(models / "specialists" / "models" / "559.done")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_extTrainer", str(TRAINERS_DIR))
        report = predict_shard(marker["model_dir"], marker["fold"], [tmp_path / "std" / "example"],
                               tmp_path / "pl", 559, cleanup=load_cleanup_rules(559), tile_step_size=1.0,
                               label_resampling="nearest")
    assert [o.status for o in report.outcomes] == ["ok"]
    factory, _ = restore_label(np.asanyarray(nib.load(tmp_path / "pl" / "example.nii.gz").dataobj),
                               record["geometry"])
    ours, _ = labels(batch[0] / "volumes" / "nifti", "group_559.nii.gz")
    assert np.array_equal(factory, ours)
