import numpy as np
import pytest
from scipy import ndimage

from cadsflow.resample import output_shape, resample


def test_linear_and_cubic_reproduce_a_linear_ramp_exactly_inside_the_grid():
    ramp = np.broadcast_to(np.arange(20, dtype=np.float32)[:, None, None] * 3.0, (20, 4, 4)).copy()
    for kind in ("linear", "cubic"):
        out = resample(ramp, [0.6, 1.0, 1.0], (30, 4, 4), kind)
        x = np.arange(30) * 0.6
        inside = (x >= 1) & (x <= 17)  # cubic needs two neighbours each side before edge clamping
        np.testing.assert_allclose(out[inside, 0, 0], 3.0 * x[inside], atol=1e-4)


def test_cubic_interpolates_samples_at_integer_positions():
    data = np.random.default_rng(0).normal(size=(9, 8, 7)).astype(np.float32)
    out = resample(data, [1.0, 1.0, 1.0], data.shape, "cubic")
    np.testing.assert_allclose(out, data, atol=1e-5)


def test_nearest_never_invents_label_values():
    labels = np.random.default_rng(1).integers(0, 5, size=(13, 11, 9)).astype(np.uint8)
    out = resample(labels, [0.37, 0.81, 1.9], (35, 14, 5), "nearest")
    assert out.dtype == np.uint8 and set(np.unique(out)) <= set(np.unique(labels))


def test_upsampling_by_two_then_nearest_down_recovers_labels_exactly():
    labels = np.random.default_rng(2).integers(0, 9, size=(6, 7, 8)).astype(np.uint8)
    up = resample(labels, [0.5, 0.5, 0.5], (12, 14, 16), "nearest")
    back = resample(up, [2.0, 2.0, 2.0], labels.shape, "nearest")
    np.testing.assert_array_equal(back, labels)


def test_cubic_agrees_with_scipy_zoom_order3_on_smooth_data():
    g = np.indices((24, 24, 24)).astype(np.float32)
    smooth = np.sin(g[0] / 5.0) * np.cos(g[1] / 7.0) + g[2] / 10.0
    ours = resample(smooth, [0.5, 0.5, 0.5], (47, 47, 47), "cubic")
    coords = np.indices((47, 47, 47)).astype(np.float32) * 0.5
    ref = ndimage.map_coordinates(smooth, coords, order=3, mode="nearest")
    inner = (slice(4, -4),) * 3
    assert np.abs(ours[inner] - ref[inner]).max() < 0.01


def test_output_shape_keeps_field_of_view():
    assert output_shape((512, 512, 400), (0.8, 0.8, 1.25), 1.5) == (273, 273, 333)


def test_unknown_interpolation_is_rejected():
    with pytest.raises(ValueError, match="unknown interpolation"):
        resample(np.zeros((2, 2, 2)), [1, 1, 1], (2, 2, 2), "quintic")
