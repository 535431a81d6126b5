import numpy as np
from scipy import ndimage

from cadsflow.labels import load_label_space
from cadsflow.phantom import HU, make_grid, make_phantom


def _phantom(region="wholebody", orientation="RAS", seed=7, spacing=(1.5, 1.5, 1.5)):
    grid = make_grid(region, spacing=spacing, orientation=orientation)
    return grid, *make_phantom(grid, seed)


def test_phantom_is_deterministic_for_a_seed_and_differs_between_seeds():
    _, a, _ = _phantom(seed=3)
    _, b, _ = _phantom(seed=3)
    _, c, _ = _phantom(seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_every_phantom_structure_is_a_unified_structure_and_all_nine_groups_appear():
    _, _, masks = _phantom()
    space = load_label_space()
    groups = {space.by_name(name).group for name in masks}  # KeyError if a name is not in the table
    assert groups == set(space.groups)
    assert all(m.any() for m in masks.values())


def test_left_and_right_ribs_touch_their_vertebrae():
    _, _, masks = _phantom()
    for i in range(1, 13):
        for side in ("left", "right"):
            rib = masks[f"rib_{side}_{i}"]
            assert (ndimage.binary_dilation(rib) & masks[f"vertebrae_T{i}"]).any(), (side, i)


def test_tissue_intensities_are_realistic_hounsfield_units():
    _, image, masks = _phantom()
    assert np.median(image[masks["liver"]]) == np.clip(np.median(image[masks["liver"]]), 40, 80)
    lungs = masks["lung_upper_lobe_left"] | masks["lung_lower_lobe_right"]
    assert -950 < np.median(image[lungs]) < -750
    assert np.median(image[masks["vertebrae_L3"]]) > 250
    assert np.median(image[masks["subcutaneous_tissue"]]) < -50
    assert image.min() <= HU["air"] + 30


def test_right_sided_organs_have_larger_world_x_in_both_storage_orders():
    for orientation in ("RAS", "LPS"):
        grid, _, masks = _phantom(orientation=orientation, region="abdomen", spacing=(2.0, 2.0, 3.0))
        def world_x(mask):
            return (grid.affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + grid.affine[:3, 3])[0]
        assert world_x(masks["liver"]) > 0 > world_x(masks["spleen"])
        assert world_x(masks["kidney_right"]) > world_x(masks["kidney_left"])


def test_lps_grid_samples_the_same_anatomy_mirrored_in_storage():
    _, ras, _ = _phantom(orientation="RAS", region="head", seed=1)
    _, lps, _ = _phantom(orientation="LPS", region="head", seed=1)
    assert ras.shape == lps.shape
    assert np.corrcoef(ras[::-1, ::-1, :].ravel(), lps.ravel())[0, 1] > 0.95  # noise differs by position only


def test_shapes_evaluated_on_boxes_equal_the_whole_grid_evaluation():
    """On an axis-aligned grid a shape is evaluated only on the index box its per-axis conditions allow; the masks
    must be exactly those of the whole grid (RAS and LPS grids, shapes inside, crossing the border, outside)."""
    from cadsflow.phantom import _Body

    for orientation in ("RAS", "LPS"):
        grid = make_grid("torso", spacing=(3.0, 3.0, 3.0), orientation=orientation)
        boxed = _Body(grid, np.random.default_rng(0))
        whole = _Body(grid, np.random.default_rng(0))
        whole._axes = None  # the whole-grid path
        assert boxed._axes is not None
        shapes = [
            ("ellipsoid", ((0.0, 0.0, 300.0), (60.0, 40.0, 80.0))),
            ("ellipsoid", ((140.0, -90.0, 30.0), (90.0, 90.0, 90.0))),  # crosses the grid's border
            ("ellipsoid", ((9e3, 0.0, 0.0), (5.0, 5.0, 5.0))),  # outside: empty
            ("cylinder", ((10.0, -20.0), 35.0, (150.0, 420.0))),
            ("cylinder", ((0.0, 0.0), 0.0, (0.0, 900.0), (200.0, 120.0))),
            ("box", ((-50.0, -60.0, 200.0), (40.0, 10.0, 500.0))),
            ("tube", (np.array([[0.0, -70.0, 200.0], [60.0, -20.0, 230.0], [90.0, 30.0, 260.0]]), 6.0)),
        ]
        for name, args in shapes:
            got, expected = getattr(boxed, name)(*args), getattr(whole, name)(*args)
            assert got.shape == grid.shape and np.array_equal(got, expected), (orientation, name)
        assert boxed.ellipsoid(*shapes[0][1]).any() and not boxed.ellipsoid(*shapes[2][1]).any()
