"""The prediction as a DICOM Segmentation (highdicom) that references the input CT series.

One segment per structure present in the combined whole-body map (cadsflow.predict.combine), numbered 1..n in
global-id order, labelled with the structure's display name and coded with its SNOMED-CT category, type and
laterality from config/structures.tsv: the type's laterality goes into the Segmented Property Type Modifier Code
Sequence (DICOM PS3.3 C.8.20.4, Segment Description macro), as dcmqi and TotalSegmentator write it.

Segments are BINARY (every DICOM reader knows them; the newer LABELMAP type is not yet understood by dciodvfy and
many viewers), frames without the segment are left out (highdicom's omit_empty_frames). Each source slice gets the
frame of the label map at its own position: the slice index comes from the file's Image Position (Patient) on the
input grid, not from file names or instance numbers.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

from cadsflow import __version__
from cadsflow.atomic import atomic_path
from cadsflow.imageio import LPS_TO_RAS
from cadsflow.labels import LabelSpace, Structure, load_label_space
from cadsflow.paths import STRUCTURES_TSV

SCT = "SCT"
# DICOM PS3.16 CID 7150 "Segmentation Property Categories": the category codes config/structures.tsv uses.
CATEGORY_MEANINGS = {
    "123037004": "Anatomical Structure",
    "85756007": "Tissue",
    "260787004": "Physical object",
    "91720002": "Body Substance",
}
CATEGORY_COLUMN = "category_code_sct"
SLICE_TOLERANCE_VOXELS = 0.01  # a source slice must lie on a slice of the input grid (float noise only)
SERIES_NUMBER = 9167  # a series number unlikely to clash with the scanner's own (the 167 structures)
MANUFACTURER, MODEL_NAME, DEVICE_SERIAL = "CADS factory", "cads-predict", "none"
CONTENT_LABEL = "CADS"  # CS, at most 16 upper-case characters
ALGORITHM_NAME = "CADS"


class DicomSegError(ValueError):
    """The DICOM-SEG cannot be made for this input; the message names the file and the problem."""


def read_source_images(folder: str | Path) -> list:
    """The pydicom datasets (without pixel data) of the one CT series in `folder`, as SimpleITK/GDCM found it."""
    import pydicom
    import SimpleITK as sitk

    folder = Path(folder)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
    if not files:
        raise DicomSegError(f"{folder}: no DICOM series found")
    try:
        return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except Exception as exc:  # pydicom raises many types for broken files
        raise DicomSegError(f"{folder}: cannot read the series' DICOM headers ({type(exc).__name__}: {exc})") from None


def source_slice_indices(source_images, affine: np.ndarray, shape) -> list[int]:
    """For each source image, the index k of the input grid's slice (:, :, k) it holds; raise if one lies off-grid.

    `affine` maps the input grid (x, y, z voxel order as cadsflow.imageio reads the series) to RAS.
    """
    to_voxel = np.linalg.inv(np.asarray(affine, dtype=float))
    indices = []
    for ds in source_images:
        position_ras = LPS_TO_RAS[:3, :3] @ np.asarray(ds.ImagePositionPatient, dtype=float)
        voxel = to_voxel[:3, :3] @ position_ras + to_voxel[:3, 3]
        k = int(round(voxel[2]))
        if np.abs(voxel - [0, 0, k]).max() > SLICE_TOLERANCE_VOXELS or not 0 <= k < shape[2]:
            raise DicomSegError(f"{getattr(ds, 'filename', ds.SOPInstanceUID)}: image position "
                                f"{list(ds.ImagePositionPatient)} is not a slice of the series' grid (voxel "
                                f"{np.round(voxel, 3).tolist()})")
        if (int(ds.Columns), int(ds.Rows)) != tuple(shape[:2]):
            raise DicomSegError(f"{getattr(ds, 'filename', ds.SOPInstanceUID)}: {ds.Rows} x {ds.Columns} pixels, "
                                f"the series grid has {shape[1]} x {shape[0]}")
        indices.append(k)
    return indices


def segment_structures(combined: np.ndarray, space: LabelSpace | None = None) -> list[Structure]:
    """The structures present in the combined map (global ids), in global-id order: one segment each."""
    space = space or load_label_space()
    by_id = {s.global_id: s for s in space.structures}
    return [by_id[int(i)] for i in np.unique(combined) if i != 0]


def write_dicom_seg(combined: np.ndarray, affine: np.ndarray, source_images, out_path: str | Path,
                    space: LabelSpace | None = None, algorithm_version: str = __version__) -> list[Structure]:
    """Write `combined` (global ids on the input grid) as a BINARY DICOM-SEG of `source_images`; return the
    structures written, segment i+1 being the i-th. Raise DicomSegError when nothing is segmented."""
    import highdicom as hd
    from pydicom.uid import generate_uid

    space = space or load_label_space()
    structures = segment_structures(combined, space)
    if not structures:
        raise DicomSegError("no structure was predicted: a DICOM-SEG needs at least one segment")
    slices = source_slice_indices(source_images, affine, combined.shape)
    segment_numbers = np.zeros(int(combined.max()) + 1, dtype=np.uint16)
    for number, s in enumerate(structures, start=1):
        segment_numbers[s.global_id] = number
    # frame of source image i: rows along the grid's y axis, columns along x (the series' own pixel layout)
    frames = np.stack([segment_numbers[combined[:, :, k].T] for k in slices])
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=_ai_family(), version=str(algorithm_version)[:64])
    descriptions = [segment_description(number, s, algorithm) for number, s in enumerate(structures, start=1)]
    seg = hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=f"cadsflow {__version__}",
        device_serial_number=DEVICE_SERIAL,
        content_label=CONTENT_LABEL,
        content_description="CADS whole-body segmentation",
    )
    with atomic_path(out_path, suffix=".dcm") as tmp:
        seg.save_as(tmp)
    return structures


def segment_description(number: int, structure: Structure, algorithm):
    """highdicom's SegmentDescription with the structure's SNOMED-CT codes, laterality as a type modifier."""
    import highdicom as hd

    category = category_code(structure)
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=structure.display_name,
        segmented_property_category=hd.sr.CodedConcept(category, SCT, CATEGORY_MEANINGS[category]),
        segmented_property_type=hd.sr.CodedConcept(structure.type_code, SCT, structure.type_meaning),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    if structure.modifier_code:
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(structure.modifier_code, SCT, structure.modifier_meaning)
        ]
    return description


def category_code(structure: Structure, path: str | Path = STRUCTURES_TSV) -> str:
    """The structure's SNOMED-CT segmentation category (config/structures.tsv `category_code_sct`)."""
    code = _categories(str(Path(path).resolve())).get(structure.name, "")
    if code not in CATEGORY_MEANINGS:
        raise DicomSegError(f"{path}: structure {structure.name!r} has category {code!r}, expected one of "
                            f"{sorted(CATEGORY_MEANINGS)} (DICOM CID 7150)")
    return code


@lru_cache(maxsize=2)
def _categories(path: str) -> dict[str, str]:
    # cadsflow.labels.Structure does not carry the category column; read just that column of the same table.
    with open(path, newline="") as handle:
        return {row["name"].strip(): (row.get(CATEGORY_COLUMN) or "").strip()
                for row in csv.DictReader(handle, delimiter="\t")}


def _ai_family():
    from pydicom.sr.codedict import codes

    return codes.cid7162.ArtificialIntelligence
