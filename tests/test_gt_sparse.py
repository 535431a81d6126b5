"""SAROS-style sparse slices made dense by shape-based interpolation (known dense truth)."""

import numpy as np
import pytest

from cadsflow.gt.phantoms import BODY_CLASSES, body_phantom, sparsify
from cadsflow.gt.sparse import SAROS_SLICE_STEP, densify_sparse_labels, interpolate_gap, nearest_slice_fill

UNANNOTATED = 255


def _dice(a, b, c):
    a, b = a == c, b == c
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def phantom():
    truth = body_phantom((64, 56, 81))  # 81 slices: keys 0, 5, ..., 80 cover the whole volume
    sparse = sparsify(truth, SAROS_SLICE_STEP, UNANNOTATED)
    return truth, sparse, densify_sparse_labels(sparse, UNANNOTATED).labels, nearest_slice_fill(sparse, UNANNOTATED)


def test_shape_based_interpolation_recovers_every_class_of_the_dense_truth(phantom):
    truth, _, dense, _ = phantom
    for name, c in BODY_CLASSES.items():
        assert _dice(dense, truth, c) > 0.93, name


def test_shape_based_interpolation_beats_nearest_slice_copying(phantom):
    truth, _, dense, nearest = phantom
    shape_based = np.mean([_dice(dense, truth, c) for c in BODY_CLASSES.values()])
    copied = np.mean([_dice(nearest, truth, c) for c in BODY_CLASSES.values()])
    assert shape_based > copied


def test_annotated_slices_are_kept_exactly(phantom):
    truth, _, dense, _ = phantom
    assert np.array_equal(dense[:, :, ::SAROS_SLICE_STEP], truth[:, :, ::SAROS_SLICE_STEP])


def test_slices_beyond_the_first_and_last_annotated_slice_stay_unannotated():
    truth = body_phantom((32, 28, 30))
    sparse = sparsify(truth, 5, UNANNOTATED, offset=3)  # keys 3, 8, ..., 28
    dense = densify_sparse_labels(sparse, UNANNOTATED).labels
    assert (dense[:, :, :3] == UNANNOTATED).all() and (dense[:, :, 29:] == UNANNOTATED).all()
    assert not (dense[:, :, 3:29] == UNANNOTATED).any()


def test_a_disc_growing_between_key_slices_has_the_mean_radius_half_way():
    y, x = np.mgrid[0:101, 0:101]
    disc = lambda r: ((x - 50) ** 2 + (y - 50) ** 2 <= r * r).astype(np.uint8)  # noqa: E731
    middle = interpolate_gap(disc(10), disc(30), n_between=1, spacing=(1.0, 1.0))[0]
    assert middle.sum() == pytest.approx(np.pi * 20**2, rel=0.03)


def test_a_structure_missing_on_one_key_slice_keeps_its_section_to_half_way_then_ends():
    y, x = np.mgrid[0:61, 0:61]
    disc = ((x - 30) ** 2 + (y - 30) ** 2 <= 15**2).astype(np.uint8)
    gap = interpolate_gap(np.zeros_like(disc), disc, n_between=4, spacing=(1.0, 1.0))  # t = 0.2, 0.4, 0.6, 0.8
    assert [int(s.sum()) for s in gap] == [0, 0, disc.sum(), disc.sum()]


def test_a_thin_piece_that_moved_beyond_its_width_is_not_erased_in_the_gap():
    rib0 = np.zeros((40, 40), np.uint8)
    rib1 = np.zeros((40, 40), np.uint8)
    rib0[10:12, 5:30] = 1  # a 2-voxel-thin structure ...
    rib1[16:18, 5:30] = 1  # ... 6 voxels away on the next key slice: blending the two would leave nothing
    gap = interpolate_gap(rib0, rib1, n_between=4, spacing=(1.0, 1.0))
    assert all(s.sum() == rib0.sum() for s in gap)


def test_background_does_not_outvote_a_thin_ring_when_the_body_narrows():
    y, x = np.mgrid[0:81, 0:81]
    r = np.hypot(x - 40, y - 40)
    wide = np.where(r < 36, 2, 0).astype(np.uint8)
    wide[(r >= 34) & (r < 36)] = 1  # a 2-voxel ring around a wide body ...
    narrow = np.where(r < 10, 2, 0).astype(np.uint8)  # ... that ends where the body narrows (neck)
    first = interpolate_gap(wide, narrow, n_between=5, spacing=(1.0, 1.0))[0]  # t = 1/6
    assert (first == 1).sum() == (wide == 1).sum()


def test_runs_of_annotated_slices_as_on_the_resampled_grid_are_interpolated_between_runs():
    truth = body_phantom((40, 36, 60))
    sparse = sparsify(truth, 17, UNANNOTATED, run=3)  # a 5 mm source slice seen as 3 slices at 1.5 mm
    result = densify_sparse_labels(sparse, UNANNOTATED)
    assert result.filled_slices == 3 * 14 and np.array_equal(result.labels[:, :, :3], truth[:, :, :3])
