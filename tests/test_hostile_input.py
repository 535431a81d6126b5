"""Hostile input (issue 17, item 6) through the validation and standardize library functions.

Each case of the corpus is a file a real cohort can hold: a zero-byte file, a `.nii.gz` that is not gzip, a header
claiming 100000^3 voxels, a 5-D image, float label values, a DICOM folder holding two series, a symbolic-link loop,
a folder where a file is expected, an unreadable file. Each must become exactly one quarantine record naming the
file and the problem, without crashing its batch; sheets with a BOM and CRLF line ends are read like plain ones and
a short row stops the run with the sheet's file and line. `write_hostile_corpus` is shared with the slow workflow
test (tests/test_workflow_hostile.py), which runs the same corpus through the real Snakefile.
"""

from __future__ import annotations

import gzip
import json
import os
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cadsflow.imageio import MAX_IMAGE_BYTES, read_volume
from cadsflow.sheet import SheetError, Volume, read_sheet
from cadsflow.standardize import (
    StandardizeSettings,
    settings_from_config,
    standardize_batch,
    standardize_volume,
    write_quarantine_table,
)
from cadsflow.validate import QuarantineError, load_checked_image
from helpers import ct_array, spacing_affine, write_nifti

HUGE_SIDE = 100000  # issue 17 item 6: a header claiming 100000^3 voxels
TWO_SERIES_UIDS = ("1.2.826.0.1.3680043.2.1125.17.1", "1.2.826.0.1.3680043.2.1125.17.2")
FRACTIONAL_LABEL = 1.5
FRACTIONAL_VOXELS = 8  # a 2x2x2 block


@dataclass(frozen=True)
class HostileCase:
    """One hostile volume: its sheet entries (relative to the corpus folder) and the quarantine line it must get."""

    name: str  # volume id
    image: str
    label: str  # '' for an image-only case
    file: str  # the file the quarantine line names (image or label)
    reason: str  # exact reason; '{file}' stands for the file's path as the sheet resolves it

    def expected_reason(self, root: Path) -> str:
        return self.reason.format(file=root / self.file)


def write_hostile_corpus(root: Path, unreadable: bool = False) -> list[HostileCase]:
    """Write every hostile case under `root`; with `unreadable`, add a chmod-000 file (call only where it is)."""
    root.mkdir(parents=True, exist_ok=True)
    good_image = "good_for_labels.nii.gz"
    write_nifti(root / good_image, ct_array(), spacing_affine((1.5, 1.5, 1.5)))
    cases = [
        _zero_byte(root),
        _gzip_bad_magic(root),
        _huge_header(root),
        _five_d(root),
        _float_labels(root, good_image),
        _two_dicom_series(root),
        _symlink_loop(root),
        _folder_where_a_file_is_expected(root),
    ]
    if unreadable:
        cases.append(_chmod_000(root))
    return cases


def permissions_stop_reads(folder: Path) -> bool:
    """False where the process reads a mode-000 file anyway (root, CAP_DAC_OVERRIDE)."""
    probe = folder / ".probe_unreadable"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
        return False
    except PermissionError:
        return True
    finally:
        probe.chmod(0o600)
        probe.unlink()


def _zero_byte(root: Path) -> HostileCase:
    (root / "empty.nii.gz").write_bytes(b"")
    return HostileCase("zero_byte", "empty.nii.gz", "", "empty.nii.gz", "unreadable: {file}: empty file (0 bytes)")


def _gzip_bad_magic(root: Path) -> HostileCase:
    # The common mistake: an uncompressed NIfTI renamed to .nii.gz. Its first bytes are sizeof_hdr = 348 (LE).
    write_nifti(root / "plain.nii", ct_array())
    (root / "plain.nii").rename(root / "not_gzip.nii.gz")
    return HostileCase(
        "gzip_bad_magic", "not_gzip.nii.gz", "", "not_gzip.nii.gz",
        "unreadable: {file}: not gzip-compressed although named .gz (starts with bytes 5c 01, gzip starts with 1f 8b)",
    )


def _huge_header(root: Path) -> HostileCase:
    (root / "huge.nii.gz").write_bytes(gzip.compress(nifti2_header_only((HUGE_SIDE,) * 3, np.int16)))
    claimed = HUGE_SIDE**3 * 2
    return HostileCase(
        "huge_header", "huge.nii.gz", "", "huge.nii.gz",
        f"too large: {{file}}: header claims {HUGE_SIDE}x{HUGE_SIDE}x{HUGE_SIDE} voxels x 2 bytes = {claimed} bytes "
        f"(1.78 PiB) of voxel data, above the limit of {MAX_IMAGE_BYTES} bytes (8 GiB); refused before reading",
    )


def _five_d(root: Path) -> HostileCase:
    write_nifti(root / "five_d.nii.gz", np.full((6, 6, 6, 2, 2), -1000, np.int16))
    return HostileCase(
        "five_d", "five_d.nii.gz", "", "five_d.nii.gz",
        "expected a 3-D volume, got 5-D array of shape (6, 6, 6, 2, 2)",
    )


def _float_labels(root: Path, good_image: str) -> HostileCase:
    label = np.zeros(ct_array().shape, np.float32)
    label[5:10, 5:10, 5:10] = 2.0  # whole-valued floats alone would be accepted
    label[2:4, 2:4, 2:4] = FRACTIONAL_LABEL
    write_nifti(root / "float_label.nii.gz", label, spacing_affine((1.5, 1.5, 1.5)))
    return HostileCase(
        "float_labels", good_image, "float_label.nii.gz", "float_label.nii.gz",
        f"label map has {FRACTIONAL_VOXELS} voxels with non-integer values (e.g. {FRACTIONAL_LABEL:g}); "
        "label values must be whole numbers",
    )


def _two_dicom_series(root: Path) -> HostileCase:
    folder = root / "dicom_two_series"
    for k, uid in enumerate(TWO_SERIES_UIDS):
        write_dicom_series(folder, uid, prefix=f"S{k}_", slices=3)
    return HostileCase(
        "dicom_two_series", "dicom_two_series", "", "dicom_two_series",
        f"unreadable: {{file}}: 2 DICOM series in one folder (SeriesInstanceUIDs {', '.join(TWO_SERIES_UIDS)}); "
        "expected exactly one: give each series its own folder",
    )


def _symlink_loop(root: Path) -> HostileCase:
    os.symlink("loop_b.nii.gz", root / "loop_a.nii.gz")
    os.symlink("loop_a.nii.gz", root / "loop_b.nii.gz")
    return HostileCase(
        "symlink_loop", "loop_a.nii.gz", "", "loop_a.nii.gz",
        "unreadable: {file}: symbolic link loop (following the links never reaches a file)",
    )


def _folder_where_a_file_is_expected(root: Path) -> HostileCase:
    (root / "folder.nii.gz").mkdir()
    (root / "folder.nii.gz" / "inside.txt").write_text("a folder, not a volume")
    return HostileCase(
        "folder_not_file", "folder.nii.gz", "", "folder.nii.gz",
        "unreadable: {file}: is a directory, expected a NIfTI file",
    )


def _chmod_000(root: Path) -> HostileCase:
    write_nifti(root / "locked.nii.gz", ct_array())
    (root / "locked.nii.gz").chmod(0)
    return HostileCase(
        "unreadable", "locked.nii.gz", "", "locked.nii.gz",
        "unreadable: {file}: permission denied (cannot open for reading)",
    )


def nifti2_header_only(shape, dtype) -> bytes:
    """A single-file NIfTI-2 header (int64 dims, so 100000 fits) with no voxel data behind it."""
    header = nib.Nifti2Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = len(header.binaryblock) + 4  # 540-byte header + 4-byte extension flag
    return header.binaryblock + b"\0" * 4


def write_dicom_series(folder: Path, series_uid: str, prefix: str = "IM", slices: int = 3, side: int = 8) -> None:
    """A CT series of `slices` int16 slices of side x side with a fixed SeriesInstanceUID (SimpleITK/GDCM)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(slices):
        sl = sitk.GetImageFromArray(np.full((1, side, side), -1000 + 100 * k, np.int16))
        sl.SetSpacing((1.0, 1.0, 2.0))
        tags = {
            "0008|0060": "CT", "0020|000e": series_uid, "0020|0013": str(k + 1),
            "0020|0032": f"0\\0\\{2.0 * k}", "0020|0037": "1\\0\\0\\0\\1\\0",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:04d}.dcm"))
        writer.SetImageIO("GDCMImageIO")
        writer.Execute(sl)


# --- each case through standardize_volume ----------------------------------------------------------------------

CASES = [
    "zero_byte", "gzip_bad_magic", "huge_header", "five_d", "float_labels", "dicom_two_series", "symlink_loop",
    "folder_not_file",
]


@pytest.mark.parametrize("name", CASES)
def test_hostile_volume_is_quarantined_with_its_exact_reason_and_nothing_else_is_written(tmp_path, name):
    case = next(c for c in write_hostile_corpus(tmp_path / "corpus") if c.name == name)
    root = tmp_path / "corpus"
    out = tmp_path / "std" / name
    record = standardize_volume(name, str(root / case.image), str(root / case.label) if case.label else "", out)
    assert (record["status"], record["file"], record["reason"]) == (
        "quarantined", str(root / case.file), case.expected_reason(root)
    )
    assert sorted(p.name for p in out.iterdir()) == ["record.json"]
    assert json.loads((out / "record.json").read_text())["reason"] == record["reason"]


def test_unreadable_file_is_quarantined_as_permission_denied(tmp_path):
    if not permissions_stop_reads(tmp_path):
        pytest.skip("this process reads mode-000 files (root): the folder-for-a-file case covers unreadable input")
    case = _chmod_000(tmp_path)
    try:
        record = standardize_volume("locked", str(tmp_path / case.image), "", tmp_path / "std")
    finally:
        (tmp_path / case.image).chmod(0o600)
    assert (record["status"], record["reason"]) == ("quarantined", case.expected_reason(tmp_path))


def test_batch_of_the_whole_corpus_gives_one_quarantine_line_per_hostile_volume_and_keeps_the_good_one(tmp_path):
    root = tmp_path / "corpus"
    cases = write_hostile_corpus(root)
    write_nifti(root / "good.nii.gz", ct_array(seed=3), spacing_affine((1.5, 1.5, 1.5)))  # already 1.5 mm
    volumes = [Volume("good", "src", str(root / "good.nii.gz"), "", "train_unlabelled")]
    volumes += [
        Volume(c.name, "src", str(root / c.image), str(root / c.label) if c.label else "",
               "train_gt" if c.label else "train_unlabelled")
        for c in cases
    ]
    batch = tmp_path / "std" / "src.0000"
    records = standardize_batch(volumes, batch, {}, StandardizeSettings())
    assert {r["volume_id"]: r["status"] for r in records} == {"good": "ok", **{c.name: "quarantined" for c in cases}}
    write_quarantine_table([batch], str(tmp_path / "q.tsv"), str(tmp_path / "status.tsv"))
    lines = (tmp_path / "q.tsv").read_text().splitlines()
    expected = {f"{c.name}\t{root / c.file}\t{c.expected_reason(root)}" for c in cases}
    assert lines[0] == "volume_id\tfile\treason" and len(lines) == 1 + len(cases) and set(lines[1:]) == expected
    assert nib.load(batch / "good" / "image.nii.gz").shape == (20, 18, 16)


# --- the header limit: dims x bytes per voxel, checked before reading --------------------------------------------


def test_header_limit_is_dims_times_bytes_per_voxel_and_a_volume_exactly_at_it_is_read(tmp_path):
    path = write_nifti(tmp_path / "ct.nii.gz", ct_array((64, 64, 64)))  # 64^3 int16 = 524288 bytes
    assert read_volume(path, max_bytes=524288).data.shape == (64, 64, 64)
    with pytest.raises(QuarantineError, match=r"^too large: .*64x64x64 voxels x 2 bytes = 524288 bytes"):
        load_checked_image(path, StandardizeSettings().intensity, max_bytes=524287)


def test_oversized_header_is_refused_before_its_voxel_buffer_is_allocated(tmp_path):
    path = tmp_path / "claims_51MiB.nii.gz"
    path.write_bytes(gzip.compress(nifti2_header_only((300, 300, 300), np.int16)))  # 54,000,000 bytes claimed
    tracemalloc.start()
    try:
        with pytest.raises(QuarantineError, match="refused before reading"):
            load_checked_image(str(path), StandardizeSettings().intensity, max_bytes=2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # a read that got as far as the voxels would have allocated 54 MB


def test_dicom_series_over_the_limit_is_refused_from_its_headers(tmp_path):
    write_dicom_series(tmp_path / "series", "1.2.826.0.1.3680043.2.1125.17.9", slices=4, side=8)  # 512 bytes
    assert read_volume(tmp_path / "series", max_bytes=512).data.shape == (8, 8, 4)
    with pytest.raises(QuarantineError) as err:
        load_checked_image(str(tmp_path / "series"), StandardizeSettings().intensity, max_bytes=511)
    assert err.value.reason == (
        f"too large: {tmp_path / 'series'}: header claims 8x8x4 voxels x 2 bytes = 512 bytes of voxel data, "
        "above the limit of 511 bytes; refused before reading"
    )


def test_limit_comes_from_config_with_the_default_when_absent():
    cfg = {"spacing_mm": 1.5, "image_interpolation": "cubic",
           "intensity": {"min_allowed": -4000, "max_allowed": 40000, "air_below": -500}}
    assert settings_from_config(cfg).max_image_bytes == MAX_IMAGE_BYTES == 8 * 2**30
    assert settings_from_config({**cfg, "max_image_bytes": 1000}).max_image_bytes == 1000


# --- paths and labels --------------------------------------------------------------------------------------------


def test_dangling_symlink_names_its_target(tmp_path):
    os.symlink("nowhere.nii.gz", tmp_path / "link.nii.gz")
    record = standardize_volume("v", str(tmp_path / "link.nii.gz"), "", tmp_path / "std")
    assert record["reason"] == f"unreadable: {tmp_path / 'link.nii.gz'}: dangling symbolic link to nowhere.nii.gz " \
                               "(file not found)"


def test_hostile_label_file_is_quarantined_naming_the_label_not_the_image(tmp_path):
    image = write_nifti(tmp_path / "ct.nii.gz", ct_array())
    (tmp_path / "label.nii.gz").write_bytes(b"")
    record = standardize_volume("v", image, str(tmp_path / "label.nii.gz"), tmp_path / "std")
    assert (record["file"], record["reason"]) == (
        str(tmp_path / "label.nii.gz"), f"unreadable: {tmp_path / 'label.nii.gz'}: empty file (0 bytes)"
    )


def test_whole_valued_float_labels_are_accepted_as_integers(tmp_path):
    image = write_nifti(tmp_path / "ct.nii.gz", ct_array(), spacing_affine((1.5, 1.5, 1.5)))
    label = np.zeros(ct_array().shape, np.float32)
    label[5:10, 5:10, 5:10] = 2.0
    lab = write_nifti(tmp_path / "lab.nii.gz", label, spacing_affine((1.5, 1.5, 1.5)))
    record = standardize_volume("v", image, lab, tmp_path / "std", {0, 2})
    assert record["status"] == "ok"
    out = np.asarray(nib.load(tmp_path / "std" / "label.nii.gz").dataobj)
    assert out.dtype == np.uint8 and set(np.unique(out).tolist()) == {0, 2}


def test_float_label_values_beyond_int32_are_quarantined(tmp_path):
    image = write_nifti(tmp_path / "ct.nii.gz", ct_array(), spacing_affine((1.5, 1.5, 1.5)))
    label = np.zeros(ct_array().shape, np.float64)
    label[3, 3, 3] = 3e9  # whole-valued, but int32 would wrap it to a negative label
    lab = write_nifti(tmp_path / "lab.nii.gz", label, spacing_affine((1.5, 1.5, 1.5)))
    record = standardize_volume("v", image, lab, tmp_path / "std")
    assert record["reason"] == "label values 0..3e+09 do not fit a 32-bit integer label map"


# --- sheets -------------------------------------------------------------------------------------------------------

SHEET_ROWS = [
    ["volume_id", "source", "image", "label", "split", "body_region"],
    ["a", "src", "img/a.nii.gz", "lab/a.nii.gz", "train_gt", "abdomen"],
    ["b", "src", "img/b.nii.gz", "", "train_unlabelled", ""],
]


def _sheet_text(rows, newline="\n") -> str:
    return "".join("\t".join(r) + newline for r in rows)


def test_sheet_with_bom_and_crlf_line_ends_reads_exactly_like_a_plain_lf_sheet(tmp_path):
    plain, windows = tmp_path / "plain.tsv", tmp_path / "windows.tsv"
    plain.write_text(_sheet_text(SHEET_ROWS))
    windows.write_bytes(b"\xef\xbb\xbf" + _sheet_text(SHEET_ROWS, "\r\n").encode())
    assert read_sheet(windows) == read_sheet(plain)
    assert read_sheet(windows)["b"] == Volume("b", "src", str(tmp_path / "img/b.nii.gz"), "", "train_unlabelled", "")


def test_sheet_row_with_too_few_fields_names_the_file_line_and_field_counts(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_bytes(_sheet_text([*SHEET_ROWS, ["c", "src", "img/c.nii.gz", "train_unlabelled"]], "\r\n").encode())
    with pytest.raises(SheetError) as err:
        read_sheet(sheet)
    assert str(err.value) == (
        f"{sheet}:4: row has 4 tab-separated fields, the header has 6 "
        "(volume_id, source, image, label, split, body_region); check for a missing or extra tab"
    )


def test_sheet_row_with_an_extra_value_is_refused_but_trailing_empty_fields_are_not(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_text(_sheet_text([*SHEET_ROWS, ["c", "src", "c.nii.gz", "", "test", "", "", ""]]))
    assert read_sheet(sheet)["c"].split == "test"
    sheet.write_text(_sheet_text([*SHEET_ROWS, ["c", "src", "c.nii.gz", "", "test", "", "oops"]]))
    with pytest.raises(SheetError, match=r"v\.tsv:4: row has 7 tab-separated fields, the header has 6"):
        read_sheet(sheet)


def test_blank_lines_are_skipped_and_later_rows_keep_their_physical_line_numbers(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_text(_sheet_text(SHEET_ROWS) + "\n\n" + "a\tsrc\tx.nii.gz\t\ttest\t\n")
    with pytest.raises(SheetError, match=r"v\.tsv:6: duplicate volume id 'a'"):
        read_sheet(sheet)


def test_sheet_that_is_not_utf8_names_the_line_of_the_first_bad_byte(tmp_path):
    sheet = tmp_path / "v.tsv"
    sheet.write_bytes(_sheet_text(SHEET_ROWS).encode() + "c\tsrc\tS\xe9rie.nii.gz\t\ttest\t\n".encode("latin-1"))
    with pytest.raises(SheetError) as err:
        read_sheet(sheet)
    assert str(err.value) == f"{sheet}:4: not UTF-8 text (byte 0xe9); save the sheet as UTF-8"
