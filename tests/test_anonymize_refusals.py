"""Face anonymization as the gt_anonymize_face rule runs it (anonymize_batch / anonymize_volume): the privacy-critical
output results/anonymized/{batch}/{volume_id}/image.nii.gz.

A released image is the standardized CT with the dilated face region replaced by its sigma-5 Gaussian blur and every
other voxel bit-identical. When the face mask is missing or on another grid the job refuses (AnonymizeError naming the
volume) and writes no image for that volume; when it holds no face the volume is withheld (no image, a line in the
batch's withheld.tsv) and its batch-mates are released; a volume quarantined at standardization has no image and is
left out without an error (pseudo-labeling writes no face mask for it).
"""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cadsflow.gt.anonymize import FACE_BLUR_SIGMA_VOXELS, AnonymizeError, anonymize_batch, anonymize_volume
from helpers import spacing_affine, write_nifti

FACE_VALUE = 7  # any label id: the mask is "voxels of this value in the label map"
SHAPE = (48, 44, 40)
AFFINE = spacing_affine((1.5, 1.5, 1.5))
FACE_BOX = (slice(16, 30), slice(34, 40), slice(14, 26))
MARGIN = 3


def _standardized(batch_dir, volume_id, status="ok", seed=0):
    folder = batch_dir / volume_id
    folder.mkdir(parents=True)
    (folder / "record.json").write_text(json.dumps({"volume_id": volume_id, "status": status, "reason": ""}))
    image = None
    if status == "ok":
        image = np.random.default_rng(seed).integers(-300, 1300, size=SHAPE).astype(np.int16)
        write_nifti(folder / "image.nii.gz", image, AFFINE)
    return image


def _face_mask(folder, volume_id, shape=SHAPE, value=FACE_VALUE):
    labels = np.zeros(shape, dtype=np.uint8)
    labels[FACE_BOX] = value
    labels[2:6, 2:6, 2:6] = FACE_VALUE + 1  # another structure: not blurred
    return write_nifti(folder / f"{volume_id}.nii.gz", labels, AFFINE)


def _dilated_face():
    """The face box grown by a ball of radius MARGIN, computed here with a distance transform."""
    face = np.zeros(SHAPE, dtype=bool)
    face[FACE_BOX] = True
    return ndimage.distance_transform_edt(~face) <= MARGIN


@pytest.fixture()
def cohort(tmp_path):
    batch_dir, faces = tmp_path / "standardized" / "src.0000", tmp_path / "553"
    images = {"head_a": _standardized(batch_dir, "head_a", seed=1), "head_q": None}
    _standardized(batch_dir, "head_q", status="quarantined")
    _face_mask(faces, "head_a")
    return tmp_path, batch_dir, faces, images


def _anonymize(cohort, volume_ids, faces=None):
    root, batch_dir, face_dir, _ = cohort
    masks = faces or [str(face_dir / f"{v}.nii.gz") for v in volume_ids]
    out = root / "anonymized" / "src.0000"
    anonymize_batch(volume_ids, batch_dir, masks, FACE_VALUE, out, margin_voxels=MARGIN)
    return out


def test_released_image_is_blurred_inside_the_dilated_face_and_bit_identical_elsewhere(cohort):
    _, batch_dir, _, images = cohort
    out = _anonymize(cohort, ["head_a", "head_q"])
    released = nib.load(out / "head_a" / "image.nii.gz")
    data = np.asanyarray(released.dataobj)
    region = _dilated_face()
    original = images["head_a"]
    np.testing.assert_array_equal(released.affine, nib.load(batch_dir / "head_a" / "image.nii.gz").affine)
    assert data.dtype == original.dtype and data.shape == SHAPE
    np.testing.assert_array_equal(data[~region], original[~region])
    blurred = np.rint(ndimage.gaussian_filter(original.astype(np.float64), FACE_BLUR_SIGMA_VOXELS, mode="nearest"))
    assert np.abs(data[region] - blurred[region]).max() <= 1
    assert (data[region] != original[region]).mean() > 0.95  # the texture inside is gone, voxel by voxel


def test_a_quarantined_volume_without_a_face_mask_is_left_out_without_error(cohort):
    out = _anonymize(cohort, ["head_a", "head_q"])
    assert sorted(p.name for p in out.iterdir()) == ["head_a", "withheld.tsv"]
    assert (out / "withheld.tsv").read_text() == "volume_id\tface_mask\treason\n"  # quarantined is not withheld


def test_a_missing_face_mask_refuses_the_volume_naming_it_and_the_mask(cohort):
    root, batch_dir, faces, _ = cohort
    _standardized(batch_dir, "head_b", seed=2)  # no mask was written for it
    with pytest.raises(AnonymizeError, match=r"volume head_b: face mask .*553/head_b\.nii\.gz missing"):
        _anonymize(cohort, ["head_b"])
    assert not (root / "anonymized" / "src.0000" / "head_b" / "image.nii.gz").exists()


def test_a_face_mask_on_another_grid_refuses_the_volume_naming_both_shapes(cohort):
    root, batch_dir, faces, _ = cohort
    _standardized(batch_dir, "head_c", seed=3)
    _face_mask(faces, "head_c", shape=(48, 44, 39))
    with pytest.raises(AnonymizeError, match=r"head_c.*\(48, 44, 39\) differs from image shape \(48, 44, 40\)"):
        _anonymize(cohort, ["head_c"])
    assert not (root / "anonymized" / "src.0000" / "head_c" / "image.nii.gz").exists()


def test_a_face_mask_without_the_face_value_withholds_the_volume_and_releases_its_batch_mates(cohort):
    root, batch_dir, faces, _ = cohort
    _standardized(batch_dir, "head_d", seed=4)
    _face_mask(faces, "head_d", value=FACE_VALUE + 2)  # the face structure was not predicted
    out = _anonymize(cohort, ["head_a", "head_d"])
    assert not (out / "head_d").exists()  # never released unblurred
    assert (out / "head_a" / "image.nii.gz").is_file()
    rows = [line.split("\t") for line in (out / "withheld.tsv").read_text().splitlines()]
    assert rows[0] == ["volume_id", "face_mask", "reason"] and len(rows) == 2
    assert rows[1][0] == "head_d" and rows[1][1].endswith("553/head_d.nii.gz") and "face mask is empty" in rows[1][2]


def test_a_batch_with_every_face_found_has_an_empty_withheld_table(cohort):
    out = _anonymize(cohort, ["head_a"])
    assert (out / "withheld.tsv").read_text() == "volume_id\tface_mask\treason\n"


def test_anonymize_volume_writes_nothing_when_it_refuses(tmp_path):
    image = write_nifti(tmp_path / "image.nii.gz", np.zeros(SHAPE, np.int16), AFFINE)
    mask = _face_mask(tmp_path / "faces", "v", shape=(10, 10, 10))
    with pytest.raises(AnonymizeError, match="volume v"):
        anonymize_volume(image, mask, FACE_VALUE, tmp_path / "out" / "image.nii.gz", volume_id="v")
    assert not (tmp_path / "out" / "image.nii.gz").exists()
