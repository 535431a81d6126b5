"""Label maps as point sets in physical space: reading, the shared coordinate frame, boundary-biased sampling.

The coordinate frame. A point's coordinates are its RAS position in mm (through the label map's affine, so any
spacing, shear or field of view maps into the same physical space), centred on the label map's foreground centroid
(all voxels holding any of the group's labels) and divided by a fixed mm constant (``coord_scale_mm``, a preset
value, never a per-volume size). Why this frame:
- mm, not voxel indices or the field of view: volumes cropped differently or sampled at other spacings share one
  space, and a prior learns sizes in mm;
- a fixed scale, not the volume's extent: scaling each shape to unit size would hide a structure that is too
  large or too small;
- the centroid of the whole group, not of each structure and not the image centre: the image centre moves with
  the field of view, and per-structure centring would hide displaced structures. With the group's centroid a
  structure moved by d mm relative to the others stays moved by d * (1 - f) mm in this frame (f: its share of
  the group's foreground voxels), and the others move by d * f the other way, so a shift stays visible.
  The trade-off: the centroid also moves when the field of view cuts off part of the group or when the
  pseudo-label holds large spurious regions; the latent code absorbs moderate such shifts (training maps with
  varied fields of view teach it), and a large spurious region is itself what the QC must flag.
A fixed anatomical landmark would be steadier, but no landmark lies in every field of view of every group.

Sampling. Each training (and reconstruction) step draws fresh points: ``boundary_fraction`` of them at voxels
where the label changes (any of the 6 neighbours differs), offset by Gaussian noise of ``boundary_jitter_mm``,
the rest uniformly over the grid's extent. A point's label is that of its nearest voxel centre.

Unknown voxels. A ground-truth map may hold the group's `ignore` id (n + 1; cadsflow.gt.mapping) where nobody knows
the truth: a sparse source's unannotated slices, a union label. A training map read with ``allow_ignore`` keeps them;
they are no structure (not foreground for the centroid and the extent), no boundary voxel is one of them, and a point
whose nearest voxel is unknown is drawn again, so every point carries a known label, as nnU-Net gives such voxels no
loss. Pseudo-labels never hold `ignore`: scoring reads them without it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadsflow.evaluation.metrics import integer_labels
from cadsflow.evaluation.surfaces import boundary_voxels
from cadsflow.imageio import VolumeReadError, read_volume


class LabelMapError(ValueError):
    """A label map cannot be used as a shape of the group; the message names the file and the problem."""


@dataclass(frozen=True)
class LabelVolume:
    """A group label map prepared for sampling: labels (0 = background, k = label id k), geometry, frame."""

    labels: np.ndarray
    affine: np.ndarray  # voxel index -> RAS mm
    centroid_mm: np.ndarray  # the frame's origin: the foreground centroid
    scale_mm: float  # mm per normalised unit
    boundary: np.ndarray  # flat indices of voxels with a differing 6-neighbour (unknown voxels excluded)
    unknown: int | None = None  # the `ignore` id in a training map that holds it: no point takes this label

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.labels.shape

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def normalise(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous voxel indices [N, 3] -> normalised coordinates [N, 3] (float32)."""
        world = ijk @ self.affine[:3, :3].T + self.affine[:3, 3]
        return ((world - self.centroid_mm) / self.scale_mm).astype(np.float32)

    def to_index(self, normalised: np.ndarray) -> np.ndarray:
        """Normalised coordinates [N, 3] -> continuous voxel indices [N, 3]."""
        world = np.asarray(normalised, dtype=float) * self.scale_mm + self.centroid_mm
        return (world - self.affine[:3, 3]) @ np.linalg.inv(self.affine[:3, :3]).T


def read_label_map(path: str | Path, n_structures: int, allow_ignore: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a group label map (labels 0..n_structures, and n_structures + 1 = `ignore` if `allow_ignore`) as
    (uint8/uint16 array, affine); LabelMapError if unusable."""
    try:
        vol = read_volume(path)
    except VolumeReadError as exc:
        raise LabelMapError(str(exc)) from exc
    return check_label_map(vol.data, vol.affine, n_structures, str(path), allow_ignore), vol.affine


def check_label_map(labels, affine, n_structures: int, name: str, allow_ignore: bool = False) -> np.ndarray:
    """The label array as unsigned integers after checking shape, values and affine; LabelMapError naming `name`.
    With `allow_ignore` the group's `ignore` id (n_structures + 1) is a valid value (ground-truth maps)."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise LabelMapError(f"{name}: expected a 3-D label map, got shape {labels.shape}")
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise LabelMapError(f"{name}: the affine is not an invertible 4x4 matrix")
    try:
        labels = integer_labels(labels)
    except ValueError as exc:
        raise LabelMapError(f"{name}: {exc}") from None
    top = int(labels.max()) if labels.size else 0
    allowed = ignore_id(n_structures) if allow_ignore else n_structures
    if top > allowed:
        bad = np.unique(labels[labels > allowed])
        also = f", {ignore_id(n_structures)} = ignore" if allow_ignore else ""
        raise LabelMapError(f"{name}: label values {bad[:10].tolist()} are not label ids of the group "
                            f"(1..{n_structures}{also})")
    return labels.astype(np.uint8 if n_structures < 255 else np.uint16, copy=False)


def prepare(labels: np.ndarray, affine: np.ndarray, scale_mm: float, name: str = "label map",
            unknown: int | None = None) -> LabelVolume:
    """Frame and boundary of a checked label map; LabelMapError if it holds no foreground (no centroid).
    `unknown`: the `ignore` id of a training map (see the module docstring), None for a map without one."""
    affine = np.asarray(affine, dtype=float)
    if unknown is not None and not np.any(labels == unknown):
        unknown = None  # nothing unknown: sample as any map
    centroid = foreground_centroid_mm(labels, affine, unknown)
    if centroid is None:
        raise LabelMapError(f"{name}: empty label map (no voxel holds a label of the group)")
    boundary = boundary_voxels(labels)
    if unknown is not None:
        boundary = boundary[labels.ravel()[boundary] != unknown]
    return LabelVolume(labels=labels, affine=affine, centroid_mm=centroid, scale_mm=float(scale_mm),
                       boundary=boundary, unknown=unknown)


def ignore_id(n_structures: int) -> int:
    """The `ignore` id in a label map of a group of `n_structures` structures: one above the highest structure id, as
    the gt stage writes it (cadsflow.gt.mapping.ignore_label)."""
    return n_structures + 1


def structure_mask(labels: np.ndarray, unknown: int | None = None) -> np.ndarray:
    """The voxels that hold a structure (not background, not `unknown`)."""
    return labels != 0 if unknown is None else (labels != 0) & (labels != unknown)


def structure_voxels(labels: np.ndarray, unknown: int | None = None) -> tuple[np.ndarray, ...]:
    """Indices of the voxels that hold a structure (not background, not `unknown`)."""
    return np.nonzero(labels if unknown is None else structure_mask(labels, unknown))


def foreground_centroid_mm(labels: np.ndarray, affine: np.ndarray, unknown: int | None = None) -> np.ndarray | None:
    """RAS mm position of the mean foreground voxel, or None when there is none."""
    idx = structure_voxels(labels, unknown)
    if not len(idx[0]):
        return None
    mean_ijk = np.array([i.mean() for i in idx])
    return affine[:3, :3] @ mean_ijk + affine[:3, 3]


MAX_REDRAWS = 100  # rounds of redrawing points that fell on unknown voxels (each round keeps what it found)


def sample_points(vol: LabelVolume, n: int, boundary_fraction: float, jitter_mm: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` points of `vol`: normalised coordinates [n, 3] (float32) and their labels [n] (int64); none of them on an
    unknown voxel (those are drawn again, in the same boundary/uniform proportion)."""
    coords, labels = _draw_points(vol, n, boundary_fraction, jitter_mm, rng)
    if vol.unknown is None:
        return coords, labels
    keep = labels != vol.unknown
    coords, labels = coords[keep], labels[keep]
    for _ in range(MAX_REDRAWS):
        if len(labels) >= n:
            break
        more_coords, more_labels = _draw_points(vol, 2 * (n - len(labels)), boundary_fraction, jitter_mm, rng)
        keep = more_labels != vol.unknown
        coords = np.concatenate([coords, more_coords[keep]])
        labels = np.concatenate([labels, more_labels[keep]])
    if len(labels) < n:
        raise LabelMapError(f"label map: fewer than {n} points on known voxels after {MAX_REDRAWS} rounds "
                            "(almost every voxel is `ignore`)")
    return coords[:n], labels[:n]


def _draw_points(vol: LabelVolume, n: int, boundary_fraction: float, jitter_mm: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    shape = np.asarray(vol.shape)
    n_boundary = int(round(n * boundary_fraction)) if len(vol.boundary) else 0
    picks = vol.boundary[rng.integers(0, len(vol.boundary), size=n_boundary)] if n_boundary else np.empty(0, int)
    near = np.stack(np.unravel_index(picks, vol.shape), axis=1).astype(float)
    near += rng.normal(0.0, 1.0, size=near.shape) * (jitter_mm / vol.spacing)
    uniform = rng.uniform(-0.5, shape - 0.5, size=(n - n_boundary, 3))
    ijk = np.concatenate([near, uniform], axis=0)
    nearest = np.clip(np.rint(ijk).astype(np.int64), 0, shape - 1)
    labels = vol.labels[nearest[:, 0], nearest[:, 1], nearest[:, 2]].astype(np.int64)
    return vol.normalise(ijk), labels


def foreground_extent(vol: LabelVolume) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-coordinate box (lo, hi) around every foreground voxel (its corners included)."""
    idx = structure_voxels(vol.labels, vol.unknown)
    lo = np.array([i.min() for i in idx]) - 0.5
    hi = np.array([i.max() for i in idx]) + 0.5
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    points = vol.normalise(corners)
    return points.min(axis=0), points.max(axis=0)
