"""Face anonymization (Online Methods 1.2): Gaussian blur, sigma 5 voxels, inside the dilated face mask only."""

import numpy as np
import pytest
from scipy import ndimage

from cadsflow.gt.anonymize import FACE_BLUR_SIGMA_VOXELS, AnonymizeError, blur_face, face_region


@pytest.fixture(scope="module")
def head():
    rng = np.random.default_rng(0)
    image = rng.integers(-200, 1200, size=(64, 60, 56)).astype(np.int16)  # texture that a blur must change
    face = np.zeros(image.shape, dtype=bool)
    face[20:40, 45:55, 20:36] = True
    return image, face, blur_face(image, face)


def test_voxels_outside_the_dilated_face_mask_are_unchanged(head):
    image, face, out = head
    outside = ~face_region(face)
    assert np.array_equal(out[outside], image[outside])


def test_voxels_inside_take_the_sigma_5_gaussian_of_the_whole_image(head):
    image, face, out = head
    region = face_region(face)
    reference = np.rint(ndimage.gaussian_filter(image.astype(np.float32), FACE_BLUR_SIGMA_VOXELS, mode="nearest"))
    assert np.abs(out[region].astype(np.float32) - reference[region]).max() <= 1.0
    assert out[region].std() < 0.2 * image[region].std()


def test_the_blurred_region_reaches_beyond_the_face_mask(head):
    _, face, _ = head
    region = face_region(face)
    assert region.sum() > face.sum() and region[face].all()


def test_an_empty_face_mask_refuses_to_release_the_volume(head):
    image, _, _ = head
    with pytest.raises(AnonymizeError, match="volume x.*empty"):
        blur_face(image, np.zeros(image.shape, dtype=bool), where="volume x")


# --- the gt_anonymize_face rule of the real Snakefile ------------------------------------------------------------

HEAD_COHORT = {  # one new-hospital head CT at 3 mm (cadsflow.demo spec format), faces blurred before release
    "seed": 20261202,
    "sources": {"hospital_heads": {"body_region": "head", "licence": "test", "regions": ["head"],
                                   "spacing": [3.0, 3.0, 3.0], "orientation": "LPS", "anonymize_face": True}},
}
FACE_ID = 1  # the value of the face in the masks this test writes (config gt.face_mask.value)


@pytest.mark.slow
def test_the_workflow_releases_a_head_ct_blurred_inside_its_face_mask_and_bit_identical_elsewhere(tmp_path):
    """Snakemake to results/anonymized/{batch} with user face masks (gt.face_mask.pattern): the released image is
    the standardized one outside the dilated mask and its sigma-5 blur inside."""
    import nibabel as nib
    import yaml

    from cadsflow.demo import build_demo_cohort
    from workflow_runner import snakemake, write_config

    (tmp_path / "cohort.yaml").write_text(yaml.safe_dump(HEAD_COHORT))
    build_demo_cohort(tmp_path / "demo", tmp_path / "cohort.yaml")
    pattern = str(tmp_path / "faces" / "{volume_id}.nii.gz")
    config = write_config(tmp_path, demo={"enabled": False, "directory": str(tmp_path / "demo")},
                          gt={"face_mask": {"pattern": pattern, "value": FACE_ID}})
    batch, volume_id = "hospital_heads.0000", "hospital_heads_case000"
    snakemake(tmp_path, f"results/standardized/{batch}", config=config, timeout=600)
    standardized = nib.load(tmp_path / "results" / "standardized" / batch / volume_id / "image.nii.gz")
    image = np.asanyarray(standardized.dataobj)
    face = np.zeros(image.shape, dtype=np.uint8)
    face[tuple(slice(n // 3, n // 3 + 8) for n in image.shape)] = FACE_ID
    face_path = pattern.format(volume_id=volume_id)
    (tmp_path / "faces").mkdir()
    nib.save(nib.Nifti1Image(face, standardized.affine), face_path)

    snakemake(tmp_path, f"results/anonymized/{batch}", config=config, timeout=600)
    released = nib.load(tmp_path / "results" / "anonymized" / batch / volume_id / "image.nii.gz")
    data = np.asanyarray(released.dataobj)
    region = ndimage.distance_transform_edt(face != FACE_ID) <= 3  # config gt.face_blur.margin_voxels: 3
    np.testing.assert_array_equal(released.affine, standardized.affine)
    assert data.dtype == image.dtype
    released_ids = [p.name for p in (tmp_path / "results" / "anonymized" / batch).iterdir() if p.is_dir()]
    assert released_ids == [volume_id]
    np.testing.assert_array_equal(data[~region], image[~region])
    reference = np.rint(ndimage.gaussian_filter(image.astype(np.float64), FACE_BLUR_SIGMA_VOXELS, mode="nearest"))
    assert np.abs(data[region] - reference[region]).max() <= 1
    assert not np.array_equal(data[region], image[region])
