"""Head-region refinement (Online Methods 3.1) and connected-component clean-up, on constructed label maps."""

import numpy as np
import pytest

from cadsflow.labels import load_label_space
from cadsflow.pseudolabel.postprocess import (
    BRAIN_BOX_HALF_SIZE,
    BRAIN_MIN_VOXELS,
    HEAD_NECK_BOX_HALF_SIZE,
    HEAD_NECK_BRAIN_BOX,
    HEAD_NECK_NONE,
    HEAD_NECK_VERTEBRAE,
    POSTPROCESSING_YAML,
    BrainGate,
    CleanupRules,
    PostprocessingError,
    brain_gate,
    brain_label_id,
    clean_components,
    crop_to_head_box,
    keep_largest_components,
    load_cleanup_rules,
    refine_head_labels,
    refine_head_neck_labels,
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


def test_head_box_is_clipped_at_the_volume_border_and_crops_inside_it():
    labels = np.ones((10, 12, 30), dtype=np.uint8)
    kept = crop_to_head_box(labels, (1, 10, 4), (3, 4, 5))  # box x -2..4, y 6..14, z -1..9
    expected = np.zeros_like(labels)
    expected[0:5, 6:12, 0:10] = 1  # clipped at x = 0, y = 11 and z = 0; cropped at x = 4, y = 6, z = 9
    assert np.array_equal(kept, expected) and kept.sum() == 5 * 6 * 10


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


def g(group, name):
    return SPACE.group_label_map(group)[name]


def cube(labels, corner, size, value):
    x, y, z = corner
    a, b, c = size
    labels[x:x + a, y:y + b, z:z + c] = value


def test_shipped_table_cleans_only_the_authors_groups_551_553_554_556_559():
    rules = {group: load_cleanup_rules(group, POSTPROCESSING_YAML, SPACE) for group in SPACE.groups}
    assert {group for group, r in rules.items() if r.labels()} == {551, 553, 554, 556, 559}
    assert rules[551].min_voxels[g(551, "liver")] == 2200 and rules[559].min_voxels[g(559, "muscle")] == 4000


def test_min_voxels_keeps_every_large_enough_component_when_no_cap_is_set():
    """liver (min 2200, no cap): two bodies of 3000 and 2500 voxels both stay; one of 2000 goes."""
    labels = np.zeros((60, 40, 30), np.uint8)
    cube(labels, (0, 0, 0), (20, 15, 10), g(551, "liver"))  # 3000
    cube(labels, (30, 0, 0), (25, 10, 10), g(551, "liver"))  # 2500
    cube(labels, (0, 20, 15), (20, 10, 10), g(551, "liver"))  # 2000 < 2200
    out = clean_components(labels, load_cleanup_rules(551, POSTPROCESSING_YAML, SPACE))
    assert (out == g(551, "liver")).sum() == 5500 and not out[0:20, 20:30, 15:25].any()


def test_min_voxels_removes_a_structure_whose_largest_component_is_too_small():
    labels = np.zeros((30, 30, 30), np.uint8)
    cube(labels, (0, 0, 0), (10, 10, 10), g(551, "spleen"))  # 1000: kept (not smaller than 1000)
    cube(labels, (15, 15, 15), (9, 10, 10), g(551, "kidney_left"))  # 900 < 1000: the whole kidney goes
    out = clean_components(labels, load_cleanup_rules(551, POSTPROCESSING_YAML, SPACE))
    assert (out == g(551, "spleen")).sum() == 1000 and not (out == g(551, "kidney_left")).any()


def test_keep_largest_caps_components_only_for_the_structures_it_is_set_for():
    """sternum (cap 1, min 1500): the second body of 1600 goes; rectum (min 1000, no cap): both of 1200 stay."""
    labels = np.zeros((60, 60, 20), np.uint8)
    cube(labels, (0, 0, 0), (20, 10, 10), g(556, "sternum"))  # 2000
    cube(labels, (30, 0, 0), (16, 10, 10), g(556, "sternum"))  # 1600
    cube(labels, (0, 30, 0), (12, 10, 10), g(556, "rectum"))  # 1200
    cube(labels, (30, 30, 0), (12, 10, 10), g(556, "rectum"))  # 1200
    out = clean_components(labels, load_cleanup_rules(556, POSTPROCESSING_YAML, SPACE))
    assert (out == g(556, "sternum")).sum() == 2000 and (out == g(556, "rectum")).sum() == 2400


def test_mammary_gland_holes_are_filled_even_where_another_label_was_predicted():
    labels = np.zeros((20, 20, 20), np.uint8)
    cube(labels, (2, 2, 2), (10, 10, 10), g(556, "left_mammary_gland"))
    labels[5:9, 5:9, 5:9] = 0  # a closed cavity: 64 voxels
    labels[6, 6, 6] = g(556, "sternum")  # a stray voxel of another label inside it
    out = clean_components(labels, load_cleanup_rules(556, POSTPROCESSING_YAML, SPACE))
    assert (out == g(556, "left_mammary_gland")).sum() == 1000 and not (out == g(556, "sternum")).any()


def test_convex_hull_rule_closes_an_axial_concavity_after_erosion(tmp_path):
    table = tmp_path / "pp.yaml"
    table.write_text("structures:\n  heart: {convex_hull: 1}\n")
    labels = np.zeros((12, 12, 5), np.uint8)
    labels[1:11, 1:11, 1:4] = g(556, "heart")
    labels[4:8, 7:11, 1:4] = 0  # a notch open to one side
    out = clean_components(labels, load_cleanup_rules(556, table, SPACE))
    # eroded once (26-neighbourhood): only the middle slice z = 2 survives, x 2..9, y 2..9 minus the notch grown
    # by one voxel (x 3..8, y >= 6); its convex hull is the square x 2..9, y 2..9, which closes the notch there
    assert np.array_equal(out[2:10, 2:10, 2], np.full((8, 8), g(556, "heart")))
    assert np.array_equal(out[:, :, 1], labels[:, :, 1])  # eroded away there: nothing is hulled


def test_min_voxels_are_rescaled_from_the_authors_1p5_mm_grid_to_the_map_spacing():
    labels = np.zeros((20, 20, 20), np.uint8)
    cube(labels, (0, 0, 0), (5, 5, 5), g(551, "spleen"))  # 125 voxels at 3 mm = 1000 voxels at 1.5 mm
    rules = load_cleanup_rules(551, POSTPROCESSING_YAML, SPACE)
    assert (clean_components(labels, rules, spacing=(3.0, 3.0, 3.0)) == g(551, "spleen")).sum() == 125
    assert not clean_components(labels, rules).any()  # counted as 1.5 mm voxels: 125 < 1000


def test_cleanup_rule_with_an_unknown_key_is_rejected_naming_the_structure(tmp_path):
    table = tmp_path / "pp.yaml"
    table.write_text("structures:\n  liver: {autofix: 10}\n")
    with pytest.raises(PostprocessingError, match=r"pp\.yaml.*liver"):
        load_cleanup_rules(551, table, SPACE)


def test_the_former_name_is_the_same_clean_up():
    assert keep_largest_components is clean_components


# -- group 558 without a brain (authors: postprocess_head_and_neck) ---------------------------------------------


def vertebrae_map(shape, name, z_range):
    labels = np.zeros(shape, np.uint8)
    labels[4:8, 4:8, z_range[0]:z_range[1]] = g(552, name)
    return labels


def test_head_neck_without_brain_keeps_everything_above_the_lowest_upper_vertebra():
    shape = (12, 12, 40)
    head_neck = np.ones(shape, np.uint8)
    vertebrae = vertebrae_map(shape, "vertebrae_C5", (20, 25)) | vertebrae_map(shape, "vertebrae_T3", (12, 16))
    gate = BrainGate(voxels=BRAIN_MIN_VOXELS - 1, centroid=(6.0, 6.0, 39.0))
    kept, mode = refine_head_neck_labels(head_neck, gate, vertebrae, SPACE)
    assert mode == HEAD_NECK_VERTEBRAE and not kept[:, :, :12].any() and kept[:, :, 12:].all()


def test_head_neck_without_brain_or_upper_vertebrae_is_dropped():
    shape = (12, 12, 40)
    gate = BrainGate(voxels=0, centroid=None)
    lumbar = vertebrae_map(shape, "vertebrae_L2", (0, 10))  # below T4: not a neck
    kept, mode = refine_head_neck_labels(np.ones(shape, np.uint8), gate, lumbar, SPACE)
    assert mode == HEAD_NECK_NONE and not kept.any()
    assert refine_head_neck_labels(np.ones(shape, np.uint8), gate, None, SPACE)[1] == HEAD_NECK_NONE


def test_head_neck_with_a_brain_uses_the_brain_box_and_ignores_the_vertebrae():
    labels = np.ones((1, 1, 2 * 200 + 11), np.uint8)
    gate = BrainGate(voxels=BRAIN_MIN_VOXELS, centroid=(0.0, 0.0, 205.0))
    kept, mode = refine_head_neck_labels(labels, gate, None, SPACE)
    assert mode == HEAD_NECK_BRAIN_BOX and kept.reshape(-1).nonzero()[0][[0, -1]].tolist() == [5, 405]
