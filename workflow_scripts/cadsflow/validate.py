"""Input validation: every volume is checked before anything is written for it.

A failed check raises QuarantineError with a reason a person can act on; the standardize stage turns that into
one line of the quarantine table and the rest of the factory runs on without the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cadsflow.imageio import MAX_IMAGE_BYTES, ImageTooLargeError, LoadedVolume, VolumeReadError, read_volume

GRID_TOLERANCE_MM = 1e-3  # image and label affines may differ by float noise, not by geometry
LABEL_VALUE_MAX = np.iinfo(np.int32).max  # label maps are held as int32 once whole-valued floats are converted


class QuarantineError(ValueError):
    """The volume fails a check; str() is the reason recorded in the quarantine table."""

    def __init__(self, reason: str, file: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.file = file


@dataclass(frozen=True)
class IntensityRule:
    """What a CT in Hounsfield units looks like (config: standardize.intensity)."""

    min_allowed: float = -4000.0  # below: not HU (e.g. raw detector values)
    max_allowed: float = 40000.0  # above: not HU
    air_below: float = -500.0  # a CT shows air (or -1024/-3024 padding) somewhere; MR and unscaled CT do not


def load_checked_image(path: str, rule: IntensityRule, max_bytes: int | None = MAX_IMAGE_BYTES) -> LoadedVolume:
    vol = _read(path, max_bytes)
    vol.data = _as_3d(vol.data, path)
    _check_spacing(vol, path)
    _check_finite(vol.data, path)
    _check_hu(vol.data, path, rule)
    return vol


def load_checked_label(
    path: str, image: LoadedVolume, known_values: set[int] | None, max_bytes: int | None = MAX_IMAGE_BYTES
) -> LoadedVolume:
    vol = _read(path, max_bytes)
    vol.data = _as_3d(vol.data, path)
    vol = _on_image_grid(vol, image, path)
    _check_finite(vol.data, path)
    if not np.issubdtype(vol.data.dtype, np.integer):
        vol.data = _whole_labels(vol.data, path)
    if vol.data.min() < 0:
        raise QuarantineError(f"label map has negative values (min {vol.data.min()})", path)
    if known_values is not None:
        unknown = sorted(set(np.unique(vol.data).tolist()) - set(known_values))
        if unknown:
            raise QuarantineError(
                f"label values {unknown[:10]} are not in the source's mapping (known: {sorted(known_values)[:20]})",
                path,
            )
    return vol


def _on_image_grid(label: LoadedVolume, image: LoadedVolume, path: str) -> LoadedVolume:
    """The label in the image's voxel order. A label written by another converter (rows flipped, axes in another
    order) describes the same voxel centres with another affine: it is reoriented onto the image's grid. Only a
    label whose voxel centres really differ is refused, with the largest distance between corresponding centres."""
    if label.data.shape == image.data.shape and np.allclose(label.affine, image.affine, atol=GRID_TOLERANCE_MM):
        return label
    import nibabel as nib

    transform = nib.orientations.ornt_transform(nib.io_orientation(label.affine), nib.io_orientation(image.affine))
    data = nib.orientations.apply_orientation(label.data, transform)
    affine = label.affine @ nib.orientations.inv_ornt_aff(transform, label.data.shape)
    if data.shape != image.data.shape:
        raise QuarantineError(
            f"label grid {label.data.shape} differs from image grid {image.data.shape} (also in the image's axis "
            f"order: {data.shape})", path
        )
    corners = np.array([[i, j, k, 1.0] for i in (0, data.shape[0] - 1) for j in (0, data.shape[1] - 1)
                        for k in (0, data.shape[2] - 1)])  # fmt: skip
    distance = float(np.max(np.linalg.norm((corners @ (affine - image.affine).T)[:, :3], axis=1)))
    if distance > GRID_TOLERANCE_MM:
        raise QuarantineError(
            f"label affine differs from image affine: voxel centres differ by up to {distance:.3f} mm (not on the "
            "same grid)", path
        )
    label.data, label.affine = np.ascontiguousarray(data), np.array(image.affine, dtype=float)
    return label


def _read(path: str, max_bytes: int | None) -> LoadedVolume:
    try:
        return read_volume(path, max_bytes=max_bytes)
    except ImageTooLargeError as exc:
        raise QuarantineError(f"too large: {exc}", path) from None
    except VolumeReadError as exc:
        raise QuarantineError(f"unreadable: {exc}", path) from None


def _whole_labels(data: np.ndarray, path: str) -> np.ndarray:
    """A float label map is accepted only when every value is a whole number that fits int32."""
    fractional = data[data != np.round(data)]
    if fractional.size:
        examples = ", ".join(f"{v:g}" for v in np.unique(fractional)[:5])
        raise QuarantineError(
            f"label map has {fractional.size} voxels with non-integer values (e.g. {examples}); "
            "label values must be whole numbers", path
        )
    if data.size and (data.min() < -LABEL_VALUE_MAX or data.max() > LABEL_VALUE_MAX):
        raise QuarantineError(
            f"label values {data.min():g}..{data.max():g} do not fit a 32-bit integer label map", path
        )
    return data.astype(np.int32)


def _as_3d(data: np.ndarray, path: str) -> np.ndarray:
    # Trailing singleton axes (x, y, z, 1) are a common NIfTI writer habit, not a 4-D series.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise QuarantineError(f"expected a 3-D volume, got {data.ndim}-D array of shape {data.shape}", path)
    if min(data.shape) < 2:
        raise QuarantineError(f"volume of shape {data.shape} has fewer than 2 voxels along an axis", path)
    return data


def _check_spacing(vol: LoadedVolume, path: str) -> None:
    zooms = vol.zooms
    if not np.all(np.isfinite(vol.affine)) or np.any(zooms <= 1e-6) or abs(np.linalg.det(vol.affine[:3, :3])) < 1e-9:
        raise QuarantineError(f"non-positive or degenerate voxel spacing {np.round(zooms, 4).tolist()} mm", path)


def _check_finite(data: np.ndarray, path: str) -> None:
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        if bad:
            raise QuarantineError(f"{bad} voxels are NaN or infinite", path)


def _check_hu(data: np.ndarray, path: str, rule: IntensityRule) -> None:
    lo, hi = float(data.min()), float(data.max())
    if lo < rule.min_allowed or hi > rule.max_allowed:
        raise QuarantineError(
            f"intensities {lo:.0f}..{hi:.0f} outside plausible CT range "
            f"[{rule.min_allowed:.0f}, {rule.max_allowed:.0f}] HU", path
        )
    if lo >= rule.air_below:
        raise QuarantineError(
            f"no voxel below {rule.air_below:.0f} HU (range {lo:.0f}..{hi:.0f}): intensities look like MR or "
            "unscaled CT, not Hounsfield units", path
        )
