"""Sparse slice labels made dense (Online Methods 2.1, SAROS): shape-based interpolation between annotated slices.

SAROS annotates every 5th axial slice; the slices in between carry 255 ("not annotated"). On the standardized
1.5 mm grid each annotated source slice becomes a short run of slices (nearest-neighbour resampling), separated by
gaps of unannotated slices.

Shape-based interpolation (Raya & Udupa 1990; Herman et al. 1992), per gap between two consecutive annotated
("key") slices z0 < z1, per label:
1. the signed distance d (mm, negative inside) of the label's mask on each key slice;
2. on slice z = z0 + t (z1 - z0): d(t) = (1 - t) d(z0) + t d(z1); the label's shape there is d(t) < 0;
3. where several labels claim a voxel, the one with the smallest d(t) wins; where none does, background.
Two refinements, both measured in workflow_scripts/benchmarks/bench_gt.py:
- Background is what no label claims, not a shape of its own: interpolating it too let its deep interior (tens of
  mm on a slice where the body narrows) outvote thin structures such as a 2-voxel body-wall ring.
- Only corresponding pieces are blended. A connected piece of a label on one key slice that does not overlap the
  label on the other (a label that ends inside the gap; a thin rib that moved further than its own width) has no
  shape to blend with: it keeps its cross-section up to half-way and ends there, d(t) = d (1 - 2t) inside, the
  expected position of an end that lies anywhere in the gap. Blending it with nothing (distance +inf) would end it
  at the key slice; tapering it to a point made thin pieces vanish right after the key slice.
Slices beyond the first and last key slice stay unannotated: there is nothing to interpolate from.

`nearest_slice_fill` (copy the nearest key slice) is the baseline the benchmark compares against; the factory uses
shape-based interpolation.

SPARSE_MODES: what the gt stage does with the unannotated slices (config gt.sparse_labels). `interpolate` (default,
the paper: Online Methods 2.1) fills them as above; `ignore` leaves them unannotated, so they become nnU-Net's
`ignore` label in every group map (cadsflow.gt.mapping) and train nothing: the model learns from the annotated
slices only, as nnU-Net's ignore label (sparse annotation) intends. Thin
structures that move between key slices (ribs) are where the two differ most (bench_learning_truth.py: the
interpolated bones score 0.66 against the phantom, the key slices 1.00).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SAROS_SLICE_STEP = 5  # SAROS (Online Methods 2.1, ref. 44): every 5th axial slice annotated
SAROS_UNANNOTATED = 255  # SAROS: value of voxels on slices nobody annotated
BACKGROUND = 0
INTERPOLATE, IGNORE = "interpolate", "ignore"
SPARSE_MODES = (INTERPOLATE, IGNORE)

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


def interpolate_gap(
    slice0: np.ndarray, slice1: np.ndarray, n_between: int, spacing=(1.5, 1.5), background: int = BACKGROUND
) -> np.ndarray:
    """The `n_between` slices between two key slices, by shape-based interpolation of every label."""
    labels = [c for c in np.union1d(np.unique(slice0), np.unique(slice1)) if c != background]
    out = np.full((n_between,) + slice0.shape, background, dtype=slice0.dtype)
    if not labels:
        return out
    fields = [_LabelField(slice0 == c, slice1 == c, spacing) for c in labels]
    values = np.asarray(labels, dtype=slice0.dtype)
    for j in range(n_between):
        t = (j + 1) / (n_between + 1)
        d = np.stack([f.at(t) for f in fields])
        nearest = np.argmin(d, axis=0)
        inside = np.take_along_axis(d, nearest[None], axis=0)[0] < 0
        out[j][inside] = values[nearest[inside]]
    return out


class _LabelField:
    """One label's interpolated signed distance between two key slices (see the module docstring)."""

    def __init__(self, mask0: np.ndarray, mask1: np.ndarray, spacing):
        paired0, alone0 = _split_by_overlap(mask0, mask1)
        paired1, alone1 = _split_by_overlap(mask1, mask0)
        self.blend = (signed_distance(paired0, spacing), signed_distance(paired1, spacing)) if paired0.any() else None
        self.alone0 = signed_distance(alone0, spacing) if alone0.any() else None
        self.alone1 = signed_distance(alone1, spacing) if alone1.any() else None
        self.shape = mask0.shape

    def at(self, t: float) -> np.ndarray:
        d = np.full(self.shape, np.inf, dtype=np.float32)
        if self.blend is not None:
            d = np.minimum(d, (1.0 - t) * self.blend[0] + t * self.blend[1])
        if self.alone0 is not None:  # ends half-way from slice 0
            d = np.minimum(d, np.where(self.alone0 < 0, self.alone0 * (1.0 - 2.0 * t), self.alone0))
        if self.alone1 is not None:  # begins half-way towards slice 1
            d = np.minimum(d, np.where(self.alone1 < 0, self.alone1 * (2.0 * t - 1.0), self.alone1))
        return d


def _split_by_overlap(mask: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pieces of `mask` that overlap `other`, pieces that do not); pieces are 8-connected components."""
    if not mask.any():
        return mask, mask
    components, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    overlapping = np.unique(components[mask & other])
    paired = np.isin(components, overlapping[overlapping > 0])
    return paired, mask & ~paired


def signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Signed Euclidean distance in mm: negative inside, positive outside, zero level half-way across the edge.
    A mask filling the whole slice is 'inside' by more than any in-slice distance."""
    if mask.all():
        return np.full(mask.shape, -float(np.hypot(*(n * s for n, s in zip(mask.shape, spacing)))), dtype=np.float32)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    return (outside - inside).astype(np.float32)
