"""Pseudo-label post-processing: per-structure connected-component clean-up and head-region refinement.

Head refinement (Online Methods 3.1): the head specialists (557 brain structures, 558 head-and-neck structures) were
trained on head images only and hallucinate elsewhere. A volume whose predicted brain (group 553, `brain`) has
fewer than BRAIN_MIN_VOXELS voxels gets no head pseudo-labels; otherwise head predictions are kept only inside a
box around the brain centroid. Group 558 has a fallback the authors' code adds (murong-xu/CADS
dataset_utils/postprocessing.py, postprocess_head_and_neck): without a brain, its predictions are kept from the
lowest slice of the upper vertebrae predicted by group 552 up to the top of the volume (a neck without a head),
and dropped when there are none. Arrays are label maps on the standardized RAS grid, axes (x, y, z) as nibabel
reads them, so the box half-sizes are in voxels of that grid along x, y and z, and z grows upwards.

Connected-component clean-up (the authors' `labels_info` in dataset_utils/postprocessing.py, applied by
postprocess_seg_TPTBox to groups 551, 553, 554, 556 and 559 only) is data in config/postprocessing.yaml: per
structure a minimum component size, a cap on the number of components, hole filling and a convex hull; see
``clean_components`` for the order of the steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy import ndimage

from cadsflow.labels import LabelSpace, load_label_space
from cadsflow.paths import CONFIG_DIR

POSTPROCESSING_YAML = CONFIG_DIR / "postprocessing.yaml"

BRAIN_MIN_VOXELS = 2000  # Online Methods 3.1: fewer predicted brain voxels -> no head pseudo-labels
BRAIN_BOX_HALF_SIZE = (100, 100, 133)  # Online Methods 3.1: brain structures, voxels along x, y, z
HEAD_NECK_BOX_HALF_SIZE = (100, 100, 200)  # Online Methods 3.1: head-and-neck structures, voxels along x, y, z
BRAIN_GROUP = 553  # the group whose `brain` prediction gates and centres the head groups
BRAIN_STRUCTURE = "brain"
HEAD_GROUP_BOX = {557: BRAIN_BOX_HALF_SIZE, 558: HEAD_NECK_BOX_HALF_SIZE}  # 557: brain, 558: head and neck
CONNECTIVITY = {6: 1, 18: 2, 26: 3}  # neighbourhood size -> scipy.ndimage.generate_binary_structure rank
VERTEBRAE_GROUP = 552
# postprocess_head_and_neck: `for vertebrae_class in range(14, 25)` of group 552's label map, i.e. T4..T1 and C7..C1
# (the code's comment says "cervical"; the range also holds the four upper thoracic vertebrae)
NECK_VERTEBRAE = ("vertebrae_T4", "vertebrae_T3", "vertebrae_T2", "vertebrae_T1", "vertebrae_C7", "vertebrae_C6",
                  "vertebrae_C5", "vertebrae_C4", "vertebrae_C3", "vertebrae_C2", "vertebrae_C1")  # fmt: skip
HEAD_NECK_BRAIN_BOX, HEAD_NECK_VERTEBRAE, HEAD_NECK_NONE = "brain_box", "neck_vertebrae", "no_head_or_neck"
AUTHORS_VOXEL_MM = 1.5  # the grid the authors' component sizes are counted on (their 1.5 mm CADS grid)
RULE_KEYS = ("min_voxels", "keep_largest", "fill_holes", "convex_hull")
SUPERIOR_AXIS, RIGHT_AXIS, ANTERIOR_AXIS = 2, 0, 1  # RAS grid: hole filling slice-wise along S, R, A


class PostprocessingError(ValueError):
    """The clean-up table is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class BrainGate:
    """Whether a volume shows enough brain for head pseudo-labels, and where the brain's centroid is."""

    voxels: int
    centroid: tuple[float, float, float] | None  # voxel coordinates (x, y, z); None without brain voxels

    @property
    def passes(self) -> bool:
        return self.voxels >= BRAIN_MIN_VOXELS

    @property
    def reason(self) -> str:
        return f"predicted brain has {self.voxels} voxels, fewer than {BRAIN_MIN_VOXELS} (Online Methods 3.1)"


@dataclass(frozen=True)
class CleanupRules:
    """Per group-label id: the component cap (`keep_largest`), the minimum component size in voxels of the
    AUTHORS_VOXEL_MM grid (`min_voxels`), hole filling and the convex hull's erosion depth (`convex_hull`)."""

    keep_largest: dict[int, int]
    connectivity: int = 26
    min_voxels: dict[int, int] = field(default_factory=dict)
    fill_holes: frozenset[int] = frozenset()
    convex_hull: dict[int, int] = field(default_factory=dict)

    def labels(self) -> list[int]:
        return sorted({*self.keep_largest, *self.min_voxels, *self.fill_holes, *self.convex_hull})


def is_head_group(group: int) -> bool:
    return group in HEAD_GROUP_BOX


def brain_label_id(space: LabelSpace | None = None) -> int:
    space = space or load_label_space()
    return space.group_label_map(BRAIN_GROUP)[BRAIN_STRUCTURE]


def brain_gate(brain_group_labels: np.ndarray, space: LabelSpace | None = None) -> BrainGate:
    """Count the voxels of `brain` in a group-553 label map and find their centroid."""
    brain = brain_group_labels == brain_label_id(space)
    voxels = int(brain.sum())
    if voxels == 0:
        return BrainGate(voxels=0, centroid=None)
    centroid = tuple(float(c) for c in ndimage.center_of_mass(brain))
    return BrainGate(voxels=voxels, centroid=centroid)


def crop_to_head_box(labels: np.ndarray, centroid, half_size) -> np.ndarray:
    """Zero every voxel outside the box centroid +- half_size (inclusive, clipped at the volume's border).

    The centroid is rounded to the nearest voxel; the box then spans [c - h, c + h] along each axis.
    """
    centre = np.rint(np.asarray(centroid, dtype=float)).astype(int)
    half = np.asarray(half_size, dtype=int)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, labels.shape)  # exclusive; clipped at the border
    cropped = np.zeros_like(labels)
    if np.all(hi > lo):
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        cropped[box] = labels[box]
    return cropped


def refine_head_labels(group: int, labels: np.ndarray, gate: BrainGate) -> np.ndarray:
    """Online Methods 3.1 for one head-group label map: empty without enough brain, else cropped to the box."""
    if not is_head_group(group):
        raise ValueError(f"group {group} is not a head group; head groups are {sorted(HEAD_GROUP_BOX)}")
    if not gate.passes:
        return np.zeros_like(labels)
    return crop_to_head_box(labels, gate.centroid, HEAD_GROUP_BOX[group])


def refine_head_neck_labels(
    labels: np.ndarray, gate: BrainGate, vertebrae: np.ndarray | None, space: LabelSpace | None = None
) -> tuple[np.ndarray, str]:
    """Group 558 as the authors refine it: the brain box when the brain gate passes; else, given group 552's
    label map of the volume, everything from the lowest axial slice holding one of NECK_VERTEBRAE up to the top;
    else nothing. Returns the label map and which case applied (HEAD_NECK_*).

    `vertebrae` is needed only when the gate fails (the authors predict group 552 only then); None there means no
    group-552 map, and the head-and-neck labels are dropped as without a neck.
    """
    if gate.passes:
        return crop_to_head_box(labels, gate.centroid, HEAD_GROUP_BOX[558]), HEAD_NECK_BRAIN_BOX
    if vertebrae is None:
        return np.zeros_like(labels), HEAD_NECK_NONE
    if vertebrae.shape != labels.shape:
        raise ValueError(f"group 552 map of shape {vertebrae.shape} is not on the grid of the group 558 map "
                         f"{labels.shape}")
    lowest = neck_floor_slice(vertebrae, space)
    if lowest is None:
        return np.zeros_like(labels), HEAD_NECK_NONE
    kept = np.zeros_like(labels)
    kept[:, :, lowest:] = labels[:, :, lowest:]
    return kept, HEAD_NECK_VERTEBRAE


def neck_floor_slice(vertebrae: np.ndarray, space: LabelSpace | None = None) -> int | None:
    """The lowest axial (z) index holding one of NECK_VERTEBRAE in a group-552 label map, None without any."""
    space = space or load_label_space()
    ids = [space.group_label_map(VERTEBRAE_GROUP)[name] for name in NECK_VERTEBRAE]
    slices = np.flatnonzero(np.isin(vertebrae, ids).any(axis=(0, 1)))
    return int(slices[0]) if slices.size else None


def load_cleanup_rules(group: int, path: str | Path = POSTPROCESSING_YAML,
                       space: LabelSpace | None = None) -> CleanupRules:
    """The clean-up rules of one group, keyed by the group's label ids; raise naming the file on any defect.

    A group not in the table's `groups` gets no rules (the authors clean up 551, 553, 554, 556 and 559 only).
    """
    path = Path(path)
    space = space or load_label_space()
    try:
        table = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PostprocessingError(f"{path}: cannot read the clean-up table ({exc})") from None
    connectivity = table.get("connectivity", 26)
    if connectivity not in CONNECTIVITY:
        raise PostprocessingError(f"{path}: connectivity must be one of {sorted(CONNECTIVITY)}, got {connectivity!r}")
    groups = table.get("groups", list(space.groups))
    if not isinstance(groups, list) or set(groups) - set(space.groups):
        raise PostprocessingError(f"{path}: groups must be a list of group ids of {space.groups}, got {groups!r}")
    parsed = {name: _parse_rule(path, name, rule, space) for name, rule in (table.get("structures") or {}).items()}
    if group not in groups:
        return CleanupRules(keep_largest={}, connectivity=connectivity)
    keep, minimum, fill, hull = {}, {}, set(), {}
    for name, rule in parsed.items():
        structure = space.by_name(name)
        if structure.group != group:
            continue
        label = structure.label_id
        if "keep_largest" in rule:
            keep[label] = rule["keep_largest"]
        if rule.get("min_voxels"):
            minimum[label] = rule["min_voxels"]
        if rule.get("fill_holes"):
            fill.add(label)
        if rule.get("convex_hull"):
            hull[label] = rule["convex_hull"]
    return CleanupRules(keep, connectivity, minimum, frozenset(fill), hull)


def clean_components(labels: np.ndarray, rules: CleanupRules, spacing=None) -> np.ndarray:
    """The authors' clean-up (postprocess_seg_TPTBox), label by label in ascending id order:

    1. fill holes (when set): in 3-D, then slice-wise along S, R and A, then in 3-D again; the holes become the
       label whatever they held;
    2. connected components of the label (the table's connectivity, 26), largest first: a component is removed
       when it ranks beyond `keep_largest` or is smaller than `min_voxels` (and with it every smaller one);
    3. convex hull (when set): the label's mask eroded `convex_hull` times, hulled slice by axial slice, and the
       hull set to the label.
    `spacing` (mm) rescales `min_voxels` from the authors' 1.5 mm grid to this grid; None: counted as given.

    For speed (one pass over the volume, not one per structure) every step works inside the label's bounding box,
    taken for all labels at once, and the components of all labels come from one multi-label labelling (cc3d);
    the results are those of labelling each structure alone (see ``_Components``).
    """
    out = labels.copy()
    scale = 1.0 if spacing is None else AUTHORS_VOXEL_MM**3 / float(np.prod(np.asarray(spacing, dtype=float)))
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY[rules.connectivity])
    ids = rules.labels()
    # A box holds its label's voxels until that label's own steps run: a label only gains voxels by its own hole
    # filling or hull, which stay inside its box, and loses voxels to the labels before it.
    boxes = ndimage.find_objects(out, max_label=max(ids)) if ids and out.size else []
    components = None  # all labels' components of `out`; None after a step changed voxels, so recomputed
    for label_id in ids:
        box = boxes[label_id - 1] if 0 < label_id <= len(boxes) else None
        if box is None or not np.any(out[box] == label_id):
            continue
        if label_id in rules.fill_holes and _fill_holes(out, label_id, box):
            components = None
        minimum = math.ceil(rules.min_voxels.get(label_id, 0) * scale)
        keep = rules.keep_largest.get(label_id)
        if keep is not None or minimum > 0:
            if components is None:
                components = _Components(out, rules.connectivity)
            if not components.filter(out, label_id, box, keep, minimum):
                _filter_components(out, label_id, box, keep, minimum, structure)
        if rules.convex_hull.get(label_id) and _convex_hull(out, label_id, rules.convex_hull[label_id], box):
            components = None
    return out


# The former name: infer.py calls the clean-up by it.
keep_largest_components = clean_components


# -- helpers ---------------------------------------------------------------------------------------------------


def _parse_rule(path: Path, name: str, rule, space: LabelSpace) -> dict:
    try:
        space.by_name(name)
    except KeyError:
        raise PostprocessingError(f"{path}: structure {name!r} is not in the label space") from None
    if not isinstance(rule, dict) or not rule or set(rule) - set(RULE_KEYS):
        raise PostprocessingError(f"{path}: structure {name!r}: expected a mapping of {RULE_KEYS}, got {rule!r}")
    for key in ("keep_largest", "min_voxels", "convex_hull"):
        value = rule.get(key)
        lowest = 1 if key == "keep_largest" else 0
        if key in rule and (not isinstance(value, int) or isinstance(value, bool) or value < lowest):
            raise PostprocessingError(
                f"{path}: structure {name!r}: {key} must be an integer >= {lowest}, got {value!r}"
            )
    if "fill_holes" in rule and not isinstance(rule["fill_holes"], bool):
        raise PostprocessingError(f"{path}: structure {name!r}: fill_holes must be true or false")
    return rule


class _Components:
    """Connected components of every label of a label map at once (cc3d's multi-label labelling: neighbours join
    only when they hold the same label, so each label's components are those of its mask alone)."""

    def __init__(self, labels: np.ndarray, connectivity: int):
        import cc3d  # connected-components-3d, installed with nnU-Net's acvl_utils

        self.ids = cc3d.connected_components(labels, connectivity=connectivity)
        self.sizes = np.bincount(self.ids.ravel())
        self.owner = np.zeros(self.sizes.size, dtype=labels.dtype)
        self.owner[self.ids.ravel()] = labels.ravel()

    def filter(self, out: np.ndarray, label_id: int, box, keep: int | None, minimum: int) -> bool:
        """Remove the label's components that ``_filter_components`` removes, in place; False (nothing done) when
        equal sizes straddle the `keep` cut: there the components' order decides, and only scipy's is the rule."""
        mine = np.flatnonzero(self.owner == label_id)
        mine = mine[mine > 0]
        sizes = self.sizes[mine]
        order = np.argsort(-sizes, kind="stable")
        if keep is not None and sizes.size > keep and sizes[order[keep - 1]] == sizes[order[keep]] >= minimum:
            return False
        rank = np.empty(sizes.size, dtype=int)
        rank[order] = np.arange(sizes.size)
        dropped = mine[(sizes < minimum) | (rank >= (keep if keep is not None else sizes.size))]
        if dropped.size:
            drop = np.zeros(self.sizes.size, dtype=bool)
            drop[dropped] = True
            out[box][drop[self.ids[box]]] = 0
        return True


def _filter_components(out: np.ndarray, label_id: int, box, keep: int | None, minimum: int, structure) -> None:
    """Remove, in place, the label's components beyond the `keep` largest or smaller than `minimum` voxels, labelling
    its mask inside `box` (which holds all its voxels) with scipy; ties in size keep scipy's component order."""
    view = out[box]
    mask = view == label_id
    components, n = ndimage.label(mask, structure=structure)
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")  # largest first; ties by component order
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    kept = (sizes >= minimum) & (rank < (keep if keep is not None else n))
    if not kept.all():
        view[mask & ~np.concatenate([[False], kept])[components]] = 0


def _fill_holes(out: np.ndarray, label_id: int, box) -> bool:
    """np_fill_holes of the authors' code, 3-D, along S, R, A, then 3-D: each pass fills the holes of the mask, in
    place inside `box` (a hole lies inside its label's bounding box); True when a voxel changed."""
    view = out[box]
    changed = False
    for axis in (None, SUPERIOR_AXIS, RIGHT_AXIS, ANTERIOR_AXIS, None):
        mask = view == label_id
        # Slice-wise (the authors fill each slice along `axis` in 2-D) as one 3-D fill whose structure connects
        # voxels only within a slice: the same fill, without a call per slice (tests compare the two).
        filled = fill_holes(mask, ndimage.generate_binary_structure(3, 1) if axis is None
                            else _in_slice_structure(axis))
        holes = filled & ~mask
        if holes.any():
            view[holes] = label_id
            changed = True
    return changed


def fill_holes(mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """scipy.ndimage.binary_fill_holes(mask, structure), by labelling the background once instead of dilating from
    the border until nothing changes (which takes as many passes as the farthest background voxel is from it: 6 s
    of a 12 s demo pseudo-labelling job). A background component is kept (not a hole) when one of its voxels has a
    neighbour under `structure` outside the grid, as scipy's border_value=1 dilation reaches it."""
    background, count = ndimage.label(~mask, structure)
    if count == 0:
        return mask.copy()
    reached = np.zeros(count + 1, dtype=bool)
    centre = np.array(structure.shape) // 2
    for axis in range(mask.ndim):
        offsets = np.nonzero(structure)[axis] - centre[axis]
        for side, step in ((0, -1), (-1, 1)):
            if (offsets == step).any():  # a neighbour across this face of the grid lies outside it
                index = [slice(None)] * mask.ndim
                index[axis] = side
                reached[np.unique(background[tuple(index)])] = True
    reached[0] = True  # label 0: the mask itself
    return mask | ~reached[background]


def _in_slice_structure(axis: int) -> np.ndarray:
    """scipy's 2-D default structure (4-connectivity) in the plane across `axis` of a 3x3x3 structure."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    index = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    return structure


def _convex_hull(out: np.ndarray, label_id: int, erode: int, box) -> bool:
    """The axial hulls of the label's eroded mask set to the label, in place inside `box` (erosion and hull stay
    inside the mask's bounding box); True when a voxel changed."""
    from skimage.morphology import convex_hull_image

    view = out[box]
    eroded = ndimage.binary_erosion(view == label_id, ndimage.generate_binary_structure(3, 3), iterations=erode)
    changed = False
    for z in np.flatnonzero(eroded.any(axis=(0, 1))):
        hull = convex_hull_image(eroded[:, :, z]) & (view[:, :, z] != label_id)
        if hull.any():
            view[:, :, z][hull] = label_id
            changed = True
    return changed


def clean_components_per_structure(labels: np.ndarray, rules: CleanupRules, spacing=None) -> np.ndarray:
    """The clean-up structure by structure on whole-volume masks, each structure labelled alone with scipy: the
    specification clean_components (one pass) must equal exactly (tests/test_pseudolabel_cleanup_equivalence.py)
    and the baseline of workflow_scripts/benchmarks/bench_predict_volume.py. Slow; not used by the factory."""
    out = labels.copy()
    scale = 1.0 if spacing is None else AUTHORS_VOXEL_MM**3 / float(np.prod(np.asarray(spacing, dtype=float)))
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY[rules.connectivity])
    for label_id in rules.labels():
        if not np.any(out == label_id):
            continue
        if label_id in rules.fill_holes:
            for axis in (None, SUPERIOR_AXIS, RIGHT_AXIS, ANTERIOR_AXIS, None):
                mask = out == label_id
                if axis is None:
                    filled = ndimage.binary_fill_holes(mask)
                else:
                    moved = np.moveaxis(mask, axis, 0)
                    filled = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in moved]), 0, axis)
                out[filled & ~mask] = label_id
        minimum = math.ceil(rules.min_voxels.get(label_id, 0) * scale)
        keep = rules.keep_largest.get(label_id)
        if keep is not None or minimum > 0:
            mask = out == label_id
            components, n = ndimage.label(mask, structure=structure)
            sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
            order = np.argsort(-sizes, kind="stable")
            rank = np.empty(n, dtype=int)
            rank[order] = np.arange(n)
            kept = (sizes >= minimum) & (rank < (keep if keep is not None else n))
            out[mask & ~np.concatenate([[False], kept])[components]] = 0
        if rules.convex_hull.get(label_id):
            from skimage.morphology import convex_hull_image

            eroded = ndimage.binary_erosion(out == label_id, ndimage.generate_binary_structure(3, 3),
                                            iterations=rules.convex_hull[label_id])
            for z in np.flatnonzero(eroded.any(axis=(0, 1))):
                out[:, :, z][convex_hull_image(eroded[:, :, z])] = label_id
    return out
