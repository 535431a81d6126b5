"""The one-pass connected-component clean-up (clean_components: one bounding-box pass, one multi-label labelling)
gives exactly the label maps of the per-structure version it replaced, kept as the reference
(postprocess.clean_components_per_structure): each structure labelled alone with scipy over the whole volume, hole
filling and hull on the whole volume."""

import numpy as np
import pytest

from cadsflow.pseudolabel.postprocess import (
    CleanupRules,
    clean_components,
    clean_components_per_structure,
)


def noisy_label_map(seed, shape=(40, 36, 44), n_labels=6):
    """Blocks of labels 1..n_labels with speckle of every label scattered over the volume (an untrained model's
    map: many components per label, spread across the volume) and a few closed shells with holes."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    for label in range(1, n_labels + 1):
        lo = rng.integers(0, np.array(shape) - 8)
        hi = lo + rng.integers(4, 16, size=3)
        labels[tuple(slice(a, b) for a, b in zip(lo, hi))] = label
    speckle = rng.random(shape) < 0.08
    labels[speckle] = rng.integers(0, n_labels + 1, size=int(speckle.sum()))
    shell_label = 1 + seed % n_labels
    labels[5:15, 5:15, 5:15] = shell_label
    labels[7:13, 7:13, 7:13] = 1 + (seed + 1) % n_labels  # a hole holding another label
    return labels


RULE_SETS = {
    "min_voxels": CleanupRules(keep_largest={}, min_voxels={1: 4, 2: 30, 3: 2, 5: 100}),
    "keep_largest": CleanupRules(keep_largest={1: 1, 2: 2, 4: 3, 6: 1}, min_voxels={2: 3}),
    "fill_holes_then_others": CleanupRules(keep_largest={1: 1, 3: 1}, min_voxels={2: 5, 4: 5},
                                           fill_holes=frozenset({1, 2})),
    "convex_hull": CleanupRules(keep_largest={2: 1}, min_voxels={3: 5}, convex_hull={2: 1, 3: 1}),
    "6-connectivity": CleanupRules(keep_largest={1: 2, 5: 1}, connectivity=6, min_voxels={3: 3}),
    "18-connectivity": CleanupRules(keep_largest={1: 2, 4: 1}, connectivity=18, min_voxels={6: 3}),
}


@pytest.mark.parametrize("name", sorted(RULE_SETS))
@pytest.mark.parametrize("seed", range(4))
def test_one_pass_cleanup_equals_the_per_structure_cleanup(name, seed):
    labels = noisy_label_map(seed)
    expected = clean_components_per_structure(labels, RULE_SETS[name])
    out = clean_components(labels, RULE_SETS[name])
    assert not np.array_equal(expected, labels)  # the rules did change the map: the comparison means something
    assert np.array_equal(out, expected)


def test_one_pass_cleanup_with_rescaled_minimum_equals_the_per_structure_cleanup():
    labels = noisy_label_map(7)
    rules = RULE_SETS["min_voxels"]
    assert np.array_equal(clean_components(labels, rules, spacing=(0.75, 0.75, 1.0)),
                          clean_components_per_structure(labels, rules, spacing=(0.75, 0.75, 1.0)))


def test_equal_sized_components_at_the_keep_cut_keep_scipys_first_in_raster_order():
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[8:10, 8:10, 8:10] = 3  # 8 voxels, later in raster order
    labels[1:3, 1:3, 1:3] = 3  # 8 voxels, first in raster order
    labels[5, 5, 5] = 3  # 1 voxel
    out = clean_components(labels, CleanupRules(keep_largest={3: 1}))
    assert np.array_equal(out, clean_components_per_structure(labels, CleanupRules(keep_largest={3: 1})))
    assert (out[1:3, 1:3, 1:3] == 3).all() and not out[8:10, 8:10, 8:10].any() and out[5, 5, 5] == 0


def test_a_label_emptied_by_an_earlier_labels_hole_filling_is_left_alone():
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[2:9, 2:9, 2:9] = 1
    labels[4:7, 4:7, 4:7] = 2  # only inside label 1's hole
    rules = CleanupRules(keep_largest={2: 1}, fill_holes=frozenset({1}))
    out = clean_components(labels, rules)
    assert (out[2:9, 2:9, 2:9] == 1).all() and int((out == 2).sum()) == 0
    assert np.array_equal(out, clean_components_per_structure(labels, rules))


def test_no_rules_and_empty_maps_come_back_unchanged():
    labels = noisy_label_map(1)
    assert np.array_equal(clean_components(labels, CleanupRules(keep_largest={})), labels)
    empty = np.zeros((5, 6, 7), dtype=np.uint8)
    assert np.array_equal(clean_components(empty, RULE_SETS["keep_largest"]), empty)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_wise_hole_filling_in_one_call_equals_filling_each_slice(axis):
    """_fill_holes fills the slices across an axis with one 3-D call whose structure stays within a slice: open
    tubes (holes in every slice, none in 3-D), holes in the first and last slices and random masks fill as the
    authors' slice-by-slice 2-D fill does."""
    from scipy import ndimage

    from cadsflow.pseudolabel.postprocess import _in_slice_structure

    rng = np.random.default_rng(axis)
    tube = np.zeros((9, 10, 11), dtype=bool)
    index = [slice(None)] * 3
    index[(axis + 1) % 3], index[(axis + 2) % 3] = slice(2, 7), slice(2, 7)
    tube[tuple(index)] = True
    index[(axis + 1) % 3], index[(axis + 2) % 3] = slice(3, 6), slice(3, 6)
    tube[tuple(index)] = False  # an open tube along `axis`: a hole in every slice, reaching both ends
    for mask in (tube, rng.random((13, 9, 11)) < 0.6, rng.random((5, 14, 7)) < 0.75):
        moved = np.moveaxis(mask, axis, 0)
        per_slice = np.moveaxis(np.stack([ndimage.binary_fill_holes(s) for s in moved]), 0, axis)
        assert np.array_equal(ndimage.binary_fill_holes(mask, structure=_in_slice_structure(axis)), per_slice)
    assert not np.array_equal(ndimage.binary_fill_holes(tube), per_slice_tube := np.moveaxis(
        np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(tube, axis, 0)]), 0, axis))
    assert per_slice_tube.sum() > tube.sum()


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_hole_filling_by_labelling_the_background_equals_scipys_fill(connectivity):
    """fill_holes labels the background once; scipy dilates from the border until nothing changes. Same masks for
    3-D structures and in-slice ones, on random masks of every density, a closed shell and an empty grid."""
    from scipy import ndimage

    from cadsflow.pseudolabel.postprocess import _in_slice_structure, fill_holes

    rng = np.random.default_rng(connectivity)
    shell = np.zeros((12, 12, 12), dtype=bool)
    shell[2:10, 2:10, 2:10] = True
    shell[4:8, 4:8, 4:8] = False
    masks = [shell, np.zeros((4, 5, 6), dtype=bool), np.ones((3, 3, 3), dtype=bool)]
    masks += [rng.random(tuple(rng.integers(1, 16, 3))) < rng.uniform(0.2, 0.9) for _ in range(40)]
    structures = [ndimage.generate_binary_structure(3, connectivity)] + [_in_slice_structure(a) for a in range(3)]
    for mask in masks:
        for structure in structures:
            assert np.array_equal(fill_holes(mask, structure), ndimage.binary_fill_holes(mask, structure=structure))
    assert fill_holes(shell, structures[0]).sum() == 8**3  # the shell's cavity is filled
