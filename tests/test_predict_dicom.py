"""cads-predict's DICOM side on constructed series: where each source slice sits on the input grid, and the
DICOM-SEG (segments, SNOMED-CT codes, pixels per source slice) read back with highdicom and checked by dciodvfy.

`write_ct_series` is also the acceptance tests' way to turn a NIfTI CT into a DICOM series.
"""

import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from helpers import spacing_affine

from cadsflow.imageio import read_volume
from cadsflow.labels import load_label_space
from cadsflow.predict.dicomseg import (
    CATEGORY_MEANINGS,
    DicomSegError,
    read_source_images,
    segment_structures,
    source_slice_indices,
    write_dicom_seg,
)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


def write_ct_series(data, affine, folder, jpeg2000=False, modality="CT", file_order=None):
    """One single-frame CT file per axial slice, stored the DICOM way round (columns towards the patient's left,
    rows towards posterior), whatever the RAS voxel order of `data` (x, y, z) with `affine`; HU as stored values
    (signed, intercept 0) or, for JPEG 2000 lossless, unsigned with intercept -2048. Returns the file names in
    slice order (files are named by `file_order`, default reversed, so names do not follow positions)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import JPEG2000Lossless, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    nx, ny, nz = data.shape
    assert np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3])) and (np.diag(affine)[:3] > 0).all()
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    file_order = list(range(nz))[::-1] if file_order is None else file_order
    names = []
    for k in range(nz):
        frame = np.ascontiguousarray(data[::-1, ::-1, k].T)  # rows: posterior-wards; columns: left-wards
        corner = affine @ [nx - 1, ny - 1, k, 1]  # RAS of the first stored pixel (the patient's right-anterior)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = CT_IMAGE_STORAGE, sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CT_IMAGE_STORAGE, sop, modality
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Example^CT", "EX1", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_reference
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = (
            "20240101", "120000", "1", "", "")
        ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer, ds.PositionReferenceIndicator = 1, k + 1, "test", ""
        ds.PatientPosition, ds.Laterality = "FFS", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [pydicom.valuerep.format_number_as_ds(float(v))
                                   for v in (-corner[0], -corner[1], corner[2])]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [float(affine[1, 1]), float(affine[0, 0])]
        ds.SliceThickness = float(affine[2, 2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = frame.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.RescaleSlope, ds.RescaleType, ds.KVP, ds.AcquisitionNumber = 1, "HU", "", ""
        if jpeg2000:
            ds.PixelRepresentation, ds.RescaleIntercept = 0, -2048
            ds.PixelData = (frame.astype(np.int32) + 2048).astype(np.uint16).tobytes()
            ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        else:
            ds.PixelRepresentation, ds.RescaleIntercept = 1, 0
            ds.PixelData = frame.astype(np.int16).tobytes()
        name = folder / f"IM{file_order[k]:04d}.dcm"
        ds.save_as(name, enforce_file_format=True)
        names.append(name)
    return names


def small_ct(shape=(40, 36, 6)):
    """A CT-like volume: air around a soft-tissue block with a bone core; a different value on every slice.
    (At least 32 pixels a side: OpenJPEG's default six resolutions need them.)"""
    data = np.full(shape, -1000, dtype=np.int16)
    data[2:-2, 2:-2, :] = 40
    data[5:9, 4:8, :] = 700
    data += np.arange(shape[2], dtype=np.int16)[None, None, :]
    return data


AFFINE = spacing_affine((0.8, 0.9, 2.5), origin=(-30.0, 12.5, 100.0))


def labelled(volume_shape):
    """A combined map (global ids) with lateral structures, a tissue category, and one absent-in-slice-0 label."""
    space = load_label_space()
    combined = np.zeros(volume_shape, dtype=np.uint8)
    combined[1:4, 1:4, 1:5] = space.by_name("kidney_right").global_id
    combined[9:12, 1:4, 1:5] = space.by_name("kidney_left").global_id
    combined[5:9, 4:8, :] = space.by_name("bones").global_id
    combined[6, 9, 5] = space.by_name("brain").global_id
    return combined


@pytest.fixture
def series(tmp_path):
    folder = tmp_path / "series"
    write_ct_series(small_ct(), AFFINE, folder)
    return folder


def test_constructed_series_reads_back_as_the_same_ct_in_the_dicom_voxel_order(tmp_path):
    data = small_ct()
    for jpeg2000 in (False, True):
        folder = tmp_path / f"j2k_{jpeg2000}"
        files = write_ct_series(data, AFFINE, folder, jpeg2000=jpeg2000)
        volume = read_volume(folder)
        assert np.array_equal(volume.data, data[::-1, ::-1, :])  # x and y stored the other way round
        corner = AFFINE @ [data.shape[0] - 1, data.shape[1] - 1, 0, 1]
        np.testing.assert_allclose(volume.affine[:3, 3], corner[:3], atol=1e-6)
        np.testing.assert_allclose(np.diag(volume.affine)[:3], [-0.8, -0.9, 2.5], atol=1e-9)
        assert (JPEG2000_LOSSLESS.encode() in files[0].read_bytes()) == jpeg2000


def test_each_source_slice_is_matched_to_its_grid_slice_by_position_not_file_name(series):
    volume = read_volume(series)
    sources = read_source_images(series)
    indices = source_slice_indices(sources, volume.affine, volume.data.shape)
    instance_slices = [int(ds.InstanceNumber) - 1 for ds in sources]  # the writer numbered slices bottom-up
    assert indices == instance_slices and sorted(indices) == list(range(6))


def test_a_source_slice_off_the_grid_is_refused_naming_its_file(series):
    volume = read_volume(series)
    sources = read_source_images(series)
    sources[2].ImagePositionPatient = [float(v) + (1.25 if i == 2 else 0.0)
                                       for i, v in enumerate(sources[2].ImagePositionPatient)]
    with pytest.raises(DicomSegError, match=re.escape(str(sources[2].filename)) + ".*not a slice of the series. grid"):
        source_slice_indices(sources, volume.affine, volume.data.shape)


def test_segments_are_the_structures_present_in_global_id_order():
    space = load_label_space()
    names = [s.name for s in segment_structures(labelled(small_ct().shape), space)]
    expected = sorted(["kidney_right", "kidney_left", "bones", "brain"], key=lambda n: space.by_name(n).global_id)
    assert names == expected


def test_dicom_seg_reads_back_with_segment_labels_snomed_codes_and_laterality(series, tmp_path):
    import highdicom as hd

    space = load_label_space()
    volume = read_volume(series)
    combined = labelled(volume.data.shape)
    written = write_dicom_seg(combined, volume.affine, read_source_images(series), tmp_path / "seg.dcm", space)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert list(seg.segment_numbers) == list(range(1, len(written) + 1))
    table = _table_rows()
    for number, structure in zip(seg.segment_numbers, written):
        description = seg.get_segment_description(number)
        row = table[structure.name]
        assert description.segment_label == row["display_name"]
        category = description.segmented_property_category
        assert (category.value, category.scheme_designator) == (row["category_code_sct"], "SCT")
        assert category.meaning == CATEGORY_MEANINGS[row["category_code_sct"]]
        kind = description.segmented_property_type
        assert (kind.value, kind.scheme_designator, kind.meaning) == (row["type_code"], "SCT", row["type_meaning"])
        modifiers = getattr(description.SegmentedPropertyTypeCodeSequence[0],
                            "SegmentedPropertyTypeModifierCodeSequence", [])
        assert [(m.CodeValue, m.CodeMeaning) for m in modifiers] == (
            [(row["type_modifier_code"], row["type_modifier_meaning"])] if row["type_modifier_code"] else [])
    assert {s.name: s.modifier_meaning for s in written}["kidney_left"] == "Left"


def test_dicom_seg_pixels_of_each_source_slice_equal_the_label_map_there(series, tmp_path):
    import highdicom as hd

    volume = read_volume(series)
    combined = labelled(volume.data.shape)
    sources = read_source_images(series)
    written = write_dicom_seg(combined, volume.affine, sources, tmp_path / "seg.dcm")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    global_of_segment = np.array([0] + [s.global_id for s in written])
    assert seg.get_source_image_uids()[0][1] == sources[0].SeriesInstanceUID  # references the input series
    for ds, k in zip(sources, source_slice_indices(sources, volume.affine, volume.data.shape)):
        pixels = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True,
                                                   ignore_spatial_locations=True)[0]
        assert np.array_equal(global_of_segment[pixels], combined[:, :, k].T)


def test_dicom_seg_without_any_structure_is_refused(series, tmp_path):
    volume = read_volume(series)
    with pytest.raises(DicomSegError, match="no structure was predicted"):
        write_dicom_seg(np.zeros(volume.data.shape, np.uint8), volume.affine, read_source_images(series),
                        tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_dciodvfy_reports_no_error_for_the_dicom_seg(series, tmp_path):
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed")
    volume = read_volume(series)
    write_dicom_seg(labelled(volume.data.shape), volume.affine, read_source_images(series), tmp_path / "seg.dcm")
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_dciodvfy_check_catches_a_broken_dicom_seg(series, tmp_path):
    """The check above would fail on a SEG missing a mandatory attribute."""
    import pydicom

    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian's dicom3tools) is not installed")
    volume = read_volume(series)
    write_dicom_seg(labelled(volume.data.shape), volume.affine, read_source_images(series), tmp_path / "seg.dcm")
    ds = pydicom.dcmread(tmp_path / "seg.dcm")
    del ds.SegmentSequence[0].SegmentLabel
    ds.save_as(tmp_path / "broken.dcm")
    assert any("SegmentLabel" in line for line in dciodvfy_errors(tmp_path / "broken.dcm"))


def dciodvfy_errors(path):
    """dciodvfy's error lines for a file (its warnings are not errors)."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def _table_rows():
    import csv

    from cadsflow.paths import STRUCTURES_TSV

    with open(STRUCTURES_TSV, newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle, delimiter="\t")}


def test_nifti_written_from_the_example_grid_keeps_its_affine_through_the_series(tmp_path):
    """The acceptance tests' conversion: the series of a 3 mm CT reads back on the same world grid (LPS order)."""
    affine = spacing_affine((3.0, 3.0, 3.0), origin=(-177.95632934570312, 11.319000244140625, 94.3017578125))
    data = small_ct((40, 36, 4))
    write_ct_series(data, affine, tmp_path / "s")
    volume = read_volume(tmp_path / "s")
    flipped = nib.orientations.apply_orientation(volume.data, [[0, -1], [1, -1], [2, 1]])
    assert np.array_equal(flipped, data)
    world_of_first = volume.affine @ [data.shape[0] - 1, data.shape[1] - 1, 0, 1]
    np.testing.assert_allclose(world_of_first[:3], affine[:3, 3], atol=1e-6)
