"""One whole-body label map in global ids (1..167, config/structures.tsv) from the nine groups' maps.

The groups overlap on purpose: group 559's body regions (subcutaneous tissue, muscle, cavities, bones, ...) contain
the organs, bones and vessels of the other groups, and a few structures of groups 551-558 are parents of others
(`heart` of 556 holds the chambers of 553, `brain` of 553 the grey and white matter of 557). A voxel of the combined
map holds one id, so structures are painted in layers, each over the previous where its group predicted it:

1. BASE_GROUP (559): every body region, in label-id order; the coarse background the rest is drawn over;
2. PARENT_STRUCTURES of the other groups, in (group, label id) order: kept where no finer structure is predicted;
3. every other structure of groups 551-558 in (group, label id) order, the authors' order (a later group wins
   where two fine structures overlap, e.g. 558's cervical oesophagus over 553's oesophagus).

The parents are the authors' `except_labels_combine` (murong-xu/CADS dataset_utils/bodyparts_labelmaps.py), which
their inference (utils/inference.py) leaves out of its combined map altogether. Here they are kept below the finer
structures instead, so a parent still shows where its children are not predicted (a brain without group 557).
The per-group maps stay the full answer for overlapping structures; the combined map is the one-label-per-voxel view
(DICOM-SEG, preview).
"""

from __future__ import annotations

import numpy as np

from cadsflow.labels import LabelSpace, Structure, load_label_space

BASE_GROUP = 559  # body regions: the bottom layer
# murong-xu/CADS dataset_utils/bodyparts_labelmaps.py `except_labels_combine`, outside group 559 (whose classes
# are all in the base layer): parents of, or overlapping with, finer structures of other groups.
PARENT_STRUCTURES = (
    "brain",  # 553: holds 557's grey/white matter and csf
    "face",  # 553: overlaps 558's head-and-neck structures
    "scalp", "eye balls", "compact bone", "spongy bone", "blood", "head muscles",  # 557: overlap 558 (authors)
    "heart",  # 556: holds 553's chambers and myocardium
    "bowel_bag",  # 556: holds 553's small bowel and colon
)
COMBINED_DTYPE = np.uint8  # global ids 1..167


def paint_order(groups, space: LabelSpace | None = None) -> list[tuple[int, tuple[Structure, ...]]]:
    """The painting steps for `groups`: (group, its structures painted in this step), later steps over earlier."""
    space = space or load_label_space()
    groups = sorted(groups)
    steps = [(BASE_GROUP, space.group(BASE_GROUP))] if BASE_GROUP in groups else []
    for is_parent in (True, False):
        for group in (g for g in groups if g != BASE_GROUP):
            members = tuple(s for s in space.group(group) if (s.name in PARENT_STRUCTURES) == is_parent)
            if members:
                steps.append((group, members))
    return steps


def combine_groups(group_maps: dict[int, np.ndarray], space: LabelSpace | None = None) -> np.ndarray:
    """Group label maps (group label ids, one grid) -> one map of global ids, painted in `paint_order`."""
    space = space or load_label_space()
    shapes = {tuple(m.shape) for m in group_maps.values()}
    if len(shapes) != 1:
        raise ValueError(f"group label maps lie on different grids {sorted(shapes)}; combine needs one grid")
    combined = np.zeros(shapes.pop(), dtype=COMBINED_DTYPE)
    for group, structures in paint_order(group_maps, space):
        labels = group_maps[group]
        lookup = np.zeros(max(int(labels.max(initial=0)), max(s.label_id for s in structures)) + 1, COMBINED_DTYPE)
        for s in structures:
            lookup[s.label_id] = s.global_id  # ids of the group outside this step stay 0: not painted now
        painted = lookup[labels]
        np.copyto(combined, painted, where=painted > 0)
    return combined
