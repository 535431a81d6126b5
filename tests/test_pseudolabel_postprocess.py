"""Head-region refinement (Online Methods 3.1) and connected-component clean-up, on constructed label maps."""

import numpy as np
import pytest

from cadsflow.labels import load_label_space
from cadsflow.pseudolabel.postprocess import (
    BRAIN_BOX_HALF_SIZE,
    BRAIN_MIN_VOXELS,
    HEAD_NECK_BOX_HALF_SIZE,
    POSTPROCESSING_YAML,
    BrainGate,
    CleanupRules,
    PostprocessingError,
    brain_gate,
    brain_label_id,
    crop_to_head_box,
    keep_largest_components,
    load_cleanup_rules,
    refine_head_labels,
)

SPACE = load_label_space()


def brain_map(n_voxels, shape=(40, 40, 40), value=None):
    """A group-553 label map with exactly n_voxels of `brain` (filled in C order from a corner of the volume)."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels.reshape(-1)[:n_voxels] = brain_label_id(SPACE) if value is None else value
    return labels


def test_paper_constants_are_the_published_values():
    assert BRAIN_MIN_VOXELS == 2000
    assert BRAIN_BOX_HALF_SIZE == (100, 100, 133)
    assert HEAD_NECK_BOX_HALF_SIZE == (100, 100, 200)


def test_brain_below_threshold_fails_gate_and_empties_head_labels_with_reason():
    gate = brain_gate(brain_map(BRAIN_MIN_VOXELS - 1), SPACE)
    head = np.ones((40, 40, 40), dtype=np.uint8)
    assert not gate.passes
    assert "1999 voxels" in gate.reason and "2000" in gate.reason
    assert not refine_head_labels(557, head, gate).any()
    assert not refine_head_labels(558, head, gate).any()


def test_brain_at_threshold_passes_gate():
    assert brain_gate(brain_map(BRAIN_MIN_VOXELS), SPACE).passes


def test_only_the_brain_label_counts_toward_the_gate():
    other = SPACE.group_label_map(553)["trachea"]
    assert brain_gate(brain_map(5000, value=other), SPACE).voxels == 0


def test_brain_centroid_is_the_centre_of_mass_in_voxels():
    labels = np.zeros((30, 30, 30), dtype=np.uint8)
    labels[10:13, 4:7, 20:25] = brain_label_id(SPACE)
    assert brain_gate(labels, SPACE).centroid == pytest.approx((11.0, 5.0, 22.0))


@pytest.mark.parametrize("half_size", [BRAIN_BOX_HALF_SIZE, HEAD_NECK_BOX_HALF_SIZE])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_head_box_keeps_voxels_on_its_edges_and_drops_the_next_ones(axis, half_size):
    h = half_size[axis]
    shape = [1, 1, 1]
    shape[axis] = 2 * h + 5
    centroid = [0, 0, 0]
    centroid[axis] = h + 2
    labels = np.ones(shape, dtype=np.uint8)
    kept = crop_to_head_box(labels, centroid, half_size).reshape(-1)
    assert kept[2] == 1 and kept[2 * h + 2] == 1  # centroid - h and centroid + h: on the edges
    assert kept[1] == 0 and kept[2 * h + 3] == 0  # one voxel beyond each edge
    assert kept.sum() == 2 * h + 1


def test_head_box_is_clipped_at_the_volume_border():
    labels = np.ones((50, 60, 70), dtype=np.uint8)
    kept = crop_to_head_box(labels, (3, 57, 10), HEAD_NECK_BOX_HALF_SIZE)
    assert kept.shape == labels.shape
    assert kept.all()  # the box reaches past every border, so nothing inside the volume is cropped


def test_head_box_uses_the_group_specific_half_size():
    shape = (1, 1, 2 * 200 + 1)
    labels = np.ones(shape, dtype=np.uint8)
    gate = BrainGate(voxels=BRAIN_MIN_VOXELS, centroid=(0.0, 0.0, 200.0))
    assert refine_head_labels(557, labels, gate).sum() == 2 * 133 + 1  # brain structures: +-133 along z
    assert refine_head_labels(558, labels, gate).sum() == 2 * 200 + 1  # head-and-neck structures: +-200 along z


def test_head_box_rounds_the_centroid_to_the_nearest_voxel():
    labels = np.ones((1, 1, 300), dtype=np.uint8)
    kept = crop_to_head_box(labels, (0.0, 0.0, 140.6), (0, 0, 133)).reshape(-1)
    assert kept.nonzero()[0][[0, -1]].tolist() == [141 - 133, 141 + 133]


def test_head_refinement_refuses_a_non_head_group():
    with pytest.raises(ValueError, match="551"):
        refine_head_labels(551, np.zeros((2, 2, 2), np.uint8), BrainGate(5000, (1.0, 1.0, 1.0)))


def test_keep_largest_one_removes_smaller_components_of_that_structure_only():
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[1:6, 1:6, 1:6] = 1  # 125 voxels: kept
    labels[10:12, 10:12, 10:12] = 1  # 8 voxels, separate: removed
    labels[15:17, 15:17, 15:17] = 2  # another structure without a rule: untouched
    labels[15:17, 1:3, 1:3] = 2
    out = keep_largest_components(labels, CleanupRules(keep_largest={1: 1}))
    assert (out == 1).sum() == 125
    assert not out[10:12, 10:12, 10:12].any()
    assert (out == 2).sum() == (labels == 2).sum()


def test_keep_largest_two_keeps_both_parts_of_a_paired_structure():
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[1:5, 1:5, 1:5] = 3  # 64
    labels[10:13, 10:13, 10:13] = 3  # 27
    labels[17:19, 17:19, 17:19] = 3  # 8: the third piece goes
    out = keep_largest_components(labels, CleanupRules(keep_largest={3: 2}))
    assert (out == 3).sum() == 64 + 27


def test_components_touching_at_a_corner_are_one_body_with_26_connectivity():
    labels = np.zeros((6, 6, 6), dtype=np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = 1
    assert (keep_largest_components(labels, CleanupRules({1: 1}, connectivity=26)) == 1).sum() == 2
    assert (keep_largest_components(labels, CleanupRules({1: 1}, connectivity=6)) == 1).sum() == 1


def test_cleanup_rules_of_a_group_are_keyed_by_its_label_ids(tmp_path):
    table = tmp_path / "pp.yaml"
    table.write_text("structures:\n  eye balls: {keep_largest: 2}\n  liver: {keep_largest: 1}\n")
    rules = load_cleanup_rules(557, table, SPACE)
    assert rules.keep_largest == {SPACE.by_name("eye balls").label_id: 2}
    assert load_cleanup_rules(551, table, SPACE).keep_largest == {SPACE.by_name("liver").label_id: 1}


def test_cleanup_table_naming_an_unknown_structure_is_rejected_naming_the_file(tmp_path):
    table = tmp_path / "pp.yaml"
    table.write_text("structures:\n  livre: {keep_largest: 1}\n")
    with pytest.raises(PostprocessingError, match=r"pp\.yaml.*livre"):
        load_cleanup_rules(551, table, SPACE)


def test_cleanup_table_with_a_non_positive_count_is_rejected(tmp_path):
    table = tmp_path / "pp.yaml"
    table.write_text("structures:\n  liver: {keep_largest: 0}\n")
    with pytest.raises(PostprocessingError, match="liver"):
        load_cleanup_rules(551, table, SPACE)


def test_shipped_cleanup_table_is_valid_for_every_group():
    rules = {g: load_cleanup_rules(g, POSTPROCESSING_YAML, SPACE) for g in SPACE.groups}
    assert rules[551].keep_largest[SPACE.by_name("liver").label_id] == 1
    assert rules[557].keep_largest[SPACE.by_name("eye balls").label_id] == 2
    assert rules[559].keep_largest == {}  # tissue classes are left as predicted
