"""Rib refinement of an assembled rib label map (Online Methods 3.2): fragments, then costovertebral joints.

Stage 1, fragments: a rib predicted in pieces of different rib classes. The rib classes are binarised, split into
6-connected components, and each component takes the majority rib class of its voxels (a tie goes to the lower
label id). A component is one connected rib, so a rib whose segment carries a neighbour's class gets one class.

Stage 2, costovertebral joints: the medial rib ends where ribs meet the vertebrae are often missing. A tubular map
(vesselFM in the paper; here a Hessian vesselness filter of the CT, or an external map) finds rib-like tubes; the
candidates are tubular voxels near the spine but not in it, opened to cut thin bridges, kept by size, and each
kept component joins the nearest rib if it lies close enough. Distances are measured to the ribs after stage 1
and do not change while components are added, so the components are independent of each other (they are
disjoint); they are visited largest first, as the paper says, which changes nothing but the log's order.

Constants (voxels of the 1.5 mm standardized grid) are those of the authors' code, murong-xu/CADS
cads/dataset_utils/postprocessing_ribs.py (and rib_jxn.py): dilation ball(10), opening ball(2), components with
100 < size < 1500 voxels, merged when the minimum distance to a rib is < 6 voxels. They are read from
config/assembly.yaml (`ribs`), with these as defaults.

Equivalences used for speed (exact, not approximations): dilation of the spine by ball(r) is the set of voxels
within Euclidean distance r of it (an EDT); all work happens inside the spine's bounding box grown by what can
reach it; the distance of a component to a rib class is computed inside the component's box grown by the merge
distance (a rib voxel farther out is farther than the merge distance anyway).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage.morphology import ball

from cadsflow.assembly.blocks import ASSEMBLY_YAML, AssemblyConfigError, read_assembly_config

log = logging.getLogger(__name__)

# Defaults from murong-xu/CADS cads/dataset_utils/postprocessing_ribs.py (Online Methods 3.2 gives 100 and 1,500).
FRAGMENT_CONNECTIVITY = 6  # np_connected_components(..., connectivity=1): faces only
SPINE_DILATION_RADIUS = 10  # morphology.binary_dilation(spine_mask, morphology.ball(10))
OPENING_RADIUS = 2  # morphology.binary_opening(junction_candidates, morphology.ball(2))
MIN_COMPONENT_VOXELS = 100  # `100 < size < 1500`
MAX_COMPONENT_VOXELS = 1500
MAX_RIB_DISTANCE = 6.0  # `min_distance < 6`, voxels (distance_transform_edt without spacing)
CONNECTIVITY_RANK = {6: 1, 18: 2, 26: 3}
VESSELNESS_METHODS = ("sato", "frangi")  # skimage.filters, bright ridges  # neighbourhood size -> ndimage.generate_binary_structure rank


@dataclass(frozen=True)
class VesselnessSettings:
    """The tubular map built here when no external map is given (a stand-in for vesselFM)."""

    method: str = "sato"  # skimage.filters.sato or frangi, bright ridges
    bone_window_hu: tuple[float, float] = (150.0, 800.0)
    sigmas_mm: tuple[float, ...] = (1.5, 3.0, 4.5)
    threshold: float = 0.02
    margin_sigmas: float = 3.0


@dataclass(frozen=True)
class RibSettings:
    group: int = 555
    rib_pattern: str = r"rib_(left|right)_\d+"
    spine_group: int = 552
    fragment_connectivity: int = FRAGMENT_CONNECTIVITY
    spine_dilation_radius: int = SPINE_DILATION_RADIUS
    opening_radius: int = OPENING_RADIUS
    min_component_voxels: int = MIN_COMPONENT_VOXELS
    max_component_voxels: int = MAX_COMPONENT_VOXELS
    max_rib_distance: float = MAX_RIB_DISTANCE
    tubular_map: str | None = None  # path template with {volume_id}; None: vesselness of the CT
    vesselness: VesselnessSettings = field(default_factory=VesselnessSettings)


@dataclass(frozen=True)
class JointMerge:
    """One candidate component added to a rib."""

    rib_id: int
    n_voxels: int  # the component's size
    n_added: int  # of those, voxels that did not hold this rib before
    distance: float  # minimum distance (voxels) from the component to the rib


@dataclass(frozen=True)
class RibRefinement:
    labels: np.ndarray
    fragments_relabelled: int  # voxels whose rib class stage 1 changed
    joints: tuple[JointMerge, ...]  # stage 2 merges, largest component first

    @property
    def joint_voxels(self) -> int:
        """Voxels that the joint stage gave a rib label they did not have."""
        return sum(j.n_added for j in self.joints)


def refine_ribs(
    labels: np.ndarray,
    rib_ids: Sequence[int],
    spine: np.ndarray,
    tubular: np.ndarray | None,
    settings: RibSettings = RibSettings(),
) -> RibRefinement:
    """Both stages on a label map (other labels than rib_ids stay as they are); `spine` and `tubular` are boolean
    maps on the same grid; without a tubular map only stage 1 runs."""
    fixed = relabel_fragments(labels, rib_ids, settings.fragment_connectivity)
    relabelled = int(np.count_nonzero(fixed != labels))
    joints: tuple[JointMerge, ...] = ()
    if tubular is not None:
        fixed, joints = add_costovertebral_joints(fixed, rib_ids, spine, tubular, settings)
    return RibRefinement(labels=fixed, fragments_relabelled=relabelled, joints=joints)


def relabel_fragments(
    labels: np.ndarray, rib_ids: Sequence[int], connectivity: int = FRAGMENT_CONNECTIVITY
) -> np.ndarray:
    """Stage 1: each connected component of the binarised ribs takes the majority rib class of its voxels."""
    ids = np.array(sorted(set(int(i) for i in rib_ids)), dtype=np.int64)
    binary = np.isin(labels, ids)
    out = labels.copy()
    if not binary.any():
        return out
    box = ndimage.find_objects(binary.astype(np.uint8))[0]
    structure = ndimage.generate_binary_structure(3, _connectivity_rank(connectivity))
    components, n = ndimage.label(binary[box], structure=structure)
    inside = components > 0
    comp = components[inside].astype(np.int64) - 1
    cls = np.searchsorted(ids, labels[box][inside].astype(np.int64))  # index of each voxel's rib class
    votes = np.bincount(comp * len(ids) + cls, minlength=n * len(ids)).reshape(n, len(ids))
    majority = ids[votes.argmax(axis=1)]  # argmax takes the first maximum: a tie goes to the lower id
    region = out[box]
    region[inside] = majority[comp].astype(out.dtype)
    return out


def add_costovertebral_joints(
    labels: np.ndarray,
    rib_ids: Sequence[int],
    spine: np.ndarray,
    tubular: np.ndarray,
    settings: RibSettings = RibSettings(),
) -> tuple[np.ndarray, tuple[JointMerge, ...]]:
    """Stage 2: tubular voxels within the dilated spine (not in it), opened, sized, joined to the nearest rib."""
    if spine.shape != labels.shape or tubular.shape != labels.shape:
        raise ValueError(f"rib map {labels.shape}, spine {spine.shape} and tubular map {tubular.shape} differ in shape")
    out = labels.copy()
    if not spine.any():
        return out, ()
    # Candidates lie within the dilation radius of the spine; the ribs they may join lie up to the merge distance
    # beyond; the opening needs one more voxel of room so the box border never erodes a candidate.
    reach = settings.spine_dilation_radius + math.ceil(settings.max_rib_distance) + settings.opening_radius + 1
    box = _grown_box(spine, reach)
    spine_box = spine[box]
    near_spine = ndimage.distance_transform_edt(~spine_box) <= settings.spine_dilation_radius  # = dilation by ball(r)
    candidates = tubular[box].astype(bool) & near_spine & ~spine_box
    opened = _binary_opening(candidates, settings.opening_radius)
    components, n = ndimage.label(opened)  # default structure: 6-connected, as ndimage.label in the authors' code
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    kept = [c for c in range(1, n + 1) if settings.min_component_voxels < sizes[c] < settings.max_component_voxels]
    kept.sort(key=lambda c: (-sizes[c], c))
    ribs_box = out[box]
    reference = ribs_box.copy()  # distances to the ribs as they are before any joint is added
    merges = []
    objects = ndimage.find_objects(components)
    for c in kept:
        nearest = _nearest_rib(components, c, objects[c - 1], reference, rib_ids, settings.max_rib_distance)
        if nearest is None:
            continue
        rib_id, distance = nearest
        member = components == c
        added = int(np.count_nonzero(ribs_box[member] != rib_id))
        ribs_box[member] = rib_id
        merges.append(JointMerge(rib_id=int(rib_id), n_voxels=int(sizes[c]), n_added=added, distance=float(distance)))
    log.info("costovertebral joints: %d candidate components, %d sized, %d merged (%d voxels added)",
             n, len(kept), len(merges), sum(m.n_added for m in merges))
    return out, tuple(merges)


def tubular_map(
    ct_hu: np.ndarray,
    spine: np.ndarray,
    spacing_mm: float,
    settings: VesselnessSettings = VesselnessSettings(),
    spine_dilation_radius: int = SPINE_DILATION_RADIUS,
    opening_radius: int = OPENING_RADIUS,
    min_component_voxels: int = MIN_COMPONENT_VOXELS,
) -> np.ndarray:
    """A boolean map of bright tubes (Hessian vesselness on the bone window) where joint candidates can be.

    ct_hu: the CT in HU on the label grid; spacing_mm: its isotropic voxel size (sigmas are given in mm). A voxel
    is tubular where the response reaches the threshold and the CT is inside the bone window.

    Only voxels that can end up in a stage-2 candidate are evaluated; elsewhere the map is empty, which changes no
    candidate (exact, not an approximation): candidates are opening(tubular & domain), the domain being the voxels
    within the dilation radius of the spine, not in it, with CT at least the window's low end. Opening is
    increasing, so every candidate lies in opening(domain), and within one of its components larger than
    min_component_voxels (a candidate component is connected and must be larger). The filter runs on the bounding
    box of those voxels grown by margin_sigmas x the largest sigma; for sato, the Hessian's eigenvalues (the
    expensive step) are computed at those voxels only, with skimage's own formula (`sato_at`).
    """
    if settings.method not in VESSELNESS_METHODS:
        raise ValueError(f"vesselness method must be one of {sorted(VESSELNESS_METHODS)}, got {settings.method!r}")
    out = np.zeros(ct_hu.shape, dtype=bool)
    if not spine.any():
        return out
    lo, hi = settings.bone_window_hu
    reach = _grown_box(spine, spine_dilation_radius + opening_radius + 1)  # room: the border never erodes
    near = ndimage.distance_transform_edt(~spine[reach]) <= spine_dilation_radius  # = dilation by ball(r)
    domain = _binary_opening(near & ~spine[reach] & (ct_hu[reach] >= lo), opening_radius)
    components, n = ndimage.label(domain)  # 6-connected, as the candidates' components
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    domain = (sizes > min_component_voxels)[components] & domain
    if not domain.any():
        return out
    sigmas = [s / spacing_mm for s in settings.sigmas_mm]
    margin = math.ceil(settings.margin_sigmas * max(sigmas))
    inner = ndimage.find_objects(domain.astype(np.uint8))[0]
    box = tuple(slice(max(r.start + d.start - margin, 0), min(r.start + d.stop + margin, n))
                for r, d, n in zip(reach, inner, ct_hu.shape))
    mask = np.zeros(ct_hu.shape, dtype=bool)
    mask[reach] = domain
    mask = mask[box]
    window = np.clip((ct_hu[box].astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    if settings.method == "sato":
        response = sato_at(window, mask, sigmas)
    else:
        from skimage.filters import frangi

        response = frangi(window, sigmas=sigmas, black_ridges=False, mode="reflect")[mask]
    region = out[box]
    region[mask] = response >= settings.threshold
    return out


def sato_at(image: np.ndarray, mask: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """skimage.filters.sato(image, sigmas, black_ridges=False, mode="reflect")[mask], with the Hessian's
    eigenvalues computed only at the masked voxels (their cost dominates the filter on whole volumes)."""
    from skimage.feature import hessian_matrix

    negated = -image.astype(np.float32, copy=False)  # sato's black_ridges=False: bright tubes as dark ridges
    best = np.zeros(int(np.count_nonzero(mask)), dtype=np.float32)
    for sigma in sigmas:
        h00, h01, h02, h11, h12, h22 = (e[mask] for e in hessian_matrix(
            negated, sigma, mode="reflect", use_gaussian_derivatives=True))
        matrices = np.stack([np.stack([h00, h01, h02], -1), np.stack([h01, h11, h12], -1),
                             np.stack([h02, h12, h22], -1)], -2)
        eigvals = np.linalg.eigvalsh(matrices)  # ascending; sato uses all but the lowest, clipped at 0
        vals = sigma**2 * np.sqrt(np.maximum(eigvals[:, 1], 0) * np.maximum(eigvals[:, 2], 0))
        best = np.maximum(best, vals.astype(np.float32))
    return best


def load_rib_settings(path=ASSEMBLY_YAML) -> RibSettings:
    """config/assembly.yaml's `ribs` section; missing keys take the authors' defaults above."""
    section = read_assembly_config(path).get("ribs") or {}
    if not isinstance(section, dict):
        raise AssemblyConfigError(f"{path}: `ribs` must be a mapping")
    vessel = dict(section.pop("vesselness", None) or {})
    try:
        if "bone_window_hu" in vessel:
            vessel["bone_window_hu"] = tuple(float(v) for v in vessel["bone_window_hu"])
        if "sigmas_mm" in vessel:
            vessel["sigmas_mm"] = tuple(float(v) for v in vessel["sigmas_mm"])
        settings = RibSettings(**section, vesselness=VesselnessSettings(**vessel))
    except (TypeError, ValueError) as exc:
        raise AssemblyConfigError(f"{path}: `ribs`: {exc}") from None
    _connectivity_rank(settings.fragment_connectivity, f"{path}: ribs.fragment_connectivity")
    lo, hi = settings.vesselness.bone_window_hu
    if not hi > lo:
        raise AssemblyConfigError(f"{path}: ribs.vesselness.bone_window_hu must rise, got {[lo, hi]}")
    if settings.tubular_map is not None and "{volume_id}" not in settings.tubular_map:
        raise AssemblyConfigError(f"{path}: ribs.tubular_map must contain {{volume_id}}, got {settings.tubular_map!r}")
    return settings


def _nearest_rib(components, c, obj, reference, rib_ids, max_distance):
    """(rib id, distance) of the rib class nearest to component c if nearer than max_distance; ties: lower id."""
    pad = math.ceil(max_distance)
    box = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(obj, components.shape))
    member = components[box] == c
    local = reference[box]
    best = None
    for rib_id in sorted(set(int(i) for i in rib_ids) & set(np.unique(local).tolist())):
        distance = float(ndimage.distance_transform_edt(local != rib_id)[member].min())
        if distance < max_distance and (best is None or distance < best[1]):
            best = (rib_id, distance)
    return best


def _binary_opening(mask: np.ndarray, radius: int) -> np.ndarray:
    """Opening with ball(radius), with skimage's border convention (outside counts as set for the erosion)."""
    if radius <= 0:
        return mask.copy()
    footprint = ball(radius).astype(bool)
    eroded = ndimage.binary_erosion(mask, structure=footprint, border_value=1)
    return ndimage.binary_dilation(eroded, structure=footprint, border_value=0)


def _grown_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    obj = ndimage.find_objects(mask.astype(np.uint8))[0]
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(obj, mask.shape))


def _connectivity_rank(connectivity: int, what: str = "connectivity") -> int:
    if connectivity not in CONNECTIVITY_RANK:
        raise AssemblyConfigError(f"{what} must be one of {sorted(CONNECTIVITY_RANK)}, got {connectivity!r}")
    return CONNECTIVITY_RANK[connectivity]
