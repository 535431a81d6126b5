"""Standardization and restore_label on volumes stored with reordered axes (PIR, LSA, IPL, ARS ...), not only flips.

Every affine here permutes the voxel axes against the world axes, so a volume comes out of standardization with its
axes in another order and restore_label must undo that permutation, not only the flips. The expected arrays are
computed independently of nibabel's orientation code: each voxel's world position through the affine, then its
index along each RAS axis. At 3 mm -> 1.5 mm every standardized index 2k lands exactly on reoriented voxel k
(nearest neighbour for labels; Keys cubic weights 1, 0, 0, 0 for the image), so the answers are exact.
"""

import nibabel as nib
import numpy as np
import pytest

from cadsflow.standardize import restore_label, standardize_volume
from helpers import ct_array, write_nifti

SPACING_MM = 3.0  # 3 mm -> 1.5 mm: an exact upsampling by 2
SHAPE = (10, 12, 14)  # distinct lengths: a wrong axis order gives a wrong shape
AXES = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}  # code -> (world axis, sign)
# voxel axis order against RAS: 3-cycles (PIR, IPL, SRP) and swaps of two axes (LSA, ARS, AIL)
ORIENTATIONS = ["PIR", "IPL", "SRP", "LSA", "ARS", "AIL"]


def _affine(codes: str, origin=(31.0, -47.0, 112.0), rotate_deg: float = 0.0) -> np.ndarray:
    """Voxel axis i runs along world axis AXES[codes[i]] with SPACING_MM, optionally rotated about z."""
    linear = np.zeros((3, 3))
    for i, code in enumerate(codes):
        world, sign = AXES[code]
        linear[world, i] = sign * SPACING_MM
    t = np.deg2rad(rotate_deg)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ linear
    affine[:3, 3] = origin
    return affine


def _labels(shape=SHAPE) -> np.ndarray:
    """An asymmetric label map: every voxel's value encodes its own index, so any axis mix-up shows."""
    i, j, k = np.indices(shape)
    return (1 + (i * 7 + j * 3 + k) % 11).astype(np.uint8) * ((i + j + k) % 4 != 0)


def _in_ras_order(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The array re-indexed so that index (a, b, c) runs along R, A, S from the smallest world coordinate."""
    idx = np.indices(data.shape).reshape(3, -1)
    world = affine[:3, :3] @ idx + affine[:3, 3:4]
    ras = np.rint((world - world.min(axis=1, keepdims=True)) / SPACING_MM).astype(int)
    out = np.zeros(tuple(ras.max(axis=1) + 1), dtype=data.dtype)
    out[tuple(ras)] = data.reshape(-1)
    return out


def _standardize(tmp_path, codes, rotate_deg=0.0):
    affine = _affine(codes, rotate_deg=rotate_deg)
    labels = _labels()
    image = ct_array(SHAPE, seed=3)
    img = write_nifti(tmp_path / "ct.nii.gz", image, affine)
    lab = write_nifti(tmp_path / "lab.nii.gz", labels, affine)
    out = tmp_path / "std" / "v1"
    record = standardize_volume("v1", img, lab, out, known_label_values=set(np.unique(labels).tolist()))
    assert record["status"] == "ok", record
    return affine, image, labels, out, record


def test_independent_ras_order_helper_turns_a_pir_grid_into_the_expected_shape():
    assert _in_ras_order(_labels(), _affine("PIR")).shape == (14, 10, 12)  # R <- axis 2, A <- axis 0, S <- axis 1


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_standardized_label_and_image_sit_in_ras_order_computed_from_world_coordinates(tmp_path, codes):
    affine, image, labels, out, _ = _standardize(tmp_path, codes)
    std_label = np.asarray(nib.load(out / "label.nii.gz").dataobj)
    std_image = np.asarray(nib.load(out / "image.nii.gz").dataobj)
    expected_label = _in_ras_order(labels, affine)
    assert std_label.shape == tuple(2 * n for n in expected_label.shape)
    np.testing.assert_array_equal(std_label[::2, ::2, ::2], expected_label)
    np.testing.assert_array_equal(std_image[::2, ::2, ::2], _in_ras_order(image, affine))


@pytest.mark.parametrize("codes", ORIENTATIONS)
def test_restore_label_returns_the_original_shape_affine_and_every_voxel(tmp_path, codes):
    affine, _, labels, out, record = _standardize(tmp_path, codes)
    restored, restored_affine = restore_label(np.asarray(nib.load(out / "label.nii.gz").dataobj), record["geometry"])
    assert restored.shape == SHAPE
    np.testing.assert_array_equal(restored_affine, affine)
    np.testing.assert_array_equal(restored, labels)


@pytest.mark.parametrize("codes", ["PIR", "LSA"])
def test_restore_label_of_an_oblique_permuted_grid_is_exact_too(tmp_path, codes):
    affine, _, labels, out, record = _standardize(tmp_path, codes, rotate_deg=11.0)
    restored, restored_affine = restore_label(np.asarray(nib.load(out / "label.nii.gz").dataobj), record["geometry"])
    np.testing.assert_allclose(restored_affine, affine)
    np.testing.assert_array_equal(restored, labels)


def test_a_label_map_drawn_on_the_standardized_grid_lands_on_the_original_voxels_of_the_same_world_point(tmp_path):
    """A prediction made on the standardized grid (here: one marked RAS voxel) comes back where the anatomy is."""
    affine, _, _, out, record = _standardize(tmp_path, "PIR")
    std_shape = tuple(record["geometry"]["output_shape"])
    original_voxel = (2, 9, 5)  # i along P, j along I, k along R
    world = affine[:3, :3] @ np.array(original_voxel) + affine[:3, 3]
    corners = np.array([np.array(c) * (np.array(SHAPE) - 1) for c in np.ndindex(2, 2, 2)])
    corner = (corners @ affine[:3, :3].T + affine[:3, 3]).min(axis=0)  # world position of RAS index (0, 0, 0)
    ras_index = np.rint((world - corner) / SPACING_MM).astype(int)
    drawn = np.zeros(std_shape, dtype=np.uint8)
    drawn[tuple(2 * ras_index)] = 9
    restored, _ = restore_label(drawn, record["geometry"])
    assert np.argwhere(restored == 9).tolist() == [list(original_voxel)]
