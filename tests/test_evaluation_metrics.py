"""Agreement battery: cadsflow's Dice, NSD (3 mm), HD and HD95 equal DeepMind's surface-distance (the reference
of Online Methods 5.1) on constructed shapes, for every distance method and for whole label maps."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

surface_distance = pytest.importorskip("surface_distance", reason="surface-distance is the reference (test extra)")

from cadsflow.evaluation.metrics import (  # noqa: E402
    bounding_box_diagonal_mm,
    remap_to_classes,
    score_label_maps,
    score_masks,
)
from cadsflow.evaluation.surfaces import (  # noqa: E402
    maurer_is_exact,
    neighbour_codes,
    robust_hausdorff,
    surface_dice,
    surface_distances,
    surfel_area_table,
)

# surface-distance 0.1 still uses np.Inf / np.NaN (removed in NumPy 2): it raises AttributeError whenever a mask
# is empty. Restore the aliases for the reference, in this test module only.
np.Inf = np.inf  # type: ignore[attr-defined]
np.NaN = np.nan  # type: ignore[attr-defined]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the reference's scipy.ndimage.* imports

TOLERANCE = 1e-6
METRICS = ("dice", "nsd", "hd", "hd95")


def reference_scores(ref: np.ndarray, pred: np.ndarray, spacing) -> dict[str, float]:
    sd = surface_distance
    dists = sd.compute_surface_distances(ref, pred, spacing)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "dice": float(sd.compute_dice_coefficient(ref, pred)),
            "nsd": float(sd.compute_surface_dice_at_tolerance(dists, 3)),
            "hd": float(sd.compute_robust_hausdorff(dists, 100)),
            "hd95": float(sd.compute_robust_hausdorff(dists, 95)),
        }


def assert_same(ours: dict, theirs: dict, context="") -> None:
    for metric in METRICS:
        a, b = float(ours[metric]), float(theirs[metric])
        if math.isnan(b) or math.isinf(b):
            assert (math.isnan(a) and math.isnan(b)) or a == b, f"{context} {metric}: ours {a}, reference {b}"
        else:
            assert abs(a - b) <= TOLERANCE, f"{context} {metric}: ours {a}, reference {b}"


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def tube(shape, start, end, radius) -> np.ndarray:
    """Voxels within `radius` of the segment start-end."""
    p = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    a, b = np.asarray(start, float), np.asarray(end, float)
    t = np.clip(((p - a) @ (b - a)) / np.dot(b - a, b - a), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1) <= radius


def blob(shape, seed, level=0.55) -> np.ndarray:
    noise = np.random.default_rng(seed).random(shape)
    return ndimage.gaussian_filter(noise, 1.5) > np.quantile(ndimage.gaussian_filter(noise, 1.5), level)


def single_voxel(shape, at) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[at] = True
    return m


SHAPE = (36, 32, 28)
BATTERY = {
    "identical_spheres": (ellipsoid(SHAPE, (18, 16, 14), (8, 8, 8)), ellipsoid(SHAPE, (18, 16, 14), (8, 8, 8)), (1.5,) * 3),
    "sphere_shifted_by_2": (ellipsoid(SHAPE, (18, 16, 14), (8, 8, 8)), ellipsoid(SHAPE, (20, 16, 14), (8, 8, 8)), (1.5,) * 3),
    "sphere_scaled": (ellipsoid(SHAPE, (18, 16, 14), (10, 10, 10)), ellipsoid(SHAPE, (18, 16, 14), (7, 7, 7)), (1.0,) * 3),
    "ellipsoids_anisotropic": (ellipsoid(SHAPE, (17, 15, 13), (10, 6, 4)), ellipsoid(SHAPE, (18, 16, 13), (9, 7, 5)), (0.7, 0.9, 3.0)),
    "thin_plates": (np.pad(np.ones((20, 20, 1), bool), ((8, 8), (6, 6), (10, 17))),
                    np.pad(np.ones((20, 20, 1), bool), ((8, 8), (6, 6), (12, 15))), (1.2, 1.2, 1.5)),
    "tubes": (tube(SHAPE, (4, 4, 4), (30, 26, 22), 2.0), tube(SHAPE, (5, 4, 4), (31, 27, 22), 2.6), (1.5, 1.5, 2.0)),
    "one_voxel_objects_apart": (single_voxel(SHAPE, (5, 5, 5)), single_voxel(SHAPE, (9, 12, 20)), (1.5, 1.0, 2.5)),
    "one_voxel_objects_same": (single_voxel(SHAPE, (5, 5, 5)), single_voxel(SHAPE, (5, 5, 5)), (1.5,) * 3),
    "touching_the_border": (np.pad(np.ones((20, 32, 28), bool), ((0, 16), (0, 0), (0, 0))),
                            np.pad(np.ones((22, 30, 28), bool), ((0, 14), (0, 2), (0, 0))), (1.5,) * 3),
    "filling_the_grid": (np.ones(SHAPE, bool), ellipsoid(SHAPE, (18, 16, 14), (17, 15, 13)), (1.5,) * 3),
    "random_blobs": (blob(SHAPE, 1), blob(SHAPE, 2), (0.8, 0.8, 1.25)),
    "far_apart_beyond_local_search": (ellipsoid(SHAPE, (6, 6, 6), (3, 3, 3)), ellipsoid(SHAPE, (28, 25, 21), (4, 3, 3)), (1.5,) * 3),
    "distance_exactly_at_tolerance": (ellipsoid(SHAPE, (16, 16, 14), (6, 6, 6)), ellipsoid(SHAPE, (18, 16, 14), (6, 6, 6)), (1.5,) * 3),
    "reference_empty": (np.zeros(SHAPE, bool), ellipsoid(SHAPE, (18, 16, 14), (5, 5, 5)), (1.5,) * 3),
    "prediction_empty": (ellipsoid(SHAPE, (18, 16, 14), (5, 5, 5)), np.zeros(SHAPE, bool), (1.5,) * 3),
    "both_empty": (np.zeros(SHAPE, bool), np.zeros(SHAPE, bool), (1.5,) * 3),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BATTERY))
def test_masks_score_like_the_reference_on_the_battery(case):
    ref, pred, spacing = BATTERY[case]
    assert_same(score_masks(ref, pred, spacing).as_dict(), reference_scores(ref, pred, spacing), case)


@pytest.mark.parametrize("method", ["local", "kdtree", "edt"])
@pytest.mark.parametrize("case", ["sphere_shifted_by_2", "ellipsoids_anisotropic", "tubes", "random_blobs",
                                  "far_apart_beyond_local_search", "touching_the_border"])  # fmt: skip
def test_every_distance_method_gives_the_reference_surfels_bit_for_bit(case, method):
    ref, pred, spacing = BATTERY[case]
    theirs = surface_distance.compute_surface_distances(ref, pred, spacing)
    ours = surface_distances(ref, pred, spacing, method=method)
    assert np.array_equal(ours.distances_ref_to_pred, theirs["distances_gt_to_pred"])
    assert np.array_equal(ours.distances_pred_to_ref, theirs["distances_pred_to_gt"])
    assert np.array_equal(ours.areas_ref, theirs["surfel_areas_gt"])
    assert np.array_equal(ours.areas_pred, theirs["surfel_areas_pred"])


@pytest.mark.parametrize("case", ["sphere_shifted_by_2", "tubes", "one_voxel_objects_apart",
                                  "far_apart_beyond_local_search", "touching_the_border"])  # fmt: skip
def test_maurer_transform_gives_the_reference_surfels_bit_for_bit_at_exact_spacings(case):
    # SimpleITK's Maurer transform computes in float32: exact (and so the reference's values) where maurer_is_exact
    # holds, e.g. 1.5 mm, (1.5, 1.5, 2.0) or (1.5, 1.0, 2.5) mm; tests/test_surfaces_maurer.py covers the rest.
    ref, pred, spacing = BATTERY[case]
    assert maurer_is_exact(ref.shape, spacing)
    theirs = surface_distance.compute_surface_distances(ref, pred, spacing)
    ours = surface_distances(ref, pred, spacing, method="maurer")
    assert np.array_equal(ours.distances_ref_to_pred, theirs["distances_gt_to_pred"])
    assert np.array_equal(ours.distances_pred_to_ref, theirs["distances_pred_to_gt"])
    assert np.array_equal(ours.areas_ref, theirs["surfel_areas_gt"])
    assert np.array_equal(ours.areas_pred, theirs["surfel_areas_pred"])


def test_surfel_area_table_equals_the_reference_table_for_anisotropic_spacing():
    from surface_distance.lookup_tables import create_table_neighbour_code_to_surface_area

    spacing = (0.7, 1.3, 2.9)
    assert np.array_equal(surfel_area_table(spacing), create_table_neighbour_code_to_surface_area(spacing))


def test_neighbour_codes_equal_the_reference_correlation_with_its_kernel():
    from surface_distance.lookup_tables import ENCODE_NEIGHBOURHOOD_3D_KERNEL

    mask = blob((11, 9, 7), 3)
    padded = np.zeros((12, 10, 8), np.uint8)
    padded[:-1, :-1, :-1] = mask
    expected = ndimage.correlate(padded, ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant", cval=0)
    assert np.array_equal(neighbour_codes(mask), expected)


def test_label_map_scores_equal_the_reference_run_structure_by_structure_on_the_full_grid():
    shape = (48, 40, 36)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[ellipsoid(shape, (14, 12, 10), (8, 7, 6))] = 1
    pred[ellipsoid(shape, (15, 12, 10), (8, 6, 6))] = 1
    ref[tube(shape, (30, 5, 5), (30, 35, 30), 2.0)] = 2
    pred[tube(shape, (31, 5, 5), (30, 35, 31), 2.0)] = 2
    ref[40:48, 30:40, 26:36] = 3  # touches the border
    pred[41:48, 30:40, 27:36] = 3
    ref[5, 35, 30] = 4  # one voxel, missed by the prediction
    pred[blob(shape, 5) & (ref == 0) & (np.arange(shape[0])[:, None, None] > 44)] = 5  # false positive only
    spacing = (0.9, 1.1, 2.0)
    ours = score_label_maps(ref, pred, spacing, {f"s{k}": k for k in range(1, 7)})
    for k in range(1, 7):
        theirs = reference_scores(ref == k, pred == k, spacing)
        assert_same(ours[f"s{k}"].as_dict(), theirs, f"label {k}")


def test_merged_classes_are_scored_like_the_reference_on_the_merged_masks():
    shape = (40, 30, 24)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[ellipsoid(shape, (10, 15, 12), (6, 5, 5))] = 7  # source: one "kidneys" class
    ref[ellipsoid(shape, (30, 15, 12), (6, 5, 5))] = 7
    ref[ellipsoid(shape, (30, 15, 12), (2, 2, 2))] = 8  # lesion inside, merged into the organ
    pred[ellipsoid(shape, (11, 15, 12), (6, 5, 5))] = 2  # model: kidney_right, kidney_left
    pred[ellipsoid(shape, (30, 16, 12), (5, 5, 5))] = 3
    ours = score_label_maps(ref, pred, (1.5,) * 3, {"kidneys": ([7, 8], [2, 3])})["kidneys"]
    theirs = reference_scores(np.isin(ref, [7, 8]), np.isin(pred, [2, 3]), (1.5,) * 3)
    assert_same(ours.as_dict(), theirs)


def test_voxel_counts_of_a_label_map_score_are_the_structures_volumes():
    shape = (20, 20, 20)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels
    pred[3:6, 2:6, 2:6] = 1  # 48 voxels, all inside the reference
    scores = score_label_maps(ref, pred, (1.0,) * 3, {"cube": 1})["cube"]
    assert (scores.ref_voxels, scores.pred_voxels, scores.intersection_voxels) == (64, 48, 48)


def test_class_remapping_rejects_a_value_claimed_by_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        remap_to_classes(np.zeros((2, 2, 2), np.uint8), [(1, 2), (2,)])


def test_bounding_box_diagonal_is_the_image_extent_in_mm():
    assert bounding_box_diagonal_mm((100, 200, 20), (1.0, 0.5, 5.0)) == pytest.approx(math.sqrt(3 * 100**2))


def test_hd_and_nsd_of_a_known_shift_are_the_shift_in_mm():
    """A 2-voxel shift at 1.5 mm moves the surface by 3 mm: HD = 3 mm and everything lies within tolerance."""
    ref, pred, spacing = BATTERY["distance_exactly_at_tolerance"]
    sd = surface_distances(ref, pred, spacing)
    assert (robust_hausdorff(sd, 100), surface_dice(sd, 3.0)) == (3.0, 1.0)


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (0.9, 1.1, 2.0)])
def test_a_speckled_prediction_is_scored_by_a_distance_transform_with_the_references_values(spacing):
    """Far-off speckle (a poor model's prediction) makes the local search dear: the scores come from a distance
    transform of the crop (Maurer at an exact spacing, scipy's elsewhere), with the reference's values."""
    from cadsflow.evaluation.surfaces import distance_method

    rng = np.random.default_rng(4)
    ref = ellipsoid(SHAPE, (16, 16, 14), (6, 6, 5))
    pred = ellipsoid(SHAPE, (17, 16, 14), (6, 5, 5))
    pred[tuple(rng.integers(0, n, 400) for n in SHAPE)] = True
    expected = "maurer" if maurer_is_exact(ref.shape, spacing) else "edt"
    assert distance_method(ref, pred, spacing) == expected
    assert distance_method(ref, ellipsoid(SHAPE, (17, 16, 14), (6, 5, 5)), spacing) == "local"  # close surfaces
    assert_same(score_masks(ref, pred, spacing).as_dict(), reference_scores(ref, pred, spacing), "speckle")
