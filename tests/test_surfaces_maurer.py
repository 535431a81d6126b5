"""Surface distances by SimpleITK's Maurer transform (cadsflow.evaluation.surfaces, method "maurer") against scipy's
(method "edt", the reference method): bit for bit where maurer_is_exact holds, within the documented float32 bound
elsewhere; known answers; the cases that trip the filter (the target filling the whole grid)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from cadsflow.evaluation import surfaces
from cadsflow.evaluation.surfaces import maurer_is_exact, robust_hausdorff, surface_distances

FIELDS = ("distances_ref_to_pred", "distances_pred_to_ref", "areas_ref", "areas_pred")


def _cube(shape, lo, size) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, a + size) for a in lo)] = True
    return mask


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def _speckle(shape, seed, fraction=0.01) -> np.ndarray:
    """Scattered single voxels, as a poor pseudo-label has them: many surfaces far from the other mask."""
    return np.random.default_rng(seed).random(shape) < fraction


SHAPE = (36, 32, 28)
CASES = {
    "cube_shifted_by_3": (_cube(SHAPE, (5, 5, 5), 12), _cube(SHAPE, (8, 5, 5), 12)),
    "spheres_apart": (_ellipsoid(SHAPE, (9, 9, 9), (6, 5, 4)), _ellipsoid(SHAPE, (26, 22, 18), (7, 6, 5))),
    "speckle_vs_sphere": (_speckle(SHAPE, 1), _ellipsoid(SHAPE, (18, 16, 14), (8, 8, 8))),
    "cube_vs_one_far_voxel": (_cube(SHAPE, (2, 2, 2), 6), _cube(SHAPE, (33, 30, 25), 1)),
}
EXACT_SPACINGS = [(1.5, 1.5, 1.5), (1.0, 1.0, 1.0), (1.5, 1.5, 2.0), (2.5, 0.75, 0.75), (2.0, 1.0, 0.5)]
INEXACT_SPACINGS = [(1.5, 0.8, 0.8), (2.5, 0.7, 0.7), (0.7, 0.9, 3.0), (1.2, 1.2, 1.5)]


def _float32_bound(shape) -> float:
    """maurer_is_exact's relative bound for other spacings: (2 * max_k N_k + 5) * 2^-24, N_k corners along axis k."""
    return (2 * (max(shape) + 1) + 5) * 2.0**-24


@pytest.mark.parametrize("spacing", EXACT_SPACINGS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_maurer_equals_the_distance_transform_bit_for_bit_where_exact(case, spacing):
    ref, pred = CASES[case]
    assert maurer_is_exact(ref.shape, spacing)
    ours = surface_distances(ref, pred, spacing, method="maurer")
    theirs = surface_distances(ref, pred, spacing, method="edt")
    for field in FIELDS:
        assert np.array_equal(getattr(ours, field), getattr(theirs, field)), field


@pytest.mark.parametrize("spacing", INEXACT_SPACINGS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_maurer_is_within_the_float32_bound_elsewhere(case, spacing):
    # Not the float32 rounding of the squared distance (~6e-8): the filter rounds every voxel position i * s_k to
    # float32 before subtracting, so the error grows with the grid: up to 2.6e-6 on these 37-corner grids (speckle
    # at (0.7, 0.9, 3.0) and (1.2, 1.2, 1.5) mm), above 1e-6, below the bound's 4.7e-6.
    ref, pred = CASES[case]
    assert not maurer_is_exact(ref.shape, spacing)
    ours = surface_distances(ref, pred, spacing, method="maurer")
    theirs = surface_distances(ref, pred, spacing, method="edt")
    for field in ("areas_ref", "areas_pred"):  # the same surfels; near-equal distances may sort them otherwise
        assert np.array_equal(np.sort(getattr(ours, field)), np.sort(getattr(theirs, field))), field
    for field in ("distances_ref_to_pred", "distances_pred_to_ref"):  # sorted: elementwise within the bound too
        np.testing.assert_allclose(getattr(ours, field), getattr(theirs, field), rtol=_float32_bound(ref.shape), atol=0)


@pytest.mark.parametrize("spacing", EXACT_SPACINGS)
def test_maurer_gives_the_known_distances_of_two_voxels(spacing):
    # Voxels (5, 5, 5) and (8, 9, 5): their nearest corners lie (2, 3, 0) voxels apart, their farthest surface
    # corners (3, 4, 0) from the other's nearest; both voxels' 8 corners are surface corners.
    ref = _cube(SHAPE, (5, 5, 5), 1)
    pred = _cube(SHAPE, (8, 9, 5), 1)
    sd = surface_distances(ref, pred, spacing, method="maurer")
    s = np.asarray(spacing)
    nearest = math.sqrt(float(np.sum((np.array([2, 3, 0]) * s) ** 2)))
    farthest = math.sqrt(float(np.sum((np.array([3, 4, 0]) * s) ** 2)))
    for distances in (sd.distances_ref_to_pred, sd.distances_pred_to_ref):
        assert len(distances) == 8
        assert distances[0] == nearest
        assert distances[-1] == farthest
    assert robust_hausdorff(sd, 100) == farthest


@pytest.mark.parametrize("spacing", INEXACT_SPACINGS)
def test_maurer_gives_the_known_shift_within_the_float32_bound(spacing):
    # A cube shifted by 3 voxels along axis 1: HD100 is 3 * s_1 (edt exactly as scipy forms it, maurer within bound).
    ref, pred = _cube(SHAPE, (5, 5, 5), 12), _cube(SHAPE, (5, 8, 5), 12)
    hd_edt = robust_hausdorff(surface_distances(ref, pred, spacing, method="edt"), 100)
    hd_maurer = robust_hausdorff(surface_distances(ref, pred, spacing, method="maurer"), 100)
    assert hd_edt == math.sqrt((3 * spacing[1]) ** 2)
    assert hd_maurer == pytest.approx(hd_edt, rel=_float32_bound(SHAPE), abs=0)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 3)])
def test_maurer_gives_zero_where_the_target_fills_the_whole_corner_grid(shape):
    # Every corner of a grid one voxel thick is a surface corner: the filter finds no contour and leaves FLT_MAX.
    mask = np.ones(shape, dtype=bool)
    sd = surface_distances(mask, mask, (1.5, 1.5, 1.5), method="maurer")
    assert len(sd.distances_ref_to_pred) == math.prod(n + 1 for n in shape)
    assert not sd.distances_ref_to_pred.any() and not sd.distances_pred_to_ref.any()
    assert not np.signbit(sd.distances_ref_to_pred).any()  # +0.0, not the filter's -0.0


def test_maurer_handles_empty_masks_as_the_other_methods():
    ref = _cube(SHAPE, (5, 5, 5), 4)
    empty = np.zeros(SHAPE, dtype=bool)
    for a, b in ((ref, empty), (empty, ref), (empty, empty)):
        ours = surface_distances(a, b, (1.5, 1.5, 1.5), method="maurer")
        theirs = surface_distances(a, b, (1.5, 1.5, 1.5), method="edt")
        for field in FIELDS:
            assert np.array_equal(getattr(ours, field), getattr(theirs, field)), field


def test_maurer_sets_its_threads_on_the_filter_not_globally(monkeypatch):
    ref, pred = CASES["speckle_vs_sphere"]
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    one = surface_distances(ref, pred, (1.5, 1.5, 2.0), method="maurer")
    monkeypatch.setattr(surfaces, "MAURER_THREADS", 2)
    two = surface_distances(ref, pred, (1.5, 1.5, 2.0), method="maurer")
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
    for field in FIELDS:
        assert np.array_equal(getattr(one, field), getattr(two, field)), field


def test_maurer_is_exact_for_short_binary_spacings_and_moderate_grids():
    assert maurer_is_exact((500, 500, 500), (1.5, 1.5, 1.5))  # 9 * 3 * 500^2 = 6.75M < 2^24
    assert not maurer_is_exact((800, 800, 800), (1.5, 1.5, 1.5))  # 17.3M: squared distances may exceed 2^24 units
    assert maurer_is_exact((300, 300, 100), (0.75, 0.75, 2.5))
    for spacing in INEXACT_SPACINGS:
        assert not maurer_is_exact((10, 10, 10), spacing)
    with pytest.raises(ValueError):
        maurer_is_exact((10, 10), (1.5, 1.5, 1.5))


def test_unknown_method_names_maurer_among_the_choices():
    mask = _cube(SHAPE, (5, 5, 5), 4)
    with pytest.raises(ValueError, match="'maurer'"):
        surface_distances(mask, mask, (1.5, 1.5, 1.5), method="fmm")
