"""Pseudo-label post-processing: per-structure connected-component clean-up and head-region refinement.

Head refinement (Online Methods 3.1): the head specialists (557 brain structures, 558 head-and-neck structures) were
trained on head images only and hallucinate elsewhere. A volume whose predicted brain (group 553, `brain`) has
fewer than BRAIN_MIN_VOXELS voxels gets no head pseudo-labels; otherwise head predictions are kept only inside a
box around the brain centroid. Arrays are label maps on the standardized RAS grid, axes (x, y, z) as nibabel
reads them, so the box half-sizes are in voxels of that grid along x, y and z.

Connected components: which structures keep how many of their largest components is data
(config/postprocessing.yaml), not code.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """Per group-label id: how many largest connected components to keep."""

    keep_largest: dict[int, int]
    connectivity: int = 26


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


def load_cleanup_rules(group: int, path: str | Path = POSTPROCESSING_YAML,
                       space: LabelSpace | None = None) -> CleanupRules:
    """The clean-up rules of one group, keyed by the group's label ids; raise naming the file on any defect."""
    path = Path(path)
    space = space or load_label_space()
    try:
        table = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PostprocessingError(f"{path}: cannot read the clean-up table ({exc})") from None
    connectivity = table.get("connectivity", 26)
    if connectivity not in CONNECTIVITY:
        raise PostprocessingError(f"{path}: connectivity must be one of {sorted(CONNECTIVITY)}, got {connectivity!r}")
    keep: dict[int, int] = {}
    for name, rule in (table.get("structures") or {}).items():
        try:
            structure = space.by_name(name)
        except KeyError:
            raise PostprocessingError(f"{path}: structure {name!r} is not in the label space") from None
        count = (rule or {}).get("keep_largest") if isinstance(rule, dict) else None
        if set(rule or {}) - {"keep_largest"} or not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise PostprocessingError(f"{path}: structure {name!r}: expected {{keep_largest: N}} with N >= 1, "
                                      f"got {rule!r}")
        if structure.group == group:
            keep[structure.label_id] = count
    return CleanupRules(keep_largest=keep, connectivity=connectivity)


def keep_largest_components(labels: np.ndarray, rules: CleanupRules) -> np.ndarray:
    """For each label with a rule, keep its N largest connected components; other voxels of it become 0."""
    out = labels.copy()
    structure = ndimage.generate_binary_structure(3, CONNECTIVITY[rules.connectivity])
    present = set(np.unique(labels).tolist())
    for label_id, count in sorted(rules.keep_largest.items()):
        if label_id not in present:
            continue
        box = ndimage.find_objects((labels == label_id).astype(np.uint8))[0]  # work inside the label's bounding box
        mask = labels[box] == label_id
        components, n = ndimage.label(mask, structure=structure)
        if n <= count:
            continue
        sizes = np.bincount(components.ravel())[1:]
        keep_ids = np.argsort(sizes, kind="stable")[::-1][:count] + 1
        drop = mask & ~np.isin(components, keep_ids)
        out[box][drop] = 0
    return out
