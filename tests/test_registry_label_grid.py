"""A source's label file written by another converter (issue 10, item 8): the same voxel centres in another axis
order or direction are accepted and reoriented; only labels whose voxel centres really differ are quarantined."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cadsflow.imageio import read_volume
from cadsflow.standardize import standardize_volume
from helpers import write_nifti


def dicom_series(folder, arr_zyx, spacing=(0.8, 0.7, 2.0)):
    """A CT series written slice by slice with SimpleITK (LPS, rows along y, columns along x)."""
    sitk = pytest.importorskip("SimpleITK")
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(arr_zyx.shape[0]):
        sl = sitk.GetImageFromArray(arr_zyx[k : k + 1])
        sl.SetSpacing(spacing)
        tags = {"0008|0060": "CT", "0020|000e": "1.2.826.0.1.3680043.2.1125.9", "0020|0013": str(k + 1),
                "0020|0032": f"-10\\-20\\{30 + spacing[2] * k}", "0020|0037": "1\\0\\0\\0\\1\\0"}  # fmt: skip
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        writer.Execute(sl)
    return folder


@pytest.fixture
def series(tmp_path):
    arr = np.full((8, 20, 24), -1000, dtype=np.int16)  # (z, y, x)
    arr[:, 5:15, 5:20] = 40
    folder = dicom_series(tmp_path / "series", arr)
    image = read_volume(folder)
    label = np.zeros(image.data.shape, np.uint8)
    label[6:12, 4:9, 2:6] = 1  # asymmetric, so a wrong flip would move it
    label[14:20, 10:16, 3:5] = 2
    return folder, image, label


def flipped(data, affine, axis):
    """The same voxel centres stored with `axis` reversed: data flipped, affine compensating."""
    flip = np.eye(4)
    flip[axis, axis] = -1.0
    flip[axis, 3] = data.shape[axis] - 1
    return np.flip(data, axis).copy(), affine @ flip


def standardized_label(tmp_path, folder, label_path, vid):
    out = tmp_path / "std" / vid
    record = standardize_volume(vid, str(folder), str(label_path), out)
    return record, (np.asarray(nib.load(out / "label.nii.gz").dataobj) if record["status"] == "ok" else None)


def test_label_with_rows_flipped_is_reoriented_onto_the_dicom_grid(tmp_path, series):
    folder, image, label = series
    reference = write_nifti(tmp_path / "same.nii.gz", label, image.affine)
    data, affine = flipped(label, image.affine, axis=1)
    other = write_nifti(tmp_path / "rows_flipped.nii.gz", data, affine)
    _, expected = standardized_label(tmp_path, folder, reference, "a")
    record, got = standardized_label(tmp_path, folder, other, "b")
    assert record["status"] == "ok" and np.array_equal(got, expected) and expected.any()


def test_label_with_axes_in_another_order_is_reoriented_onto_the_image_grid(tmp_path, series):
    folder, image, label = series
    reference = write_nifti(tmp_path / "same.nii.gz", label, image.affine)
    swap = np.eye(4)[[1, 0, 2, 3]]  # stored (y, x, z): voxel (j, i, k) is the image's (i, j, k)
    other = write_nifti(tmp_path / "swapped.nii.gz", label.transpose(1, 0, 2).copy(), image.affine @ swap)
    _, expected = standardized_label(tmp_path, folder, reference, "a")
    record, got = standardized_label(tmp_path, folder, other, "c")
    assert record["status"] == "ok" and np.array_equal(got, expected)


def test_label_whose_voxel_centres_differ_is_quarantined_with_the_largest_distance(tmp_path, series):
    folder, image, label = series
    data, affine = flipped(label, image.affine, axis=1)
    affine[:3, 3] += [0.0, 0.0, 2.5]  # and shifted 2.5 mm along z
    other = write_nifti(tmp_path / "shifted.nii.gz", data, affine)
    record, _ = standardized_label(tmp_path, folder, other, "d")
    assert record["status"] == "quarantined" and "up to 2.500 mm" in record["reason"]
