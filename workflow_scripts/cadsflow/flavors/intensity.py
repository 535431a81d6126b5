"""Export-time intensity scaling of the flavor datasets (Online Methods 6.1).

"For image preprocessing, we scale intensities from the 5th to 95th percentiles to the range [0, 1] and apply
clipping." The percentiles are the image's own (over all its voxels, as MONAI's ScaleIntensityRangePercentiles
computes them), so the scaling is per image, not per dataset. nnU-Net cannot be told to do this without patching
(it finds normalisation classes only inside its own package), so the flavor datasets store images already scaled,
and the flavor plans name nnU-Net's NoNormalization (cadsflow.flavors.network). Every image a flavor model sees,
in training and in prediction, must go through this function first.

Two consequences of storing [0, 1] images in nnU-Net, both harmless for CT: voxels at or below the 5th percentile
(air) become exactly 0, so nnU-Net's crop to the nonzero region crops each case to the bounding box of the body
(background outside it, as nnU-Net does for any dataset with a zero background); and nnU-Net's cubic resampling
to the target spacing may overshoot [0, 1] slightly near edges (none when the export is already at the target
spacing, as the standardized 1.5 mm volumes are).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PERCENTILES = (5.0, 95.0)  # Online Methods 6.1: "from the 5th to 95th percentiles"
TARGET_RANGE = (0.0, 1.0)  # Online Methods 6.1: "to the range [0, 1] and apply clipping"


def write_scaled_image(source: str | Path, out: str | Path, percentiles: tuple[float, float] = PERCENTILES) -> None:
    """Read a CT (NIfTI or DICOM series), write its percentile-scaled float32 image to `out` (NIfTI, atomically).

    The grid (shape and affine) is kept, so the scaled image pairs with the volume's label maps voxel for voxel.
    """
    from cadsflow.imageio import read_volume, save_nifti

    volume = read_volume(source)
    save_nifti(scale_percentiles(volume.data, percentiles), volume.affine, out)


def scale_percentiles(image: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """float32 copy of `image` with its `percentiles` mapped linearly to 0 and 1, clipped to [0, 1].

    Non-finite voxels are left out of the percentiles and set to 0. An image whose two percentiles coincide (no
    contrast between them, e.g. a constant image) maps to 1 where it is above that value and 0 elsewhere.
    """
    low_q, high_q = percentiles
    if not 0 <= low_q < high_q <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    data = np.asarray(image, dtype=np.float64)
    # An integer CT (the standardized volumes are int16) has only finite voxels: skip the three masked copies.
    finite = None if np.issubdtype(np.asarray(image).dtype, np.integer) else np.isfinite(data)
    if finite is not None and finite.all():
        finite = None
    if finite is not None and not finite.any():
        return np.zeros(data.shape, dtype=np.float32)
    low, high = np.percentile(data if finite is None else data[finite], [low_q, high_q])
    out = (data - low) / (high - low) if high > low else (data > low).astype(np.float64)
    if finite is not None:
        out[~finite] = 0.0  # their own arithmetic gave them inf or nan
    return np.clip(out, *TARGET_RANGE, out=out).astype(np.float32)
