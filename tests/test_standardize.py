import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from cadsflow.standardize import restore_label, restore_label_file, standardize_volume
from helpers import SHARED, ct_array, spacing_affine, write_nifti


def _labels(shape):
    lab = np.zeros(shape, dtype=np.uint8)
    lab[3:9, 4:12, 2:10] = 1
    lab[10:16, 3:10, 6:14] = 2
    return lab


def _standardize(tmp_path, image, label="", known=None, vid="v1"):
    out = tmp_path / "std" / vid
    return out, standardize_volume(vid, str(image), str(label), out, known_label_values=known)


def test_lps_volume_comes_out_ras_at_1p5mm_with_scale_only_affine(tmp_path):
    aff = np.diag([-0.8, -0.8, 1.25, 1.0])
    aff[:3, 3] = [40.0, -12.0, 300.0]
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array((30, 28, 20)), aff)
    out, record = _standardize(tmp_path, img)
    std = nib.load(out / "image.nii.gz")
    assert record["status"] == "ok"
    assert nib.aff2axcodes(std.affine) == ("R", "A", "S")
    np.testing.assert_allclose(std.header.get_zooms(), (1.5, 1.5, 1.5))
    np.testing.assert_allclose(std.affine, np.diag([1.5, 1.5, 1.5, 1.0]), atol=1e-6)  # no rotation, no translation
    assert std.shape == (16, 15, 17) and std.get_data_dtype() == np.int16


def test_lps_storage_is_flipped_so_anatomy_keeps_its_side(tmp_path):
    data = np.full((10, 10, 10), -1000, dtype=np.int16)
    data[0:3] = 500  # voxel x index 0..2 in LPS storage = the subject's right... reversed: x world is largest
    aff = np.diag([-1.5, -1.5, 1.5, 1.0])
    img = write_nifti(tmp_path / "ct.nii.gz", data, aff)
    out, _ = _standardize(tmp_path, img)
    std = np.asarray(nib.load(out / "image.nii.gz").dataobj)
    assert (std[-3:] == 500).all() and (std[:-3] == -1000).all()  # RAS: largest x index is the right side


def test_oblique_affine_loses_rotation_but_keeps_scale(tmp_path):
    theta = np.deg2rad(12)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.0, 1.0, 3.0])
    aff[:3, 3] = [5, 6, 7]
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array((15, 15, 10)), aff)
    out, record = _standardize(tmp_path, img)
    std = nib.load(out / "image.nii.gz")
    np.testing.assert_allclose(std.affine, np.diag([1.5, 1.5, 1.5, 1.0]), atol=1e-6)
    rotation = np.asarray(record["geometry"]["rotation"])
    np.testing.assert_allclose(rotation, rot, atol=1e-9)


def test_label_round_trip_is_exact_when_standardization_upsamples_by_an_integer_factor(tmp_path):
    aff = np.diag([-3.0, -3.0, 3.0, 1.0])
    aff[:3, 3] = [90.0, 60.0, -20.0]
    shape = (20, 18, 16)
    labels = _labels(shape)
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array(shape), aff)
    lab = write_nifti(tmp_path / "lab.nii.gz", labels, aff)
    out, record = _standardize(tmp_path, img, lab, known={0, 1, 2})
    std_lab = np.asarray(nib.load(out / "label.nii.gz").dataobj)
    restored, restored_affine = restore_label(std_lab, record["geometry"])
    assert restored.shape == shape
    np.testing.assert_array_equal(restored_affine, aff)
    np.testing.assert_array_equal(restored, labels)


def test_label_round_trip_from_anisotropic_grid_agrees_up_to_resampling(tmp_path):
    aff = np.diag([0.7, -0.9, 2.5, 1.0])
    shape = (40, 36, 14)
    labels = np.zeros(shape, dtype=np.uint8)
    g = np.indices(shape).astype(float)
    labels[((g[0] - 20) * 0.7) ** 2 + ((g[1] - 18) * 0.9) ** 2 + ((g[2] - 7) * 2.5) ** 2 < 12**2] = 3
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array(shape), aff)
    lab = write_nifti(tmp_path / "lab.nii.gz", labels, aff)
    out, record = _standardize(tmp_path, img, lab, known={0, 3})
    restored_path = tmp_path / "restored.nii.gz"
    restore_label_file(out / "label.nii.gz", out / "record.json", restored_path)
    restored = nib.load(restored_path)
    assert restored.shape == shape
    np.testing.assert_allclose(restored.affine, aff)
    r = np.asarray(restored.dataobj)
    dice = 2 * ((r == 3) & (labels == 3)).sum() / ((r == 3).sum() + (labels == 3).sum())
    assert dice > 0.93  # only nearest-neighbour resampling separates them


def test_restore_rejects_a_map_not_on_the_standardized_grid(tmp_path):
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array(), spacing_affine((1.5, 1.5, 1.5)))
    _, record = _standardize(tmp_path, img)
    with pytest.raises(ValueError, match="not the standardized grid"):
        restore_label(np.zeros((3, 3, 3), np.uint8), record["geometry"])


def test_dicom_series_with_jpeg2000_and_shuffled_files_loads_in_slice_order(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(5)
    arr = np.full((8, 20, 24), -1000, dtype=np.int16)  # (z, y, x)
    arr[:, 5:15, 5:20] = rng.integers(0, 200, size=(8, 10, 15))
    arr[3] = 900  # a distinctive slice: must stay third from the bottom
    folder = tmp_path / "series"
    folder.mkdir()
    order = rng.permutation(8)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(8):
        sl = sitk.GetImageFromArray(arr[k : k + 1])
        sl.SetSpacing((0.7, 0.7, 2.0))
        tags = {
            "0008|0060": "CT", "0020|000e": "1.2.826.0.1.3680043.2.1125.7", "0020|0013": str(k + 1),
            "0020|0032": f"-10\\-20\\{30 + 2.0 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{order[k]:04d}.dcm"))  # file names do not follow slice order
        writer.SetImageIO("GDCMImageIO")
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG2000")
        writer.Execute(sl)
    assert b"1.2.840.10008.1.2.4.90" in (folder / "IM0000.dcm").read_bytes()  # JPEG 2000 lossless
    out, record = _standardize(tmp_path, folder)
    assert record["status"] == "ok", record
    geometry = record["geometry"]
    assert geometry["original_shape"] == [24, 20, 8]
    np.testing.assert_allclose(geometry["zooms"], [0.7, 0.7, 2.0])
    std = np.asarray(nib.load(out / "image.nii.gz").dataobj)
    z_of_900 = np.argwhere((std == 900).all(axis=(0, 1))).ravel()
    assert z_of_900.size > 0 and np.all(np.abs(z_of_900 * 1.5 - 3 * 2.0) <= 1.5)


# --- validation and quarantine -------------------------------------------------------------------------


def _quarantined(tmp_path, image, label="", known=None):
    out, record = _standardize(tmp_path, image, label, known)
    assert record["status"] == "quarantined"
    assert sorted(p.name for p in out.iterdir()) == ["record.json"]  # nothing but the record is written
    assert json.loads((out / "record.json").read_text())["reason"] == record["reason"]
    return record


def test_truncated_gzip_is_quarantined_as_unreadable(tmp_path):
    good = write_nifti(tmp_path / "good.nii.gz", ct_array((40, 40, 40)))
    data = open(good, "rb").read()
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    record = _quarantined(tmp_path, bad)
    assert "unreadable" in record["reason"] and record["file"] == str(bad)


def test_file_that_is_not_an_image_is_quarantined(tmp_path):
    bad = tmp_path / "notes.nii.gz"
    bad.write_bytes(gzip.compress(b"this is a clinical note, not a volume"))
    assert "unreadable" in _quarantined(tmp_path, bad)["reason"]


@pytest.mark.parametrize("shape", [(20, 20), (10, 10, 10, 3)])
def test_two_d_and_four_d_arrays_are_quarantined(tmp_path, shape):
    data = np.full(shape, -1000, dtype=np.int16)
    bad = write_nifti(tmp_path / "odd.nii.gz", data)
    assert "expected a 3-D volume" in _quarantined(tmp_path, bad)["reason"]


def test_trailing_singleton_fourth_axis_is_accepted_as_3d(tmp_path):
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array()[..., None], spacing_affine((1.5, 1.5, 1.5)))
    assert _standardize(tmp_path, img)[1]["status"] == "ok"


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_infinite_voxels_are_quarantined(tmp_path, value):
    data = ct_array().astype(np.float32)
    data[5, 5, 5] = value
    bad = write_nifti(tmp_path / "nan.nii.gz", data)
    assert "NaN or infinite" in _quarantined(tmp_path, bad)["reason"]


def test_zero_spacing_is_quarantined(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((20, 18, 16))
    header.set_data_dtype(np.int16)
    header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # a scanner export with a collapsed z axis
    bad = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(ct_array(), None, header), str(bad))
    assert "spacing" in _quarantined(tmp_path, bad)["reason"]


def test_mr_like_intensity_range_is_quarantined(tmp_path):
    mr = np.random.default_rng(0).integers(0, 1200, size=(20, 20, 20)).astype(np.int16)
    bad = write_nifti(tmp_path / "mr.nii.gz", mr)
    assert "look like MR" in _quarantined(tmp_path, bad)["reason"]


def test_image_label_grid_mismatch_is_quarantined(tmp_path):
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array((20, 18, 16)))
    lab = write_nifti(tmp_path / "lab.nii.gz", np.zeros((20, 18, 15), np.uint8))
    assert "differs from image grid" in _quarantined(tmp_path, img, lab, {0})["reason"]
    lab2 = write_nifti(tmp_path / "lab2.nii.gz", np.zeros((20, 18, 16), np.uint8), spacing_affine((1, 1, 2)))
    assert "affine differs" in _quarantined(tmp_path, img, lab2, {0})["reason"]


def test_label_values_outside_the_source_mapping_are_quarantined(tmp_path):
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array((20, 18, 16)))
    lab = write_nifti(tmp_path / "lab.nii.gz", _labels((20, 18, 16)) * 3)  # values 0, 3, 6
    record = _quarantined(tmp_path, img, lab, {0, 1, 2, 3})
    assert "[6]" in record["reason"]


def test_missing_file_is_quarantined_not_raised(tmp_path):
    assert "not found" in _quarantined(tmp_path, tmp_path / "gone.nii.gz")["reason"]


def test_restandardizing_a_volume_replaces_its_folder_and_leaves_others_alone(tmp_path):
    img = write_nifti(tmp_path / "ct.nii.gz", ct_array())
    lab = write_nifti(tmp_path / "lab.nii.gz", _labels((20, 18, 16)))
    other, _ = _standardize(tmp_path, img, vid="other")
    before = (other / "image.nii.gz").read_bytes()
    out, _ = _standardize(tmp_path, img, lab, known={0, 1, 2}, vid="v1")
    assert sorted(p.name for p in out.iterdir()) == ["image.nii.gz", "label.nii.gz", "record.json"]
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"junk")
    _standardize(tmp_path, bad, vid="v1")
    # the quarantined rerun replaces the whole folder: no image or label of the earlier run stays beside its record
    assert sorted(p.name for p in out.iterdir()) == ["record.json"]
    assert json.loads((out / "record.json").read_text())["status"] == "quarantined"
    assert (other / "image.nii.gz").read_bytes() == before
    assert not list((tmp_path / "std").glob(".v1.*"))  # no temporary folders left behind


def test_restandardizing_a_quarantined_volume_after_its_file_is_fixed_writes_it_in_full(tmp_path):
    bad = tmp_path / "ct.nii.gz"
    bad.write_bytes(b"junk")
    out, first = _standardize(tmp_path, bad)
    assert first["status"] == "quarantined"
    write_nifti(bad, ct_array())
    _, second = _standardize(tmp_path, bad)
    assert second["status"] == "ok"
    assert sorted(p.name for p in out.iterdir()) == ["image.nii.gz", "record.json"]
    assert json.loads((out / "record.json").read_text()) == second


@pytest.mark.skipif(not (SHARED / "data" / "totalseg_example").is_dir(), reason="../shared/data not present")
def test_real_ct_in_a_user_sheet_standardizes_to_ras_1p5mm_and_its_labels_round_trip(tmp_path):
    from cadsflow.sheet import read_sheet

    example = SHARED / "data" / "totalseg_example"
    sheet = tmp_path / "mine.tsv"
    sheet.write_text(
        "volume_id\tsource\timage\tlabel\tsplit\n"
        f"ts_example\ttotalseg\t{example / 'example_ct_sm.nii.gz'}\t{example / 'example_seg.nii.gz'}\ttrain_gt\n"
    )
    vol = read_sheet(sheet)["ts_example"]
    out, record = _standardize(tmp_path, vol.image, vol.label, vid=vol.volume_id)
    assert record["status"] == "ok", record
    std = nib.load(out / "image.nii.gz")
    assert nib.aff2axcodes(std.affine) == ("R", "A", "S")
    np.testing.assert_allclose(std.header.get_zooms(), (1.5, 1.5, 1.5))
    original = nib.load(vol.label)
    restored, affine = restore_label(np.asarray(nib.load(out / "label.nii.gz").dataobj), record["geometry"])
    assert restored.shape == original.shape
    np.testing.assert_allclose(affine, original.affine)
    np.testing.assert_array_equal(restored, np.asarray(original.dataobj))  # 3 mm -> 1.5 mm is an exact 2x


def test_written_files_follow_the_umask_not_mkstemp_private_mode(tmp_path):
    import os

    img = write_nifti(tmp_path / "ct.nii.gz", ct_array())
    out, _ = _standardize(tmp_path, img)
    mask = os.umask(0o022)
    os.umask(mask)
    assert (out / "image.nii.gz").stat().st_mode & 0o777 == 0o666 & ~mask
