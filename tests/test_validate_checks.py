"""Each input check of cadsflow.validate on its own: a volume that only that check stops is quarantined with the
check's reason, and the value just inside the limit passes (so a check that is too strict fails too).

Checks: Hounsfield range (config standardize.intensity: min_allowed -4000, max_allowed 40000), negative label
values, non-integer label values, an axis with fewer than 2 voxels, and DICOM folders with no series or several.
Label checks run with known_label_values=None (a hand-written sheet without a registry), where no source mapping
would catch the bad values instead.
"""

import json

import numpy as np
import pytest

from cadsflow.standardize import standardize_volume
from cadsflow.validate import IntensityRule
from helpers import ct_array, spacing_affine, write_nifti

SHAPE = (20, 18, 16)
RULE = IntensityRule()  # the defaults the config ships (config/config.yaml: standardize.intensity)


def _run(tmp_path, image, label="", known=None, vid="v1"):
    out = tmp_path / "std" / vid
    record = standardize_volume(vid, str(image), str(label), out, known_label_values=known)
    return out, record


def _quarantined(tmp_path, image, label="", known=None):
    out, record = _run(tmp_path, image, label, known)
    assert record["status"] == "quarantined", record
    assert sorted(p.name for p in out.iterdir()) == ["record.json"]
    assert json.loads((out / "record.json").read_text())["status"] == "quarantined"
    return record


def _ct_with(value, dtype=np.int32):
    data = ct_array(SHAPE).astype(dtype)
    data[10, 9, 8] = value
    return data


# --- Hounsfield range -----------------------------------------------------------------------------------------


def test_a_voxel_above_the_ct_maximum_quarantines_the_volume_naming_the_range(tmp_path):
    bad = write_nifti(tmp_path / "hot.nii.gz", _ct_with(RULE.max_allowed + 1))
    record = _quarantined(tmp_path, bad)
    assert "outside plausible CT range" in record["reason"] and "40001" in record["reason"]
    assert record["file"] == bad


def test_a_voxel_below_the_ct_minimum_quarantines_the_volume(tmp_path):
    bad = write_nifti(tmp_path / "cold.nii.gz", _ct_with(RULE.min_allowed - 1))
    record = _quarantined(tmp_path, bad)
    assert "outside plausible CT range" in record["reason"] and "-4001" in record["reason"]


@pytest.mark.parametrize("value", [RULE.min_allowed, RULE.max_allowed])
def test_voxels_exactly_at_the_ct_limits_are_accepted(tmp_path, value):
    img = write_nifti(tmp_path / "edge.nii.gz", _ct_with(value))
    assert _run(tmp_path, img)[1]["status"] == "ok"


# --- label values -----------------------------------------------------------------------------------------------


def _label_with(value, dtype):
    labels = np.zeros(SHAPE, dtype=dtype)
    labels[3:9, 4:12, 2:10] = 1
    labels[12, 5, 5] = value
    return labels


def test_a_negative_label_value_quarantines_the_volume_without_a_source_mapping(tmp_path):
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array(SHAPE))
    lab = write_nifti(tmp_path / "lab.nii.gz", _label_with(-1, np.int16))
    record = _quarantined(tmp_path, img, lab, known=None)
    assert "negative values" in record["reason"] and "-1" in record["reason"] and record["file"] == lab


@pytest.mark.parametrize("known", [None, {0, 1}])
def test_a_fractional_label_value_quarantines_the_volume(tmp_path, known):
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array(SHAPE))
    lab = write_nifti(tmp_path / "lab.nii.gz", _label_with(1.5, np.float32))  # would truncate to 1, a known value
    record = _quarantined(tmp_path, img, lab, known=known)
    assert "non-integer values" in record["reason"] and "1.5" in record["reason"]


def test_whole_valued_float_labels_are_accepted_as_the_same_integers(tmp_path):
    import nibabel as nib

    img = write_nifti(tmp_path / "ct.nii.gz", ct_array(SHAPE, seed=1), spacing_affine((3.0, 3.0, 3.0)))
    labels = _label_with(2, np.float32)
    lab = write_nifti(tmp_path / "lab.nii.gz", labels, spacing_affine((3.0, 3.0, 3.0)))
    out, record = _run(tmp_path, img, lab, known={0, 1, 2})
    assert record["status"] == "ok", record
    std = np.asarray(nib.load(out / "label.nii.gz").dataobj)
    assert np.issubdtype(std.dtype, np.integer)
    np.testing.assert_array_equal(std[::2, ::2, ::2], labels.astype(np.int32))  # 3 mm -> 1.5 mm: exact 2x


# --- grid size --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1])
def test_an_axis_of_one_voxel_quarantines_the_volume(tmp_path, axis):
    shape = list(SHAPE)
    shape[axis] = 1
    data = np.full(shape, -1000, dtype=np.int16)
    data[tuple(slice(None) if n == 1 else slice(4, n - 4) for n in shape)] = 40  # a CT in every other respect
    bad = write_nifti(tmp_path / "slab.nii.gz", data)
    record = _quarantined(tmp_path, bad)
    assert "fewer than 2 voxels" in record["reason"] and str(tuple(shape)) in record["reason"]


def test_an_axis_of_two_voxels_is_accepted(tmp_path):
    data = np.full((20, 2, 16), -1000, dtype=np.int16)
    data[5:15, :, 4:12] = 40
    img = write_nifti(tmp_path / "thin.nii.gz", data)
    assert _run(tmp_path, img)[1]["status"] == "ok"


# --- DICOM folders ----------------------------------------------------------------------------------------------


def _write_series(folder, series_uid, n_slices=4, prefix="IM"):
    sitk = pytest.importorskip("SimpleITK")
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(n_slices):
        arr = np.full((1, 12, 10), -1000, dtype=np.int16)
        arr[0, 3:9, 2:8] = 40 + k
        sl = sitk.GetImageFromArray(arr)
        sl.SetSpacing((0.8, 0.8, 2.0))
        tags = {"0008|0060": "CT", "0020|000e": series_uid, "0020|0013": str(k + 1),
                "0020|0032": f"0\\0\\{2.0 * k}", "0020|0037": "1\\0\\0\\0\\1\\0"}
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.Execute(sl)


def test_a_dicom_folder_with_one_series_is_read(tmp_path):
    _write_series(tmp_path / "one", "1.2.826.0.1.3680043.2.1125.11")
    out, record = _run(tmp_path, tmp_path / "one")
    assert record["status"] == "ok", record
    assert record["geometry"]["original_shape"] == [10, 12, 4]


def test_a_dicom_folder_holding_two_series_is_quarantined_naming_both(tmp_path):
    folder = tmp_path / "mixed"
    _write_series(folder, "1.2.826.0.1.3680043.2.1125.11", prefix="A")
    _write_series(folder, "1.2.826.0.1.3680043.2.1125.22", prefix="B")
    record = _quarantined(tmp_path, folder)
    assert "2 DICOM series" in record["reason"]
    assert "1.2.826.0.1.3680043.2.1125.11" in record["reason"] and "1.2.826.0.1.3680043.2.1125.22" in record["reason"]
    assert record["file"] == str(folder)


def test_a_folder_without_any_dicom_series_is_quarantined_saying_so(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.txt").write_text("the scans are on the other disk\n")
    record = _quarantined(tmp_path, folder)
    assert "no DICOM series" in record["reason"] and record["file"] == str(folder)
