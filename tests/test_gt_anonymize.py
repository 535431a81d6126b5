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
