"""Face anonymization of new hospital head CTs (Online Methods 1.2): Gaussian blur of the facial region.

The face region is the `face` structure (group 553) dilated by FACE_MARGIN_VOXELS, so that the blur also covers
the skin surface just outside the segmented face; voxels outside that region are returned bit-identical. Inside,
each voxel takes the value of the whole image blurred with sigma = 5 voxels (at 1.5 mm). The blur is computed on
the region's bounding box padded by the Gaussian's support, which gives the same values as blurring the whole
image at a fraction of the cost.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FACE_BLUR_SIGMA_VOXELS = 5.0  # Online Methods 1.2: sigma = 5 voxels at 1.5 mm spacing
FACE_MARGIN_VOXELS = 3  # our choice: the face mask ends at the skin; blur a few voxels beyond it
GAUSSIAN_TRUNCATE = 4.0  # scipy's default support: 4 sigma


WITHHELD_TABLE = "withheld.tsv"  # in a batch's output folder: volumes not released, and why


class AnonymizeError(ValueError):
    """The face mask cannot be used for this image; the message names the volume and the problem."""


class EmptyFaceMask(AnonymizeError):
    """No face voxel in the mask: the model found no face (or the field of view holds none). Nothing to blur is
    indistinguishable from a missed face, so the volume is withheld, never released unblurred."""


def blur_face(
    image: np.ndarray,
    face_mask: np.ndarray,
    sigma_voxels: float = FACE_BLUR_SIGMA_VOXELS,
    margin_voxels: int = FACE_MARGIN_VOXELS,
    where: str = "",
) -> np.ndarray:
    """Return a copy of `image` whose (dilated) face region is replaced by its Gaussian-blurred values."""
    if image.shape != face_mask.shape:
        raise AnonymizeError(f"{where}: face mask shape {face_mask.shape} differs from image shape {image.shape}")
    region = face_region(face_mask, margin_voxels)
    out = np.array(image, copy=True)
    if not region.any():
        raise EmptyFaceMask(f"{where}: the face mask is empty; refusing to release the volume unblurred")
    pad = int(np.ceil(GAUSSIAN_TRUNCATE * sigma_voxels))
    box = _padded_box(region, pad)
    blurred = ndimage.gaussian_filter(
        image[box].astype(np.float32), sigma_voxels, mode="nearest", truncate=GAUSSIAN_TRUNCATE
    )
    inside = region[box]
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        blurred = np.clip(np.rint(blurred), info.min, info.max)
    out[box][inside] = blurred[inside].astype(image.dtype)
    return out


def face_region(face_mask: np.ndarray, margin_voxels: int = FACE_MARGIN_VOXELS) -> np.ndarray:
    """The face mask dilated by a ball of `margin_voxels`."""
    mask = face_mask.astype(bool)
    if margin_voxels <= 0 or not mask.any():
        return mask
    r = int(margin_voxels)
    zz, yy, xx = np.ogrid[-r : r + 1, -r : r + 1, -r : r + 1]
    ball = xx**2 + yy**2 + zz**2 <= r * r
    return ndimage.binary_dilation(mask, structure=ball)


def _padded_box(mask: np.ndarray, pad: int) -> tuple[slice, ...]:
    idx = np.nonzero(mask)
    return tuple(slice(max(0, int(i.min()) - pad), min(n, int(i.max()) + 1 + pad)) for i, n in zip(idx, mask.shape))


def anonymize_volume(image_path, face_mask_path, face_value: int, out_path, volume_id: str = "",
                     sigma_voxels: float = FACE_BLUR_SIGMA_VOXELS, margin_voxels: int = FACE_MARGIN_VOXELS) -> None:
    """Blur the face of a standardized CT: face = voxels of `face_value` in the label map at `face_mask_path`."""
    import nibabel as nib

    from cadsflow.imageio import save_nifti

    image = nib.load(str(image_path))
    face = np.asanyarray(nib.load(str(face_mask_path)).dataobj) == int(face_value)
    where = f"volume {volume_id}: {face_mask_path}"
    data = np.asanyarray(image.dataobj)
    save_nifti(blur_face(data, face, sigma_voxels, margin_voxels, where), image.affine, out_path)


def anonymize_batch(volume_ids, standardized_batch_dir, face_masks, face_value: int, out_batch_dir,
                    sigma_voxels: float = FACE_BLUR_SIGMA_VOXELS, margin_voxels: int = FACE_MARGIN_VOXELS) -> list[dict]:
    """Blur the faces of a batch: out_batch_dir/{volume_id}/image.nii.gz; a quarantined volume is left out.

    A volume whose face mask holds no face is withheld: no image, one line (volume_id, face_mask, reason) in
    out_batch_dir/withheld.tsv (written for every batch, header only when nothing is withheld), and the batch goes
    on: one missed face among 22,022 volumes is a review item, not a failed job. A missing mask file or a mask on
    another grid is a pipeline error and fails the job (AnonymizeError). Returns the withheld rows.
    """
    import json
    import logging
    from pathlib import Path

    from cadsflow.atomic import write_text

    log = logging.getLogger(__name__)
    withheld = []
    for volume_id, face in zip(volume_ids, face_masks):
        folder = Path(standardized_batch_dir) / volume_id
        if json.loads((folder / "record.json").read_text()).get("status") != "ok":
            log.info("%s: quarantined at standardization, nothing to anonymize", volume_id)
            continue
        if not Path(face).is_file():
            raise AnonymizeError(f"volume {volume_id}: face mask {face} missing; refusing to release it unblurred")
        try:
            anonymize_volume(folder / "image.nii.gz", face, face_value,
                             Path(out_batch_dir) / volume_id / "image.nii.gz", volume_id, sigma_voxels, margin_voxels)
        except EmptyFaceMask as exc:
            log.warning("%s: withheld, not released: %s", volume_id, exc)
            withheld.append({"volume_id": volume_id, "face_mask": str(face), "reason": str(exc)})
    lines = ["volume_id\tface_mask\treason"] + [f"{r['volume_id']}\t{r['face_mask']}\t{r['reason']}" for r in withheld]
    write_text(Path(out_batch_dir) / WITHHELD_TABLE, "\n".join(lines) + "\n")
    return withheld
