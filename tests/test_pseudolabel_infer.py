"""Shard jobs without a model: what needs no prediction is reported and never loads the model."""

import json

import nibabel as nib
import numpy as np
import pytest

from helpers import spacing_affine, write_nifti

from cadsflow.pseudolabel.infer import (
    FAILED,
    QUARANTINED,
    SKIPPED_NO_BRAIN,
    ModelLoadError,
    predict_shard,
    read_report,
)
from cadsflow.pseudolabel.postprocess import brain_label_id

AFFINE = spacing_affine((1.5, 1.5, 1.5), origin=(-10.0, 5.0, 2.0))


def standardized(root, volume_id, status="ok", shape=(12, 10, 8)):
    folder = root / "standardized" / volume_id
    folder.mkdir(parents=True)
    record = {"volume_id": volume_id, "status": status, "reason": "" if status == "ok" else "not a CT: no air"}
    (folder / "record.json").write_text(json.dumps(record))
    if status == "ok":
        write_nifti(folder / "image.nii.gz", np.full(shape, 40, dtype=np.int16), AFFINE)
    return folder


def brain_map(root, volume_id, n_brain, shape=(12, 10, 8)):
    labels = np.zeros(shape, dtype=np.uint8)
    labels.reshape(-1)[:n_brain] = brain_label_id()
    return write_nifti(root / "553" / f"{volume_id}.nii.gz", labels, AFFINE)


def test_quarantined_volumes_are_reported_and_load_no_model(tmp_path):
    volumes = [standardized(tmp_path, v, status="quarantined") for v in ("a", "b")]
    report = predict_shard(tmp_path / "no_model", "all", volumes, tmp_path / "551", 551,
                           report_path=tmp_path / "551" / "shard_0.tsv")
    assert report.model_loads == 0
    rows = read_report(tmp_path / "551" / "shard_0.tsv")
    assert [(r.volume_id, r.status, r.reason) for r in rows] == [("a", QUARANTINED, "not a CT: no air"),
                                                                 ("b", QUARANTINED, "not a CT: no air")]
    assert not list((tmp_path / "551").glob("*.nii.gz"))


def test_head_volume_with_too_little_brain_gets_an_empty_map_and_the_reason_without_a_model_load(tmp_path):
    volume = standardized(tmp_path, "head1")
    brain_map(tmp_path, "head1", n_brain=150)
    report = predict_shard(tmp_path / "no_model", "all", [volume], tmp_path / "558", 558,
                           brain_dir=tmp_path / "553")
    assert report.model_loads == 0
    assert report.outcomes[0].status == SKIPPED_NO_BRAIN
    assert "150 voxels" in report.outcomes[0].reason
    written = nib.load(tmp_path / "558" / "head1.nii.gz")
    assert written.shape == (12, 10, 8) and not np.asanyarray(written.dataobj).any()
    assert np.allclose(written.affine, AFFINE)


def test_head_volume_without_its_brain_map_fails_alone_naming_the_missing_file(tmp_path):
    missing = standardized(tmp_path, "nobrain")
    gated = standardized(tmp_path, "small")
    brain_map(tmp_path, "small", n_brain=10)
    report = predict_shard(tmp_path / "no_model", "all", [missing, gated], tmp_path / "557", 557,
                           brain_dir=tmp_path / "553")
    statuses = {o.volume_id: o for o in report.outcomes}
    assert statuses["nobrain"].status == FAILED and "553/nobrain.nii.gz" in statuses["nobrain"].reason
    assert statuses["small"].status == SKIPPED_NO_BRAIN


def test_head_group_without_brain_folder_is_refused():
    with pytest.raises(ValueError, match="557.*brain_dir"):
        predict_shard("model", "all", [], "out", 557)


def test_a_model_that_cannot_be_loaded_fails_the_job_naming_the_model_folder(tmp_path):
    volume = standardized(tmp_path, "v1")
    with pytest.raises(ModelLoadError, match="no_model"):
        predict_shard(tmp_path / "no_model", "all", [volume], tmp_path / "551", 551)


@pytest.mark.parametrize("brain_dir", [None, [], ()])
def test_a_head_group_without_brain_folders_is_refused_before_any_volume(tmp_path, brain_dir):
    with pytest.raises(ValueError, match="557 is a head group: predict_shard needs brain_dir"):
        predict_shard(tmp_path / "model", "all", [], tmp_path / "out", 557, brain_dir=brain_dir)
    assert not (tmp_path / "out").exists()
