"""Reading CT volumes (NIfTI files, DICOM series folders) into one in-memory form: array (x, y, z) + RAS affine.

DICOM goes through SimpleITK/GDCM, which decodes compressed transfer syntaxes (JPEG 2000 lossless, JPEG-LS, RLE)
and orders slices by their position, not by file name, so series whose files arrive out of order load correctly.

Hostile input is refused with a reason before any voxel is read: a path that is missing, a symbolic-link loop or
a dangling link, a folder where a NIfTI file is expected, a file the process may not read, an empty file, a
`.gz` without the gzip magic, and a header whose dimensions times bytes per voxel exceed `max_bytes` (a corrupt
or hostile header claiming 100000^3 voxels must not make the job allocate petabytes, or be killed for memory and
take its batch-mates with it).
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

# SimpleITK works in LPS; NIfTI/nibabel in RAS. Flipping the first two world axes converts between them.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NIFTI_SUFFIXES = (".nii", ".nii.gz")
GZIP_MAGIC = b"\x1f\x8b"  # RFC 1952, section 2.3.1: every gzip member starts with ID1=31, ID2=139
# Decoded voxel bytes a header may claim (dims x bytes per voxel). A whole-body CT of 512 x 512 x 3000 int16 voxels
# is 1.5 GiB; 8 GiB leaves room for float32 and finer grids while refusing corrupt or hostile headers before the
# read allocates. Configurable per call (standardize: StandardizeSettings.max_image_bytes).
MAX_IMAGE_BYTES = 8 * 2**30


class VolumeReadError(ValueError):
    """A file could not be read as a volume; the message names the file and why."""


class ImageTooLargeError(VolumeReadError):
    """The header claims more voxel bytes than allowed; raised before any voxel is read."""


@dataclass
class LoadedVolume:
    data: np.ndarray  # (x, y, z) voxel order, as nibabel gives it
    affine: np.ndarray  # 4x4 voxel -> RAS world (mm)
    path: str

    @property
    def zooms(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def read_volume(path: str | Path, dtype=None, max_bytes: int | None = MAX_IMAGE_BYTES) -> LoadedVolume:
    """Read a NIfTI file or a DICOM series folder; raise VolumeReadError naming the file on any failure.

    `max_bytes` bounds the decoded voxel bytes the header may claim (None: no bound); checked before reading.
    """
    path = Path(path)
    check_readable_path(path)
    try:
        if path.is_dir():
            return _read_dicom_series(path, max_bytes)
        if path.name.endswith(NIFTI_SUFFIXES):
            return _read_nifti(path, dtype, max_bytes)
        return _read_with_sitk(path, max_bytes)
    except VolumeReadError:
        raise
    except Exception as exc:  # nibabel/zlib/GDCM raise many types; the user needs the file and the cause
        raise VolumeReadError(f"{path}: cannot read as an image ({type(exc).__name__}: {exc})") from exc


def check_readable_path(path: str | Path) -> None:
    """Raise VolumeReadError saying why `path` cannot hold a volume, from the file system alone (no decoding)."""
    path = Path(path)
    try:
        os.stat(path)
    except OSError as exc:
        raise VolumeReadError(f"{path}: {_stat_problem(path, exc)}") from None
    if path.is_dir():
        if path.name.endswith(NIFTI_SUFFIXES):
            raise VolumeReadError(f"{path}: is a directory, expected a NIfTI file")
        if not os.access(path, os.R_OK | os.X_OK):
            raise VolumeReadError(f"{path}: permission denied (cannot list this DICOM folder)")
        return
    if not path.is_file():
        raise VolumeReadError(f"{path}: not a regular file (a device, pipe or socket)")
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(GZIP_MAGIC))
    except PermissionError:
        raise VolumeReadError(f"{path}: permission denied (cannot open for reading)") from None
    if not head:
        raise VolumeReadError(f"{path}: empty file (0 bytes)")
    if path.name.endswith(".gz") and head != GZIP_MAGIC:
        raise VolumeReadError(
            f"{path}: not gzip-compressed although named .gz (starts with bytes {head.hex(' ')}, gzip starts with "
            f"{GZIP_MAGIC.hex(' ')})"
        )


def read_header(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine without reading voxels (cheap grid checks); falls back to a full read for DICOM."""
    path = Path(path)
    check_readable_path(path)
    if path.is_file() and path.name.endswith(NIFTI_SUFFIXES):
        try:
            img = nib.load(str(path))
            return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=float)
        except Exception as exc:
            raise VolumeReadError(f"{path}: cannot read header ({type(exc).__name__}: {exc})") from exc
    vol = read_volume(path)
    return vol.data.shape, vol.affine


def _stat_problem(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (following the links never reaches a file)"
    if exc.errno == errno.ENOENT and path.is_symlink():
        return f"dangling symbolic link to {os.readlink(path)} (file not found)"
    if exc.errno == errno.ENOENT:
        return "file not found"
    if exc.errno == errno.EACCES:
        return "permission denied (a folder on the path cannot be searched)"
    return f"cannot access ({exc.strerror})"


def check_voxel_bytes(path: Path | str, shape, bytes_per_voxel: int, max_bytes: int | None) -> None:
    """Refuse a header whose dims x bytes per voxel exceed `max_bytes`, before anything is allocated."""
    if max_bytes is None:
        return
    voxels = math.prod(int(s) for s in shape)  # Python ints: 100000^3 x 8 does not overflow
    claimed = voxels * int(bytes_per_voxel)
    if claimed > max_bytes:
        dims = "x".join(str(int(s)) for s in shape)
        raise ImageTooLargeError(
            f"{path}: header claims {dims} voxels x {bytes_per_voxel} bytes = {_bytes(claimed)} of voxel data, "
            f"above the limit of {_bytes(max_bytes)}; refused before reading"
        )


def _bytes(n: int) -> str:
    """'2000000000000000 bytes (1.78 PiB)': exact, plus the largest binary unit that keeps the figure >= 1."""
    units = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    k = 0
    while k + 1 < len(units) and n >= 1024 ** (k + 1):
        k += 1
    return f"{n} bytes" + (f" ({n / 1024**k:.3g} {units[k]})" if k else "")


def _read_nifti(path: Path, dtype, max_bytes: int | None) -> LoadedVolume:
    img = nib.load(str(path))
    check_voxel_bytes(path, img.shape, img.header.get_data_dtype().itemsize, max_bytes)
    # Header ints stay ints (label maps); scaled data becomes float. np.asanyarray reads all bytes, which is
    # where a truncated .nii.gz fails (EOFError / zlib.error), caught by read_volume.
    data = np.asanyarray(img.dataobj)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    return LoadedVolume(data=data, affine=np.asarray(img.affine, dtype=float), path=str(path))


def _read_dicom_series(folder: Path, max_bytes: int | None) -> LoadedVolume:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeReadError(f"{folder}: no DICOM series found in this folder")
    if len(series) > 1:
        raise VolumeReadError(
            f"{folder}: {len(series)} DICOM series in one folder (SeriesInstanceUIDs {', '.join(sorted(series))}); "
            "expected exactly one: give each series its own folder"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])  # sorted by image position
    size, bytes_per_voxel = _sitk_header(files[0])
    check_voxel_bytes(folder, (*size[:2], len(files) * math.prod(size[2:])), bytes_per_voxel, max_bytes)
    reader.SetFileNames(files)
    return _from_sitk(reader.Execute(), str(folder))


def _read_with_sitk(path: Path, max_bytes: int | None) -> LoadedVolume:
    import SimpleITK as sitk

    size, bytes_per_voxel = _sitk_header(str(path))
    check_voxel_bytes(path, size, bytes_per_voxel, max_bytes)
    return _from_sitk(sitk.ReadImage(str(path)), str(path))


def _sitk_header(path: str) -> tuple[tuple[int, ...], int]:
    """Size and bytes per voxel (all components) from a file's header, without reading its pixels."""
    import SimpleITK as sitk

    info = sitk.ImageFileReader()
    info.SetFileName(path)
    info.ReadImageInformation()
    components = info.GetNumberOfComponents()
    probe = sitk.Image([1] * info.GetDimension(), info.GetPixelID(), components)  # one voxel of the file's type
    return tuple(int(s) for s in info.GetSize()), probe.GetSizeOfPixelComponent() * components


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
