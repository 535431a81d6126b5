"""Rib refinement (Online Methods 3.2) on constructed maps: fragments by majority, joints by size and distance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import morphology
from skimage.filters import sato

from cadsflow.assembly.blocks import ASSEMBLY_YAML
from cadsflow.assembly.ribs import (
    RibSettings,
    VesselnessSettings,
    _binary_opening,
    add_costovertebral_joints,
    load_rib_settings,
    refine_ribs,
    relabel_fragments,
    sato_at,
    tubular_map,
)

RIBS = [1, 2, 3]
NO_OPENING = RibSettings(opening_radius=0)  # component sizes are then exactly the candidate boxes' sizes


def test_connected_rib_with_a_minority_segment_of_another_class_takes_the_majority_class():
    labels = np.zeros((12, 3, 3), dtype=np.uint8)
    labels[:, 1, 1] = 1
    labels[4:7, 1, 1] = 2  # 3 of 12 voxels carry the neighbour's class
    out = relabel_fragments(labels, RIBS)
    assert out[:, 1, 1].tolist() == [1] * 12


def test_separate_components_keep_their_own_majority():
    labels = np.zeros((9, 3, 3), dtype=np.uint8)
    labels[0:4, 1, 1] = [1, 1, 2, 1]
    labels[5:9, 1, 1] = [2, 3, 2, 2]
    out = relabel_fragments(labels, RIBS)
    assert out[:, 1, 1].tolist() == [1, 1, 1, 1, 0, 2, 2, 2, 2]


def test_components_touching_only_at_an_edge_are_separate_under_6_connectivity():
    labels = np.zeros((4, 4, 1), dtype=np.uint8)
    labels[0, 0, 0] = labels[1, 0, 0] = 1
    labels[2, 1, 0] = labels[3, 1, 0] = labels[3, 2, 0] = 2  # (1,0) and (2,1) share an edge, not a face
    out = relabel_fragments(labels, RIBS, connectivity=6)
    assert out[:, :, 0].tolist() == labels[:, :, 0].tolist()
    merged = relabel_fragments(labels, RIBS, connectivity=18)
    assert set(np.unique(merged[merged > 0]).tolist()) == {2}


def test_majority_tie_goes_to_the_lower_rib_id():
    labels = np.zeros((4, 1, 1), dtype=np.uint8)
    labels[:, 0, 0] = [3, 3, 2, 2]
    assert relabel_fragments(labels, RIBS)[:, 0, 0].tolist() == [2, 2, 2, 2]


def test_fragment_relabelling_leaves_other_labels_alone():
    labels = np.zeros((5, 1, 1), dtype=np.uint8)
    labels[:, 0, 0] = [1, 9, 2, 2, 1]  # 9 is not a rib: it stays, and it splits the ribs into two components
    out = relabel_fragments(labels, RIBS)
    assert out[:, 0, 0].tolist() == [1, 9, 2, 2, 2]


def joint_scene(gap_end: int, rib_start: int, cross: int = 5):
    """A spine slab at x < 10, a candidate tube x in [10, gap_end) (tubular map), a rib x >= rib_start."""
    shape = (60, cross + 8, cross + 8)
    cs = slice(4, 4 + cross)
    spine = np.zeros(shape, dtype=bool)
    spine[:10, :, :] = True
    tubular = np.zeros(shape, dtype=bool)
    tubular[10:gap_end, cs, cs] = True
    labels = np.zeros(shape, dtype=np.uint8)
    labels[rib_start:50, cs, cs] = 2
    return labels, spine, tubular


def test_joint_component_next_to_a_rib_is_added_to_it():
    labels, spine, tubular = joint_scene(gap_end=15, rib_start=18)  # 5 x 5 x 5 = 125 voxels, 3 voxels from the rib
    out, merges = add_costovertebral_joints(labels, RIBS, spine, tubular, NO_OPENING)
    expected = labels.copy()
    expected[tubular] = 2
    assert np.array_equal(out, expected)
    assert [(m.rib_id, m.n_voxels, m.n_added, m.distance) for m in merges] == [(2, 125, 125, 4.0)]


def test_rib_just_beyond_the_spines_reach_still_counts_for_the_distance():
    # candidates end at x = 19 (10 voxels from the spine); the rib starts 2 voxels further, outside the dilation
    labels, spine, tubular = joint_scene(gap_end=20, rib_start=21)
    _, merges = add_costovertebral_joints(labels, RIBS, spine, tubular, NO_OPENING)
    assert [(m.rib_id, m.distance) for m in merges] == [(2, 2.0)]


def test_joint_component_at_the_merge_distance_is_not_added():
    labels, spine, tubular = joint_scene(gap_end=15, rib_start=20)  # nearest rib voxel 6 voxels away: not < 6
    out, merges = add_costovertebral_joints(labels, RIBS, spine, tubular, NO_OPENING)
    assert merges == () and np.array_equal(out, labels)
    labels, spine, tubular = joint_scene(gap_end=15, rib_start=19)  # 5 voxels away
    out, merges = add_costovertebral_joints(labels, RIBS, spine, tubular, NO_OPENING)
    assert [m.distance for m in merges] == [5.0]


@pytest.mark.parametrize(("gap_end", "cross", "merged"), [
    (14, 5, False),  # 4 x 25 = 100 voxels: not > 100
    (15, 5, True),  # 125
    (20, 12, True),  # 10 x 144 = 1440 < 1500
    (20, 13, False),  # 10 x 169 = 1690: not < 1500
])
def test_joint_components_are_kept_only_between_100_and_1500_voxels(gap_end, cross, merged):
    labels, spine, tubular = joint_scene(gap_end=gap_end, rib_start=gap_end + 1, cross=cross)
    _, merges = add_costovertebral_joints(labels, RIBS, spine, tubular, NO_OPENING)
    assert bool(merges) is merged


def test_tubular_voxels_beyond_the_dilated_spine_or_inside_it_are_never_candidates():
    labels, spine, tubular = joint_scene(gap_end=30, rib_start=35)
    tubular[:10] = True  # tubular inside the spine too
    out, merges = add_costovertebral_joints(labels, RIBS, spine, tubular, NO_OPENING)
    changed = out != labels
    assert changed[:10].sum() == 0  # never the spine
    assert changed[21:].sum() == 0  # never beyond 10 voxels of the spine (x = 20 is exactly 10 away)
    assert merges == ()  # x in [10, 20] is 11 voxels from the rib at x = 35: too far


def test_joint_component_goes_to_the_nearest_rib_and_a_distance_tie_to_the_lower_id():
    labels, spine, tubular = joint_scene(gap_end=15, rib_start=18)
    labels[labels == 2] = 3
    labels[17, 4:9, 4:9] = 2  # rib 2 closer (x = 17) than rib 3 (x = 18)
    _, merges = add_costovertebral_joints(labels, RIBS, spine, tubular, NO_OPENING)
    assert merges[0].rib_id == 2
    labels[17, 4:9, 4:9] = 0
    labels[18, 4:6, 4:9] = 3
    labels[18, 6:9, 4:9] = 1  # both ribs at x = 18
    _, merges = add_costovertebral_joints(labels, RIBS, spine, tubular, NO_OPENING)
    assert merges[0].rib_id == 1


def test_opening_matches_skimage_binary_opening_with_ball():
    rng = np.random.default_rng(1)
    mask = rng.random((20, 18, 16)) > 0.35
    mask[5:15, 4:14, 3:13] = True
    with pytest.warns(FutureWarning):  # deprecated in skimage 0.26, still the authors' call
        expected = morphology.binary_opening(mask, morphology.ball(2))
    assert np.array_equal(_binary_opening(mask, 2), expected)


def test_refine_ribs_without_a_tubular_map_only_relabels_fragments():
    labels, spine, _ = joint_scene(gap_end=15, rib_start=18)
    labels[30:33] = np.where(labels[30:33] == 2, 3, 0)
    result = refine_ribs(labels, RIBS, spine, None)
    assert set(np.unique(result.labels).tolist()) == {0, 2}
    assert result.fragments_relabelled == 3 * 25 and result.joints == ()


def test_tubular_map_marks_a_bright_rod_near_the_spine_and_nothing_outside_the_bone_window():
    ct = np.full((48, 40, 40), 40.0, dtype=np.float32)  # soft tissue
    spine = np.zeros(ct.shape, dtype=bool)
    spine[4:14, 14:26, 14:26] = True
    ct[spine] = 700
    zz, yy = np.mgrid[0:40, 0:40]
    rod = (yy - 20) ** 2 + (zz - 20) ** 2 <= 9  # radius 3 voxels (4.5 mm at 1.5 mm), along x
    ct[14:40, rod] = 400
    tub = tubular_map(ct, spine, 1.5)
    assert tub[14:24, 20, 20].all()  # the rod's axis within the dilation radius (10 voxels) of the spine
    assert not tub[24:].any() and not tub[spine].any()  # where no joint candidate can be, nothing is evaluated
    assert not tub[ct < 150].any()  # soft tissue is outside the bone window


def test_tubular_map_evaluates_only_where_a_joint_candidate_can_be_and_agrees_there_with_the_whole_filter():
    ct = np.full((48, 40, 40), 40.0, dtype=np.float32)
    spine = np.zeros(ct.shape, dtype=bool)
    spine[4:14, 14:26, 14:26] = True
    ct[spine] = 700
    zz, yy = np.mgrid[0:40, 0:40]
    ct[14:40, (yy - 20) ** 2 + (zz - 20) ** 2 <= 9] = 400  # a rod: candidates along it
    ct[14:18, 30, 30] = 400  # a thin line: too thin to survive the opening with ball(2)
    settings = VesselnessSettings(margin_sigmas=100.0)  # a margin covering the volume: no box effect
    tub = tubular_map(ct, spine, 1.5, settings)
    window = np.clip((ct - 150) / 650, 0, 1)
    whole = (sato(window, sigmas=[1, 2, 3], black_ridges=False, mode="reflect") >= 0.02) & (ct >= 150)
    near = ndimage.distance_transform_edt(~spine) <= 10
    possible = _binary_opening(near & ~spine & (ct >= 150), 2)
    assert possible.sum() > 100 and ndimage.label(possible)[1] == 1  # the opened rod: one component, big enough
    assert np.array_equal(tub, whole & possible)
    assert whole[14:18, 30, 30].any() and not tub[14:18, 30, 30].any()


def test_joints_from_the_restricted_tubular_map_equal_those_from_the_whole_volume_filter():
    ct = np.full((48, 44, 44), 40.0, dtype=np.float32)
    spine = np.zeros(ct.shape, dtype=bool)
    spine[4:14, 12:32, 12:32] = True
    ct[spine] = 700
    zz, yy = np.mgrid[0:44, 0:44]
    thick = (yy - 16) ** 2 + (zz - 16) ** 2 <= 9  # a rib (radius 3) whose medial end is missing up to x = 22
    thin = (yy - 28) ** 2 + (zz - 28) ** 2 <= 4  # a thinner one: its opened gap stays under 100 voxels
    ct[14:40, thick] = 400
    ct[14:40, thin] = 400
    labels = np.zeros(ct.shape, dtype=np.uint8)
    labels[22:40, thick] = 2
    labels[22:40, thin] = 3
    settings = VesselnessSettings(margin_sigmas=100.0)
    window = np.clip((ct - 150) / 650, 0, 1)
    whole = (sato(window, sigmas=[1, 2, 3], black_ridges=False, mode="reflect") >= 0.02) & (ct >= 150)
    restricted = tubular_map(ct, spine, 1.5, settings)
    assert restricted.sum() < whole.sum()
    out_whole, merges_whole = add_costovertebral_joints(labels, RIBS, spine, whole)
    out, merges = add_costovertebral_joints(labels, RIBS, spine, restricted)
    assert [m.rib_id for m in merges] == [2] and merges == merges_whole
    assert np.array_equal(out, out_whole)


def test_sato_at_masked_voxels_equals_skimages_sato_there():
    rng = np.random.default_rng(0)
    image = rng.random((20, 18, 16)).astype(np.float32)
    mask = rng.random(image.shape) < 0.3
    expected = sato(image, sigmas=[1, 2, 3], black_ridges=False, mode="reflect")[mask]
    assert np.allclose(sato_at(image, mask, [1, 2, 3]), expected, rtol=1e-6, atol=1e-7)


def test_config_holds_the_authors_joint_constants():
    settings = load_rib_settings(ASSEMBLY_YAML)
    assert (settings.spine_dilation_radius, settings.opening_radius, settings.min_component_voxels,
            settings.max_component_voxels, settings.max_rib_distance, settings.fragment_connectivity) == (
        10, 2, 100, 1500, 6, 6)
    assert settings.group == 555 and settings.spine_group == 552 and settings.tubular_map is None


def test_external_tubular_map_template_must_name_the_volume(tmp_path):
    path = tmp_path / "assembly.yaml"
    path.write_text("ribs:\n  tubular_map: /data/vesselfm/map.nii.gz\n")
    with pytest.raises(ValueError, match="volume_id"):
        load_rib_settings(path)
