"""Sparse slice labels made dense (Online Methods 2.1, SAROS): shape-based interpolation between annotated slices.

SAROS annotates every 5th axial slice; the slices in between carry 255 ("not annotated"). On the standardized
1.5 mm grid each annotated source slice becomes a short run of slices (nearest-neighbour resampling), separated by
gaps of unannotated slices.

Shape-based interpolation (Raya & Udupa 1990; Herman et al. 1992), per gap between two consecutive annotated
("key") slices z0 < z1:
1. for every class c present on either key slice (background included), the signed distance d_c (mm, negative
   inside) of its mask on each key slice;
2. on slice z = z0 + t (z1 - z0): d_c(t) = (1 - t) d_c(z0) + t d_c(z1);
3. each voxel takes the class with the smallest interpolated distance: for two classes that is the zero level set
   of the interpolated distance, and for many it partitions the slice without holes or overlaps.
A class present on only one key slice tapers linearly to its deepest point on the other one (its distance map
shifted by its maximum depth), so a structure that ends inside a gap ends half-way on average instead of at a key
slice. Slices beyond the first and last key slice stay unannotated: there is nothing to interpolate from.

`nearest_slice_fill` (copy the nearest key slice) is the baseline the benchmark compares against; the factory uses
shape-based interpolation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SAROS_SLICE_STEP = 5  # SAROS (Online Methods 2.1, ref. 44): every 5th axial slice annotated
SAROS_UNANNOTATED = 255  # SAROS: value of voxels on slices nobody annotated

log = logging.getLogger(__name__)


@dataclass
class DenseLabels:
    labels: np.ndarray
    key_slices: np.ndarray  # indices of the fully annotated slices along the slice axis
    filled_slices: int  # slices whose labels were interpolated
    partial_slices: int  # slices with some but not all voxels unannotated (treated as unannotated)


def densify_sparse_labels(
    labels: np.ndarray, unannotated: int, spacing=(1.5, 1.5, 1.5), axis: int = 2
) -> DenseLabels:
    """Fill every gap between annotated slices by shape-based interpolation; return a new array."""
    spacing = tuple(float(s) for s in spacing)
    keys, partial = annotated_slices(labels, unannotated, axis)
    out = np.array(labels, copy=True)
    if len(keys) < 2:
        return DenseLabels(out, keys, 0, int(partial.sum()))
    work = np.moveaxis(out, axis, 0)  # view: slices first
    in_plane = tuple(s for a, s in enumerate(spacing) if a != axis)
    filled = 0
    for z0, z1 in zip(keys[:-1], keys[1:]):
        if z1 - z0 > 1:
            work[z0 + 1 : z1] = interpolate_gap(work[z0], work[z1], int(z1 - z0 - 1), in_plane)
            filled += int(z1 - z0 - 1)
    if partial.any():
        log.info("%d partially annotated slices were treated as unannotated", int(partial.sum()))
    return DenseLabels(out, keys, filled, int(partial.sum()))


def nearest_slice_fill(labels: np.ndarray, unannotated: int, axis: int = 2) -> np.ndarray:
    """Baseline: each slice between the first and last key slice copies its nearest key slice."""
    keys, _ = annotated_slices(labels, unannotated, axis)
    out = np.array(labels, copy=True)
    if len(keys) < 2:
        return out
    work = np.moveaxis(out, axis, 0)
    for z in range(int(keys[0]), int(keys[-1]) + 1):
        nearest = keys[np.argmin(np.abs(keys - z))]  # ties go to the lower slice
        if nearest != z:
            work[z] = work[nearest]
    return out


def annotated_slices(labels: np.ndarray, unannotated: int, axis: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(indices of slices without any unannotated voxel, mask of slices that are only partly unannotated)."""
    other = tuple(a for a in range(labels.ndim) if a != axis)
    n_unannotated = (labels == unannotated).sum(axis=other)
    n_per_slice = labels.size // labels.shape[axis]
    keys = np.flatnonzero(n_unannotated == 0)
    partial = (n_unannotated > 0) & (n_unannotated < n_per_slice)
    return keys, partial


def interpolate_gap(slice0: np.ndarray, slice1: np.ndarray, n_between: int, spacing=(1.5, 1.5)) -> np.ndarray:
    """The `n_between` slices between two key slices, by shape-based interpolation of every class."""
    classes = np.union1d(np.unique(slice0), np.unique(slice1))
    d0, d1 = _key_distances(slice0, slice1, classes, spacing)
    out = np.empty((n_between,) + slice0.shape, dtype=slice0.dtype)
    for j in range(n_between):
        t = (j + 1) / (n_between + 1)
        out[j] = classes[np.argmin((1.0 - t) * d0 + t * d1, axis=0)]
    return out


def _key_distances(slice0: np.ndarray, slice1: np.ndarray, classes, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance maps (class, x, y) of every class on both key slices.

    A class on part of a slice: its signed distance. A class absent from one key slice: the other slice's map
    shifted by its maximum depth (>= 0, zero at its deepest point), so it tapers to that point. A class filling
    a whole slice: minus the smallest distance of the other classes there (for two classes exactly the negated
    map of the other one), so that it gives way to a structure that tapers in.
    """
    slices = (slice0, slice1)
    maps: list[dict] = [{}, {}]
    for k, s in enumerate(slices):
        for c in classes:
            mask = s == c
            if mask.any() and not mask.all():
                maps[k][c] = signed_distance(mask, spacing)
    _taper_absent(slices, maps, classes)
    far = float(np.hypot(*(n * sp for n, sp in zip(slice0.shape, spacing))))  # beyond any in-slice distance
    for k, s in enumerate(slices):
        for c in classes:
            if c not in maps[k] and (s == c).all():
                others = [m for o, m in maps[k].items() if o != c]
                maps[k][c] = -np.min(others, axis=0) if others else np.full(s.shape, -far, dtype=np.float32)
    _taper_absent(slices, maps, classes)
    return (np.stack([maps[0][c] for c in classes]).astype(np.float32),
            np.stack([maps[1][c] for c in classes]).astype(np.float32))


def _taper_absent(slices, maps, classes) -> None:
    for k in (0, 1):
        other = 1 - k
        for c in classes:
            if c not in maps[k] and not (slices[k] == c).any() and c in maps[other]:
                maps[k][c] = maps[other][c] - maps[other][c].min()


def signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Signed Euclidean distance in mm: negative inside, positive outside, zero level half-way across the edge."""
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    return (outside - inside).astype(np.float32)
