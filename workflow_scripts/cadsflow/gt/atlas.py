"""Brain-tissue labels (group 557) by atlas registration (Online Methods 2.1 (4)), and a phantom atlas for the demo.

The paper registers head CTs (HaN-Seg) with the SimNIBS head atlas using ANTs non-rigid registration. Here an
atlas is a CT-like head image plus its tissue labels in group 557's ids (label_id_in_group of config/
structures.tsv), given by path in the config. `register_atlas_labels` registers the atlas image to a head CT
with ANTs SyN (affine + symmetric diffeomorphic, mutual information) and warps the atlas labels with a
label-preserving interpolator (genericLabel by default; nearestNeighbor also allowed), so no new label values
appear.

Both images enter ANTs on their voxel grids with spacing from the affine and zero origin (standardized images have
no translation or rotation; atlas and target are treated alike, so the physical frames agree). Intensities are
clipped to REGISTRATION_HU_RANGE and shifted to be non-negative: the affine stage starts from the intensity
centre of mass, which air at -1000 HU would otherwise dominate.

`render_head_phantom` draws a deterministic head: scalp, a skull of compact outer and inner tables around spongy
diploe, CSF (subarachnoid space and ventricles), folded gray matter over white matter, eye balls, the superior
sagittal sinus (blood) and temporal muscles. Evaluated on warped coordinates it gives a target with an exactly
known deformation, which the tests and workflow_scripts/benchmarks/bench_gt.py use.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

from cadsflow.labels import LabelSpace, load_label_space

BRAIN_GROUP = 557  # Online Methods 2.1 (4): brain structures from registration
LABEL_INTERPOLATORS = ("genericLabel", "nearestNeighbor")  # never create label values that were not there
REGISTRATION_HU_RANGE = (-1000.0, 2000.0)
# A converged head registration matches the CT closely (correlation 0.978 on a demo head); SyN once put the brain
# into the neck here: below this the attempt is retried with another seed, then the volume's labels are refused.
MIN_REGISTRATION_CORRELATION = 0.9
PHANTOM_SHAPE = (96, 112, 104)  # voxels at 1.5 mm: a 144 x 168 x 156 mm field of view around the head
PHANTOM_SPACING_MM = 1.5  # Online Methods 1.2: the standardized grid

# Phantom tissues: group-557 structure name -> CT number (HU). Typical adult values.
PHANTOM_HU = {
    "scalp": 30.0,
    "compact bone": 1400.0,
    "spongy bone": 500.0,
    "csf": 8.0,
    "gray matter": 40.0,
    "white matter": 28.0,
    "eye balls": 12.0,
    "blood": 60.0,
    "head muscles": 55.0,
}
AIR_HU = -1000.0
PHANTOM_NOISE_HU = 6.0  # quantum-noise-like texture
PHANTOM_BLUR_VOXELS = 0.6  # partial-volume softening of tissue borders

log = logging.getLogger(__name__)

Warp = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


class AtlasError(ValueError):
    """An atlas or its registration is unusable; the message names the file or volume and the problem."""


@dataclass
class Atlas:
    image: np.ndarray  # HU
    labels: np.ndarray  # group-557 ids
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, ...]:
        return spacing_of(self.affine)


@dataclass(frozen=True)
class RegistrationSettings:
    transform: str = "SyN"
    interpolator: str = "genericLabel"
    random_seed: int = 20250101

    def __post_init__(self):
        if self.interpolator not in LABEL_INTERPOLATORS:
            raise AtlasError(
                f"label interpolator {self.interpolator!r} would blend labels; use one of {LABEL_INTERPOLATORS}"
            )


def register_atlas_labels(
    target_image: np.ndarray,
    target_affine: np.ndarray,
    atlas: Atlas,
    settings: RegistrationSettings = RegistrationSettings(),
    where: str = "",
) -> np.ndarray:
    """Register the atlas image to the target CT (ANTs SyN) and return the warped atlas labels (uint8, target grid).

    ANTs' CPU threads follow ITK's process-wide default (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS, read when ITK
    starts); the job's entry point sets it from the rule's threads, this function leaves the process alone.
    """
    import ants

    fixed = _to_ants(_registration_intensities(target_image), spacing_of(target_affine))
    moving = _to_ants(_registration_intensities(atlas.image), atlas.spacing)
    labels = _to_ants(atlas.labels.astype(np.float32), atlas.spacing)
    warped = None
    for attempt, seed in enumerate((settings.random_seed, settings.random_seed + 1)):
        reg: dict = {}
        try:
            reg = ants.registration(fixed=fixed, moving=moving, type_of_transform=settings.transform, random_seed=seed)
            agreement = float(np.corrcoef(reg["warpedmovout"].numpy().ravel(), fixed.numpy().ravel())[0, 1])
            if agreement >= MIN_REGISTRATION_CORRELATION:
                warped = ants.apply_transforms(
                    fixed=fixed, moving=labels, transformlist=reg["fwdtransforms"], interpolator=settings.interpolator
                )
        except Exception as exc:  # ANTs raises RuntimeError/ValueError with terse messages; name the volume
            raise AtlasError(f"{where}: ANTs registration of the atlas failed: {type(exc).__name__}: {exc}") from exc
        finally:  # ANTs leaves its transforms in the temp folder
            for path in set(reg.get("fwdtransforms", []) + reg.get("invtransforms", [])):
                Path(path).unlink(missing_ok=True)
        if warped is not None:
            break
        log.warning("%s: registration attempt %d converged poorly (correlation %.3f < %.2f)", where, attempt + 1,
                    agreement, MIN_REGISTRATION_CORRELATION)
    if warped is None:
        raise AtlasError(
            f"{where}: atlas registration did not converge (warped atlas vs. CT correlation {agreement:.3f} < "
            f"{MIN_REGISTRATION_CORRELATION} after 2 attempts)"
        )
    out = np.rint(warped.numpy()).astype(np.int16)
    allowed = np.unique(atlas.labels)
    if not np.isin(np.unique(out), allowed).all():
        raise AtlasError(f"{where}: warped labels contain values outside the atlas labels {allowed.tolist()}")
    return out.astype(np.uint8)


def load_atlas(image_path: str | Path, labels_path: str | Path, space: LabelSpace | None = None) -> Atlas:
    """Read an atlas (image + group-557 labels on the same grid); check grid and label values."""
    from cadsflow.imageio import read_volume

    image = read_volume(image_path)
    labels = read_volume(labels_path)
    if image.data.shape != labels.data.shape or not np.allclose(image.affine, labels.affine, atol=1e-3):
        raise AtlasError(f"{labels_path}: atlas labels are not on the grid of the atlas image {image_path}")
    n = len((space or load_label_space()).group(BRAIN_GROUP))
    values = np.unique(labels.data)
    if values.min() < 0 or values.max() > n:
        raise AtlasError(f"{labels_path}: atlas label values {values.tolist()} are not group-{BRAIN_GROUP} ids 0..{n}")
    return Atlas(image.data.astype(np.float32), labels.data.astype(np.uint8), image.affine)


def spacing_of(affine: np.ndarray) -> tuple[float, ...]:
    return tuple(float(s) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0)))


def _registration_intensities(image: np.ndarray) -> np.ndarray:
    lo, hi = REGISTRATION_HU_RANGE
    return (np.clip(image.astype(np.float32), lo, hi) - lo).astype(np.float32)


def _to_ants(array: np.ndarray, spacing):
    import ants

    data = np.ascontiguousarray(array, dtype=np.float32)
    return ants.from_numpy(data, origin=(0.0, 0.0, 0.0), spacing=tuple(spacing))


# ---------------------------------------------------------------- phantom atlas


def make_phantom_atlas(
    shape=PHANTOM_SHAPE, spacing_mm: float = PHANTOM_SPACING_MM, warp: Warp | None = None, seed: int = 0,
    space: LabelSpace | None = None,
) -> Atlas:
    """A deterministic CT-like head phantom with group-557 labels; `warp` deforms it (for known-answer tests)."""
    labels = render_head_phantom(shape, warp, space)
    image = phantom_ct(labels, seed, space)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    return Atlas(image, labels, affine)


def render_head_phantom(shape, warp: Warp | None = None, space: LabelSpace | None = None) -> np.ndarray:
    """Group-557 labels of the phantom head; coordinates are normalized to [-1, 1] over the field of view."""
    ids = (space or load_label_space()).group_label_map(BRAIN_GROUP)
    u, v, w = _normalized_grid(shape)
    if warp is not None:
        u, v, w = warp(u, v, w)
    rho = np.sqrt((u / 0.78) ** 2 + (v / 0.86) ** 2 + ((w - 0.02) / 0.80) ** 2)
    theta = np.arctan2(v, u)
    phi = np.arctan2(w - 0.02, np.hypot(u, v))
    gyri = 0.56 + 0.035 * np.sin(7 * theta) * np.cos(6 * phi)  # folded gray/white boundary
    labels = np.zeros(np.shape(u), dtype=np.uint8)
    layers = [  # outermost first; later entries overwrite earlier ones
        ("scalp", rho < 1.0),
        ("compact bone", rho < 0.90),
        ("spongy bone", rho < 0.845),
        ("compact bone", rho < 0.79),
        ("csf", rho < 0.75),
        ("gray matter", rho < 0.70),
        ("white matter", rho < gyri),
    ]
    for name, mask in layers:
        labels[mask] = ids[name]
    ventricles = ((np.abs(u) - 0.12) / 0.07) ** 2 + (v / 0.26) ** 2 + ((w - 0.10) / 0.11) ** 2 < 1.0
    labels[ventricles] = ids["csf"]
    sinus = (np.abs(u) < 0.05) & (rho >= 0.70) & (rho < 0.77) & (w > 0.25)
    labels[sinus] = ids["blood"]
    temporalis = (((np.abs(u) - 0.80) / 0.13) ** 2 + ((v - 0.05) / 0.36) ** 2 + ((w - 0.10) / 0.34) ** 2 < 1.0) & (
        rho >= 0.90
    )
    labels[temporalis] = ids["head muscles"]
    eyes = ((np.abs(u) - 0.30) / 0.13) ** 2 + ((v - 0.70) / 0.13) ** 2 + ((w + 0.25) / 0.13) ** 2 < 1.0
    labels[eyes] = ids["eye balls"]
    return labels


def phantom_ct(labels: np.ndarray, seed: int = 0, space: LabelSpace | None = None) -> np.ndarray:
    """CT numbers for phantom labels: tissue HU, softened borders, deterministic noise; int16."""
    ids = (space or load_label_space()).group_label_map(BRAIN_GROUP)
    lut = np.full(max(ids.values()) + 1, AIR_HU, dtype=np.float32)
    for name, hu in PHANTOM_HU.items():
        lut[ids[name]] = hu
    image = ndimage.gaussian_filter(lut[labels], PHANTOM_BLUR_VOXELS)
    image += np.random.default_rng(seed).normal(0.0, PHANTOM_NOISE_HU, labels.shape).astype(np.float32)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


def known_deformation(scale=(1.06, 0.94, 1.04), shift=(0.04, -0.03, 0.02), rotate_deg: float = 4.0,
                      wobble: float = 0.035) -> Warp:
    """A smooth invertible deformation in normalized coordinates: anisotropic scale, rotation about the
    superior axis, translation, and a sinusoidal non-linear part of amplitude `wobble` (fraction of half the FOV)."""
    c, s = np.cos(np.radians(rotate_deg)), np.sin(np.radians(rotate_deg))

    def warp(u, v, w):
        ur, vr = c * u - s * v, s * u + c * v
        uu = ur * scale[0] + shift[0] + wobble * np.sin(np.pi * v) * np.cos(np.pi * w / 2)
        vv = vr * scale[1] + shift[1] + wobble * np.sin(np.pi * w) * np.cos(np.pi * u / 2)
        ww = w * scale[2] + shift[2] + wobble * np.sin(np.pi * u) * np.cos(np.pi * v / 2)
        return uu, vv, ww

    return warp


def _normalized_grid(shape):
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2.0) / (n / 2.0) for n in shape]
    return np.meshgrid(*axes, indexing="ij")


def write_phantom_atlas(image_path: str | Path, labels_path: str | Path, shape=PHANTOM_SHAPE,
                        spacing_mm: float = PHANTOM_SPACING_MM) -> None:
    """Write the demo's phantom atlas (image int16 HU, labels uint8 group-557 ids), each file atomically."""
    from cadsflow.imageio import save_nifti

    atlas = make_phantom_atlas(tuple(int(n) for n in shape), float(spacing_mm))
    save_nifti(atlas.image, atlas.affine, image_path)
    save_nifti(atlas.labels, atlas.affine, labels_path)
    log.info("phantom atlas %s at %.2f mm: %s, %s", atlas.labels.shape, spacing_mm, image_path, labels_path)
