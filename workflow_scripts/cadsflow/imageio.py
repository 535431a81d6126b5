"""Reading CT volumes (NIfTI files, DICOM series folders) into one in-memory form: array (x, y, z) + RAS affine.

DICOM goes through SimpleITK/GDCM, which decodes compressed transfer syntaxes (JPEG 2000 lossless, JPEG-LS, RLE)
and orders slices by their position, not by file name, so series whose files arrive out of order load correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

# SimpleITK works in LPS; NIfTI/nibabel in RAS. Flipping the first two world axes converts between them.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeReadError(ValueError):
    """A file could not be read as a volume; the message names the file and why."""


@dataclass
class LoadedVolume:
    data: np.ndarray  # (x, y, z) voxel order, as nibabel gives it
    affine: np.ndarray  # 4x4 voxel -> RAS world (mm)
    path: str

    @property
    def zooms(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def read_volume(path: str | Path, dtype=None) -> LoadedVolume:
    """Read a NIfTI file or a DICOM series folder; raise VolumeReadError naming the file on any failure."""
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(f"{path}: file not found")
    try:
        if path.is_dir():
            return _read_dicom_series(path)
        if path.name.endswith(NIFTI_SUFFIXES):
            return _read_nifti(path, dtype)
        return _read_with_sitk(path)
    except VolumeReadError:
        raise
    except Exception as exc:  # nibabel/zlib/GDCM raise many types; the user needs the file and the cause
        raise VolumeReadError(f"{path}: cannot read as an image ({type(exc).__name__}: {exc})") from exc


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine without reading voxels (cheap grid checks); falls back to a full read for DICOM."""
    path = Path(path)
    if path.is_file() and path.name.endswith(NIFTI_SUFFIXES):
        try:
            img = nib.load(str(path))
            return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=float)
        except Exception as exc:
            raise VolumeReadError(f"{path}: cannot read header ({type(exc).__name__}: {exc})") from exc
    vol = read_volume(path)
    return vol.data.shape, vol.affine


def _read_nifti(path: Path, dtype) -> LoadedVolume:
    img = nib.load(str(path))
    # Header ints stay ints (label maps); scaled data becomes float. np.asanyarray reads all bytes, which is
    # where a truncated .nii.gz fails (EOFError / zlib.error), caught by read_volume.
    data = np.asanyarray(img.dataobj)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return LoadedVolume(data=data, affine=np.asarray(img.affine, dtype=float), path=str(path))


def _read_dicom_series(folder: Path) -> LoadedVolume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeReadError(f"{folder}: no DICOM series found in this folder")
    if len(series) > 1:
        raise VolumeReadError(f"{folder}: {len(series)} DICOM series in one folder; expected exactly one")
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])  # sorted by image position
    reader.SetFileNames(files)
    return _from_sitk(reader.Execute(), str(folder))


def _read_with_sitk(path: Path) -> LoadedVolume:
    import SimpleITK as sitk

    return _from_sitk(sitk.ReadImage(str(path)), str(path))


def _from_sitk(image, path: str) -> LoadedVolume:
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(image)  # (z, y, x)
    data = np.ascontiguousarray(np.transpose(data, tuple(range(data.ndim))[::-1]))
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    affine = np.eye(4)
    k = min(dim, 3)
    affine[:k, :k] = (direction * np.asarray(image.GetSpacing(), dtype=float))[:k, :k]
    affine[:k, 3] = np.asarray(image.GetOrigin(), dtype=float)[:k]
    return LoadedVolume(data=data, affine=LPS_TO_RAS @ affine, path=path)


def save_nifti(data: np.ndarray, affine: np.ndarray, path: str | Path) -> None:
    """Write atomically (temporary name, then rename)."""
    from cadsflow.atomic import atomic_path

    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
